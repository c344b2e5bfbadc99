"""The `phonemekit` console script: one entry point, one subcommand per step.

Every subcommand has `--help`. Errors from bad input, missing weights or bad
config print one line and exit non-zero.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from phonemekit.console import console, progress_bar, setup_logging
from phonemekit.errors import PhonemekitError
from phonemekit.models.presets import DEMO_MODELS

log = logging.getLogger("phonemekit")

app = typer.Typer(
    help="Recognise single speech sounds spoken by young children: prepare data, train, evaluate, export, classify live.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    setup_logging(verbose)


def command(*args, **kwargs):
    """Register a subcommand whose typed errors become one clear line."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except PhonemekitError as e:
                console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # a message is text, not markup
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                console.print("[yellow]interrupted[/]")
                raise typer.Exit(130) from None

        return app.command(*args, **kwargs)(wrapper)

    return deco


# ---------------------------------------------------------------- data


@command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="Output folder; clips go to OUT/recordings.")] = Path("runs/demo/corpus"),
    speakers: Annotated[int, typer.Option(min=3, max=18, help="Number of synthetic speakers.")] = 18,
    takes: Annotated[int, typer.Option(min=1, max=12, help="Takes per speaker and sound.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed for prosody jitter and augmentation.")] = 0,
    channel: Annotated[str, typer.Option(help="room: simulated rooms and microphones on top of noise/telephone/speed; plain: those three only.")] = "room",
    voices: Annotated[str, typer.Option(help="espeak: eSpeak's variants as rendered; varied: each speaker's own vocal-tract scale, jittered per take.")] = "espeak",
) -> None:
    """Synthesise the built-in demo corpus with eSpeak NG (offline)."""
    from phonemekit.data.demo import build_demo_corpus

    t0 = time.perf_counter()
    with progress_bar() as p:
        summary = build_demo_corpus(out, speakers=speakers, takes=takes, seed=seed, channel=channel, voices=voices, progress=p)
    log.info(
        "demo corpus: %d clips, %d speakers x %d sounds, %.0f s of audio in %.1f s -> %s",
        summary["clips"], summary["speakers"], summary["labels"], summary["audio_seconds"], time.perf_counter() - t0, summary["root"],
    )


@command()
def prepare(
    root: Annotated[Path, typer.Argument(help="Data root laid out as ROOT/<speaker>/<label>/*.wav|flac|ogg")],
    out: Annotated[Path, typer.Option(help="Where manifest.jsonl, labels.json and rejected.jsonl go.")],
    strict: Annotated[bool, typer.Option(help="Fail on the first bad file instead of skipping it.")] = False,
    labels: Annotated[Optional[Path], typer.Option(help="JSON list of allowed labels; other label folders are rejected.")] = None,
    speakers: Annotated[Optional[Path], typer.Option(help="JSON {speaker: group} (e.g. child/adult); default ROOT/speakers.json or beside ROOT.")] = None,
    max_seconds: Annotated[float, typer.Option(help="Reject clips longer than this.")] = 10.0,
    duplicates: Annotated[str, typer.Option(help="The same audio under several paths: keep-first | reject-all.")] = "keep-first",
) -> None:
    """Validate a recordings folder and write its manifest."""
    from phonemekit.config import AudioConfig
    from phonemekit.data.manifest import prepare as run_prepare
    from phonemekit.data.manifest import read_label_list

    allowed = read_label_list(labels) if labels else None
    with progress_bar() as p:
        s = run_prepare(root, out, audio_cfg=AudioConfig(max_seconds=max_seconds), strict=strict, labels=allowed, speakers_file=speakers,
                        duplicates=duplicates, progress=p)
    _print_counts(s)
    log.info("%d clips kept, %d rejected%s -> %s", s["clips"], s["rejected"], "" if s["changed"] else " (unchanged, nothing rewritten)", out)
    if s["rejected"]:
        log.warning("rejected by reason: %s (details in %s)", s["reasons"], out / "rejected.jsonl")
    if s["few_clips"]:
        log.warning("classes with fewer than 5 clips: %s", ", ".join(s["few_clips"]))
    for label, missing in s["missing_speakers"].items():
        log.warning("label %s has no clips from: %s", label, ", ".join(missing))


def _print_counts(s: dict) -> None:
    table = Table(title=f"clips per label ({s['clips']} clips, {len(s['speakers'])} speakers, {s['seconds']} s)")
    for col in ("label", "clips", "speakers", "min/speaker", "max/speaker"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for label in s["labels"]:
        per = [s["counts"].get(f"{spk}\t{label}", 0) for spk in s["speakers"]]
        table.add_row(label, str(sum(per)), str(sum(1 for n in per if n)), str(min(per)), str(max(per)))
    console.print(table)


@command()
def encoders() -> None:
    """List the registered encoder families."""
    from phonemekit.models.encoders import available_encoders

    for name, desc in available_encoders().items():
        typer.echo(f"{name:10s} {desc}")


@command()
def extract(
    manifest: Annotated[Path, typer.Option(help="manifest.jsonl (or its folder) from `prepare`.")],
    encoder: Annotated[str, typer.Option(help="Encoder family (see `phonemekit encoders`).")] = "wav2vec2",
    source: Annotated[Optional[str], typer.Option(help="Hub id, local folder, or random:tiny|small|base. Default: the family's hub id.")] = None,
    layer: Annotated[str, typer.Option(help="Hidden layer to cache (negative counts from the top), or 'weighted' for all layers.")] = "-1",
    out: Annotated[Path, typer.Option(help="Cache folder.")] = Path("cache"),
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda")] = "auto",
    engine: Annotated[str, typer.Option(help="Where features are extracted: local | ray (needs phonemekit[ray]).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster: auto, ray://host:10001; default: a local Ray runtime.")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Ray workers (default: one per CPU, or per GPU).")] = None,
) -> None:
    """Compute frame features for every clip into the content-addressed cache (a folder or an fsspec URL)."""
    from phonemekit.config import EncoderConfig
    from phonemekit.data.manifest import load_manifest
    from phonemekit.models.encoders import build_encoder, default_source
    from phonemekit.scale.engines import make_engine
    from phonemekit.torchutil import resolve_device

    runner = make_engine(engine, address=address, workers=workers)
    m = load_manifest(manifest)
    enc = build_encoder(EncoderConfig(family=encoder, source=source or default_source(encoder), layer=_layer(layer)))
    t0 = time.perf_counter()
    with progress_bar() as p:
        r = runner.extract(m, enc, str(out), progress=p, batch_size=batch_size, device=resolve_device(device))
    log.info(
        "%s (%s weights): %d computed, %d from cache, %d failed in %.1f s -> %s",
        encoder, enc.weights, r.computed, r.cached, len(r.failed), time.perf_counter() - t0, r.cache_dir,
    )
    for name, w in r.workers.items():
        log.info("worker %s: %d clips, %.0f s of audio in %.1f s (%.1f clips/s)", name, w["clips"], w["audio_seconds"], w["seconds"],
                 w["clips_per_s"] or 0)


def _layer(text: str) -> int | str:
    from phonemekit.config import WEIGHTED
    from phonemekit.errors import ConfigError

    try:
        return int(text)
    except ValueError:
        if text == WEIGHTED:
            return text
        raise ConfigError(f"invalid value for '--layer': {text!r} (an integer or '{WEIGHTED}')") from None


# ---------------------------------------------------------------- models


def _model_config(model: str, config: Optional[Path], overrides: dict):
    import dataclasses

    from phonemekit.config import ModelConfig, load_config_file
    from phonemekit.models.presets import get_preset

    cfg = load_config_file(config, ModelConfig) if config else get_preset(model)
    if overrides.get("source"):
        cfg = cfg.replace(encoder=dataclasses.replace(cfg.encoder, source=overrides["source"]))
    if overrides.get("layer") is not None:
        cfg = cfg.replace(encoder=dataclasses.replace(cfg.encoder, layer=_layer(overrides["layer"])))
    train_changes = {k: v for k, v in overrides.items() if k in ("epochs", "batch_size", "lr", "finetune_layers", "seed") and v is not None}
    if train_changes:
        cfg = cfg.replace(train=dataclasses.replace(cfg.train, **train_changes))
    return cfg


def _load_data(data: Path, out: Path):
    """A manifest, or a recordings root that is prepared on the fly into OUT/data."""
    from phonemekit.data.manifest import MANIFEST, load_manifest, prepare

    if data.is_file() or (data / MANIFEST).is_file():
        return load_manifest(data)
    with progress_bar() as p:
        prepare(data, out / "data", progress=p)
    return load_manifest(out / "data")


@command()
def train(
    data: Annotated[Path, typer.Option(help="manifest.jsonl, its folder, or a recordings root.")],
    out: Annotated[Path, typer.Option(help="Run folder for the checkpoint and logs.")],
    model: Annotated[str, typer.Option(help="Preset name (mlp, wav2vec2-ctc, wavlm-ctc, fbank-ctc, ...).")] = "wavlm-ctc",
    config: Annotated[Optional[Path], typer.Option(help="JSON/TOML model config instead of a preset.")] = None,
    source: Annotated[Optional[str], typer.Option(help="Encoder weights: hub id, local folder or random:small.")] = None,
    layer: Annotated[Optional[str], typer.Option(help="Encoder layer (index, negative from the top) or 'weighted'.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1)] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1)] = None,
    lr: Annotated[Optional[float], typer.Option()] = None,
    finetune_layers: Annotated[Optional[int], typer.Option(help="0 frozen, N top layers, -1 everything.")] = None,
    split: Annotated[str, typer.Option(help="speaker-disjoint | loso")] = "speaker-disjoint",
    cache: Annotated[Path, typer.Option(help="Feature cache folder.")] = Path("cache"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in OUT.")] = False,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda")] = "auto",
    show_speakers: Annotated[bool, typer.Option(help="Name speakers in reports instead of pseudonyms.")] = False,
    engine: Annotated[str, typer.Option(help="Where features are extracted: local | ray (needs phonemekit[ray]).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster: auto, ray://host:10001; default: a local Ray runtime.")] = None,
    target_far: Annotated[float, typer.Option(min=0.001, max=0.5, help="Verdict calibration: false-accept rate the per-sound thresholds aim at.")] = 0.05,
) -> None:
    """Train one model and evaluate it on held-out speakers."""
    from phonemekit.scale.engines import make_engine
    from phonemekit.torchutil import resolve_device
    from phonemekit.training.experiment import train_all

    runner = make_engine(engine, address=address)
    cfg = _model_config(model, config, dict(source=source, layer=layer, epochs=epochs, batch_size=batch_size, lr=lr,
                                            finetune_layers=finetune_layers))
    m = _load_data(data, out)
    with progress_bar() as p:
        section = train_all(m, [cfg], out, split_kind=split, leaky=False, cache_root=cache, device=resolve_device(device),
                            resume=resume, show_speakers=show_speakers, progress=p, engine=runner, target_far=target_far)
    r = section["models"][cfg.name]
    log.info("%s: top-1 %.3f (95%% CI %.3f-%.3f), top-3 %.3f -> %s", cfg.name, r["top1"], *r["top1_ci95"], r["top3"], r["checkpoint"])


@command("train-all")
def train_all_cmd(
    data: Annotated[Path, typer.Option(help="manifest.jsonl, its folder, or a recordings root.")],
    out: Annotated[Path, typer.Option(help="Output folder: models/, figures/, report.json, report.md.")],
    models: Annotated[str, typer.Option(help="Comma-separated presets.")] = "mlp,wav2vec2-ctc,wavlm-ctc",
    wav2vec2: Annotated[Optional[str], typer.Option(help="wav2vec2 weights (hub id or folder).")] = None,
    wavlm: Annotated[Optional[str], typer.Option(help="WavLM weights (hub id or folder).")] = None,
    split: Annotated[str, typer.Option(help="speaker-disjoint | loso")] = "speaker-disjoint",
    leaky: Annotated[bool, typer.Option(help="Also train on a leaky clip-level split to show what it would claim.")] = True,
    epochs: Annotated[Optional[int], typer.Option(min=1)] = None,
    cache: Annotated[Path, typer.Option()] = Path("cache"),
    device: Annotated[str, typer.Option(help="auto|cpu|cuda")] = "auto",
    show_speakers: Annotated[bool, typer.Option()] = False,
    engine: Annotated[str, typer.Option(help="Where features are extracted: local | ray (needs phonemekit[ray]).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster: auto, ray://host:10001; default: a local Ray runtime.")] = None,
    target_far: Annotated[float, typer.Option(min=0.001, max=0.5, help="Verdict calibration: false-accept rate the per-sound thresholds aim at.")] = 0.05,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Trainings side by side, in this many processes; default: 2 on 2+ cores.")] = None,
) -> None:
    """Train the seed models (or any presets) on one split and write the report."""
    from phonemekit.models.presets import get_preset
    from phonemekit.scale.engines import make_engine
    from phonemekit.torchutil import resolve_device
    from phonemekit.training.experiment import train_all
    from phonemekit.training.workers import default_workers

    sources = {"wav2vec2": wav2vec2, "wavlm": wavlm}
    cfgs = []
    for name in [n.strip() for n in models.split(",") if n.strip()]:
        family = get_preset(name).encoder.family
        cfgs.append(_model_config(name, None, dict(epochs=epochs, source=sources.get(family))))
    m = _load_data(data, out)
    with progress_bar() as p:
        train_all(m, cfgs, out, split_kind=split, leaky=leaky, cache_root=cache, device=resolve_device(device),
                  show_speakers=show_speakers, progress=p, engine=make_engine(engine, address=address), target_far=target_far,
                  workers=workers or default_workers())
    _print_report(out)
    log.info("report -> %s", out / "report.md")


def _print_report(out: Path) -> None:
    from phonemekit.report.report import Report

    full = Report.load(out)
    report, cmp = full["train"], full.get("comparison") or {}
    target = report.get("target_group") or "target"
    table = Table(title=f"held-out speakers ({report['split']['kind']})")
    for col in ("model", "top-1 [95% CI]", "top-3", "F1", target, "leaky"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for name, m in report["models"].items():
        table.add_row(name, f"{m['top1']:.3f} [{m['top1_ci95'][0]:.2f}-{m['top1_ci95'][1]:.2f}]", f(m["top3"]), f"{m['macro_f1']:.2f}",
                      f(m["target_top1"]), f(m["leaky_top1"]))
    console.print(table)
    rand = [n for n, m in report["models"].items() if m["weights"] == "random"]
    if rand:
        console.print(f"randomly initialised encoders (not a verdict on pretrained ones): {', '.join(rand)}")
    console.print(f"best model (by {report['headline']}): [bold]{report['best_model']}[/]"
                  + (f"; fastest end to end: [bold]{cmp['faster_model']}[/]" if cmp.get("faster_model") else ""))


@command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder (holds model.json).")],
    data: Annotated[Optional[Path], typer.Option(help="Manifest to evaluate on; default: the run's own test split.")] = None,
    cache: Annotated[Path, typer.Option()] = Path("cache"),
    device: Annotated[str, typer.Option(help="auto|cpu|cuda")] = "auto",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the metrics here.")] = None,
) -> None:
    """Re-evaluate a trained model on any manifest (default: its own held-out speakers)."""
    from phonemekit.evaluation.evaluate import evaluate_run
    from phonemekit.fileio import write_json
    from phonemekit.runs import Run
    from phonemekit.torchutil import resolve_device

    res = evaluate_run(Run(run), data, cache_root=cache, device=resolve_device(device))
    if json_out:
        write_json(json_out, res)
    typer.echo(f"clips {res['n']}  top-1 {res['top1']:.3f} (95% CI {res['top1_ci95'][0]:.3f}-{res['top1_ci95'][1]:.3f})  "
               f"top-3 {res['top3']:.3f}  macro-F1 {res['macro_f1']:.3f}")
    for g, v in res["per_group"].items():
        typer.echo(f"  group {g}: top-1 {v:.3f}")


@command("family-test")
def family_test(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of models trained on --train-data.")],
    train_data: Annotated[Path, typer.Option(help="The manifest the runs were trained on (for the baselines' split).")],
    family_data: Annotated[Path, typer.Option(help="Manifest of a voice family no training speaker belongs to.")],
    cache: Annotated[Path, typer.Option()] = Path("cache"),
    device: Annotated[str, typer.Option(help="auto|cpu|cuda")] = "auto",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results here.")] = None,
) -> None:
    """Test trained models and each encoder's logistic-regression baseline on a held-out voice family."""
    from phonemekit.data.manifest import load_manifest
    from phonemekit.evaluation.transfer import evaluate_family
    from phonemekit.fileio import write_json
    from phonemekit.report.report import render
    from phonemekit.torchutil import resolve_device

    res = evaluate_family(runs, load_manifest(train_data), load_manifest(family_data), cache_root=cache, device=resolve_device(device),
                          title=f"Held-out voice family ({family_data})")
    if json_out:
        write_json(json_out, res)
    typer.echo(render("unseen", res))


@command()
def confusions(
    run: Annotated[Path, typer.Argument(help="Run folder of a model trained by train/train-all.")],
    data: Annotated[Optional[Path], typer.Option(help="Manifest; default: the run's held-out predictions.")] = None,
    top: Annotated[int, typer.Option(min=1)] = 10,
    examples: Annotated[int, typer.Option(min=0, help="Example files per pair.")] = 3,
    cache: Annotated[Path, typer.Option()] = Path("cache"),
) -> None:
    """Print the most-confused label pairs with counts and example files."""
    from phonemekit.evaluation.evaluate import confusion_examples
    from phonemekit.runs import Run

    table = Table(title="most-confused pairs (true -> predicted)")
    for col in ("true", "predicted", "count", "examples"):
        table.add_column(col)
    for c in confusion_examples(Run(run), data, top=top, examples=examples, cache_root=cache):
        table.add_row(c["true"], c["predicted"], str(c["count"]), ", ".join(c["examples"]))
    console.print(table)


@command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/demo"),
    wav2vec2: Annotated[Optional[str], typer.Option(help="Pretrained wav2vec2 (hub id or folder); default: a pipeline check on random:tiny.")] = None,
    wavlm: Annotated[Optional[str], typer.Option(help="Pretrained WavLM (hub id or folder); default: a pipeline check on random:tiny.")] = None,
    speakers: Annotated[int, typer.Option(min=3, max=18)] = 18,
    takes: Annotated[int, typer.Option(min=1, max=12, help="Takes per speaker and sound (2: the demo's 10-minute budget).")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    channel: Annotated[str, typer.Option(help="Demo corpus channel: room | plain (see demo-data).")] = "room",
    voices: Annotated[str, typer.Option(help="Demo corpus voices: espeak | varied (see demo-data).")] = "espeak",
    e2e_epochs: Annotated[int, typer.Option(min=1, help="Epochs for the seed models' pipeline check (random encoders, end to end).")] = 1,
    models: Annotated[str, typer.Option(help="Comma-separated presets to train.")] = ",".join(DEMO_MODELS),
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Override the epochs of every model (quick runs).")] = None,
    force: Annotated[Optional[list[str]], typer.Option(help="Redo this step (repeatable): corpus, prepare, train, ...")] = None,
    cache: Annotated[Optional[Path], typer.Option(help="Feature cache; default OUT/cache.")] = None,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda")] = "auto",
    engine: Annotated[str, typer.Option(help="Where features are extracted: local | ray (needs phonemekit[ray]).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster: auto, ray://host:10001; default: a local Ray runtime.")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Trainings side by side, in this many processes; default: 2 on 2+ cores.")] = None,
) -> None:
    """Run the whole pipeline on the built-in demo corpus (resumable)."""
    from phonemekit.recipes.demo import run_demo
    from phonemekit.scale.engines import make_engine
    from phonemekit.torchutil import resolve_device
    from phonemekit.training.workers import default_workers

    t0 = time.perf_counter()
    with progress_bar() as p:
        run_demo(out, force=set(force or []), speakers=speakers, takes=takes, seed=seed, channel=channel, voices=voices, wav2vec2=wav2vec2, wavlm=wavlm,
                 e2e_epochs=e2e_epochs, models=tuple(m.strip() for m in models.split(",") if m.strip()), epochs=epochs,
                 cache=cache or out / "cache", device=resolve_device(device), progress=p, engine=make_engine(engine, address=address),
                 workers=workers or default_workers())
    _print_report(out)
    log.info("demo finished in %.0f s; report: %s, figures: %s, step log: %s", time.perf_counter() - t0,
             out / "report.md", out / "figures", out / "steps.jsonl")


# ---------------------------------------------------------------- deployment


def _trusted(path: Optional[Path]) -> Optional[set]:
    from phonemekit.deploy.runtime import load_trusted_hashes

    return load_trusted_hashes(path) if path else None


@command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder of a trained model.")],
    out: Annotated[Optional[Path], typer.Option(help="Output folder; default RUN/onnx.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Manifest with real clips for the parity check; default: the training manifest.")] = None,
    clips: Annotated[int, typer.Option(min=2, help="Clips in the parity check.")] = 32,
    forms: Annotated[str, typer.Option(help="head,e2e")] = "head,e2e",
    int8: Annotated[bool, typer.Option(help="Also try a dynamic int8 copy (kept only if faster and accurate).")] = True,
    trusted_hashes: Annotated[Optional[Path], typer.Option(help="Only export checkpoints whose sha256 is listed.")] = None,
) -> None:
    """Export a trained model to ONNX (head-only and end-to-end) with a parity check."""
    from phonemekit.deploy.export import export_run, parity_clips

    rec = export_run(run, parity_clips(run, data, clips), out, forms=tuple(f.strip() for f in forms.split(",")), int8=int8,
                     trusted=_trusted(trusted_hashes))
    for form, f in rec["files"].items():
        typer.echo(f"{form:5s} {f['path']}  {f['bytes'] / 1e6:.1f} MB  top-1 agreement {f['parity']['top1_agreement']:.3f}  "
                   f"max |dp| {f['parity']['max_abs_diff']:.1e}" + (f"  int8: {f['int8']['reason']}" if "int8" in f else ""))


@command("test-batch")
def test_batch(
    model: Annotated[Path, typer.Argument(help="An .onnx file or a run folder (torch checkpoint).")],
    data: Annotated[Path, typer.Argument(help="Folder of audio (label = parent folder name), a manifest, or one file.")],
    out: Annotated[Path, typer.Option(help="Per-file predictions (.csv or .json).")] = Path("predictions.csv"),
    top_k: Annotated[int, typer.Option(min=1)] = 3,
    trusted_hashes: Annotated[Optional[Path], typer.Option()] = None,
) -> None:
    """Classify every file with a model; write predictions and accuracy."""
    from phonemekit.deploy.batchtest import list_inputs, load_predictor, run_batch, write_predictions

    labels, predict, kind = load_predictor(model, _trusted(trusted_hashes))
    items = list_inputs(data, labels)
    with progress_bar() as p:
        rows, summary = run_batch(labels, predict, items, top_k, progress=p)
    write_predictions(rows, summary, out)
    acc = "n/a (no labels)" if summary["accuracy"] is None else f"{summary['accuracy']:.3f} on {summary['labelled']} labelled files"
    typer.echo(f"{kind} model: {summary['classified']}/{summary['files']} files classified, {len(summary['failed'])} skipped; accuracy {acc} -> {out}")


@command("test-onnx")
def test_onnx(
    run: Annotated[Path, typer.Argument(help="Run folder with an onnx/ export and predictions.npz.")],
    data: Annotated[Optional[Path], typer.Option(help="Manifest; default: the training manifest, restricted to the run's held-out clips.")] = None,
) -> None:
    """Parity and held-out accuracy of a run's exported ONNX files."""
    from phonemekit.deploy.export import evaluate_exports

    res = evaluate_exports(run, data)
    typer.echo(f"torch checkpoint: held-out top-1 {res['torch']['top1']:.3f} on {res['torch']['clips']} clips")
    for name, f in res["files"].items():
        typer.echo(f"{name}: held-out top-1 {f['top1']:.3f} on {f['clips']} clips ({f['precision']})")
    for form, par in res["parity"].items():
        typer.echo(f"parity {form}: top-1 agreement {par['top1_agreement']:.3f}, max |dp| {par['max_abs_diff']:.1e}")


@command()
def benchmark(
    json_out: Annotated[Path, typer.Option("--json", help="Results JSON; a markdown table is written beside it.")] = Path("runs/benchmark.json"),
    threads: Annotated[Optional[int], typer.Option(min=1, help="Threads for torch and ONNX Runtime; default: all cores.")] = None,
    runs: Annotated[int, typer.Option(min=10, help="Timed batch-1 head runs.")] = 300,
    encoders: Annotated[str, typer.Option(help="Encoders for the end-to-end figures, FAMILY or FAMILY=SOURCE ('' to skip).")] = "wav2vec2,wavlm,whisper",
    heads: Annotated[Optional[str], typer.Option(help="Heads to time, comma-separated (the first is the reference for the targets); "
                                                       "default: the seed's head and the alternatives.")] = None,
) -> None:
    """Measure head latency/throughput, end-to-end real-time factor and memory against the targets."""
    from phonemekit.deploy.benchmark import BENCH_HEADS, markdown, run_benchmark, write_results

    res = run_benchmark(threads=threads, n=runs, encoders=tuple(e for e in encoders.split(",") if e),
                        heads=tuple(h for h in heads.split(",") if h) if heads else BENCH_HEADS)
    md = write_results(res, json_out)
    typer.echo(markdown(res))
    log.info("benchmark -> %s, %s", json_out, md)


@command("benchmark-extract")
def benchmark_extract(
    json_out: Annotated[Path, typer.Option("--json", help="Results JSON; a markdown table is written beside it.")] = Path("runs/extract-benchmark.json"),
    encoders: Annotated[str, typer.Option(help="FAMILY or FAMILY=SOURCE, comma-separated.")] = "fbank,whisper,wavlm",
    clips: Annotated[int, typer.Option(min=4, help="Generated 1 s clips.")] = 48,
) -> None:
    """Measure feature extraction with the local engine and Ray (1 and 2 workers): clips/s, overhead, identical bytes."""
    from phonemekit.scale.benchmark import markdown, run_extract_benchmark, write_results

    res = run_extract_benchmark(encoders=tuple(e for e in encoders.split(",") if e), clips=clips)
    md = write_results(res, json_out)
    typer.echo(markdown(res))
    log.info("extraction benchmark -> %s, %s", json_out, md)


@command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of trained models (tested on the same split).")],
    out: Annotated[Path, typer.Option(help="Folder for compare.json/.md; a report.json there is updated too.")] = Path("runs/compare"),
    target_group: Annotated[Optional[str], typer.Option(help="Group reported on its own, e.g. child.")] = None,
    speed: Annotated[bool, typer.Option(help="Also measure latency, size and memory.")] = True,
    threads: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """Compare trained models side by side: accuracy, significance, speed, memory."""
    import functools

    from phonemekit.deploy.benchmark import measure_speed
    from phonemekit.evaluation.compare import compare_into_report
    from phonemekit.report.report import render

    cmp = compare_into_report(runs, out, target_group=target_group, speed_of=functools.partial(measure_speed, threads=threads) if speed else None)
    typer.echo(render("comparison", cmp, out))
    log.info("comparison -> %s", out / "compare.md")


@command()
def ensemble(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of the members (trained on the same split).")],
    out: Annotated[Path, typer.Option(help="Folder for ensemble.json and ensemble.e2e.onnx; a report.json there is updated too.")] = Path("runs/ensemble"),
    export: Annotated[bool, typer.Option(help="Export the chosen ensemble as one ONNX file.")] = True,
    clips: Annotated[int, typer.Option(min=2, help="Clips in the parity check.")] = 16,
) -> None:
    """Fit averaging, weighted, vote and stacking ensembles on validation; report them on test."""
    from phonemekit.deploy.ensemble import ensemble_into_report

    rec = ensemble_into_report(runs, out, export=export, clips=clips)
    for method, r in rec["methods"].items():
        typer.echo(f"{method:9s} val top-1 {r['val_top1']:.3f}  test top-1 {r['top1']:.3f} ({r['top1_ci95'][0]:.3f}-{r['top1_ci95'][1]:.3f})"
                   + ("  <- chosen on validation" if method == rec["chosen"] else ""))


@command()
def purge(
    older_than: Annotated[float, typer.Option(min=0, help="Delete files older than this many days.")],
    what: Annotated[list[str], typer.Option(help="cache, runs and/or audio (repeatable).")] = ["cache", "runs"],  # noqa: B006
    cache: Annotated[Path, typer.Option(help="Feature cache folder.")] = Path("cache"),
    runs: Annotated[Path, typer.Option(help="Runs folder.")] = Path("runs"),
    audio: Annotated[Optional[Path], typer.Option(help="Recordings folder (needed for --what audio).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete; without it this is a dry run.")] = False,
) -> None:
    """Delete caches, runs or recordings older than N days (dry run unless --yes)."""
    from phonemekit.errors import ConfigError
    from phonemekit.privacy import purge as run_purge

    known = {"cache": cache, "runs": runs, "audio": audio}
    bad = [w for w in what if w not in known]
    if bad:
        raise ConfigError(f"invalid value for '--what': {', '.join(bad)} (cache|runs|audio)")
    if "audio" in what and audio is None:
        raise ConfigError("--what audio needs --audio FOLDER")
    report = run_purge(older_than, {w: known[w] for w in what}, dry_run=not yes)
    for w, r in report.items():
        typer.echo(f"{w:6s} {r['root']}: {r['files']} files, {r['bytes'] / 1e6:.1f} MB older than {older_than:g} days"
                   + (" deleted" if yes else " would be deleted (dry run; add --yes)"))


@command("make-replay")
def make_replay(
    manifest: Annotated[Path, typer.Option(help="Manifest to draw labelled clips from.")],
    out: Annotated[Path, typer.Option(help="Output .wav; the truth goes to OUT.labels.json.")],
    clips: Annotated[int, typer.Option(min=1)] = 40,
    gap: Annotated[float, typer.Option(min=0.1, help="Seconds of silence between clips.")] = 0.6,
    seed: Annotated[int, typer.Option()] = 0,
    speakers: Annotated[Optional[str], typer.Option(help="Comma-separated speakers to draw from (e.g. held-out ones).")] = None,
) -> None:
    """Build a replay file of labelled clips separated by silence (the standard live test)."""
    from phonemekit.data.audio import write_audio
    from phonemekit.data.manifest import load_manifest
    from phonemekit.fileio import write_json
    from phonemekit.live.replay import build_replay

    m = load_manifest(manifest)
    rows = m.rows_of(speakers.split(",")) if speakers else None
    wave, truth = build_replay(m, clips=clips, gap_s=gap, seed=seed, rows=rows)
    write_audio(out, wave)
    write_json(out.with_suffix(".labels.json"), truth)
    typer.echo(f"{len(truth)} clips, {len(wave) / 16000:.1f} s -> {out} (+ {out.with_suffix('.labels.json').name})")


@command()
def live(
    model: Annotated[Path, typer.Option(help="An end-to-end .onnx model from `phonemekit export`.")],
    file: Annotated[Optional[Path], typer.Option(help="Replay this file instead of the microphone.")] = None,
    realtime: Annotated[bool, typer.Option(help="Replay the file at real-time speed (default: as fast as possible).")] = False,
    input_device: Annotated[Optional[str], typer.Option("--input-device", help="Microphone (name or index).")] = None,
    preset: Annotated[str, typer.Option(help="responsive | balanced | stable")] = "balanced",
    config: Annotated[Optional[Path], typer.Option(help="JSON with live settings on top of the preset.")] = None,
    vad: Annotated[Optional[str], typer.Option(help="hybrid (default: silero-vad or a noise-floor gate) | silero | energy")] = None,
    hysteresis: Annotated[Optional[int], typer.Option(min=1)] = None,
    min_confidence: Annotated[Optional[float], typer.Option(min=0, max=0.99)] = None,
    ema: Annotated[Optional[float], typer.Option(min=0.01, max=1)] = None,
    expect: Annotated[Optional[str], typer.Option(help="Practice mode: the sound the child should say.")] = None,
    events: Annotated[Optional[Path], typer.Option(help="Write events as JSON lines here ('-' for stdout).")] = None,
    report: Annotated[bool, typer.Option(help="With --file and FILE.labels.json: detection, false triggers, accuracy, latency and flicker "
                                              "of every preset (and each --noise).")] = False,
    noise: Annotated[Optional[list[str]], typer.Option(help="With --report: also run --preset with noise mixed in, KIND:SNR_DB (pink|hum|clicks), "
                                                             "repeatable.")] = None,
    watch: Annotated[bool, typer.Option(help="Reload the model when its file changes.")] = False,
    threads: Annotated[int, typer.Option(min=1)] = 1,
) -> None:
    """Classify sounds live from the microphone or a replayed file."""
    import contextlib
    import json as _json

    from rich.live import Live

    from phonemekit.config import AudioConfig
    from phonemekit.data.audio import load_audio
    from phonemekit.deploy.runtime import Classifier
    from phonemekit.fileio import read_json
    from phonemekit.live.bench import live_table, parse_noise, table_markdown
    from phonemekit.live.engine import LiveEngine, load_live_config, run_stream, summary
    from phonemekit.live.replay import replay_metrics
    from phonemekit.live.sources import array_blocks, mic_blocks
    from phonemekit.live.view import LiveView

    cfg = load_live_config(preset, config, vad=vad, hysteresis=hysteresis, min_confidence=min_confidence, ema=ema)
    clf = Classifier.load(model, threads=threads)
    engine = LiveEngine(clf, cfg, expect=expect)
    # A replayed file is read once: the session and --report's table both use its samples.
    replay = load_audio(file, AudioConfig(max_seconds=3600, max_bytes=2_000_000_000)).samples if file else None
    blocks = array_blocks(replay, realtime=realtime) if file else mic_blocks(int(input_device) if input_device and input_device.isdigit() else input_device)
    view = LiveView(clf.name, expect)
    sink = open(events, "w", encoding="utf-8") if events and str(events) != "-" else None  # noqa: SIM115
    show = console.is_terminal and (file is None or realtime)

    def on_event(ev: dict) -> None:
        view.on_event(ev)
        line = _json.dumps(ev)
        if sink:
            sink.write(line + "\n")
        elif events is not None:
            typer.echo(line)

    try:
        with Live(view, console=console, refresh_per_second=15) if show else contextlib.nullcontext():
            evs = run_stream(engine, blocks, on_event=on_event, on_frame=view.on_frame, watch=model if watch else None)
    finally:
        if sink:
            sink.close()
    s = summary(evs)
    typer.echo(f"session: {s['segments']} segments, {s['labelled']} labelled" + (f", {s['recognised']} recognised as {expect}" if expect else ""))
    if report:
        truth_file = file.with_suffix(".labels.json") if file else None
        if not truth_file or not truth_file.exists():
            raise typer.BadParameter("--report needs --file with a FILE.labels.json beside it (see `phonemekit make-replay`)")
        truth = read_json(truth_file)
        typer.echo(_json.dumps(replay_metrics(evs, truth), indent=2))
        try:
            noises = [parse_noise(n) for n in noise or []]
        except ValueError as e:
            raise typer.BadParameter(str(e)) from e
        table = live_table(clf, replay, truth, noises=noises, noise_presets=(preset,))
        typer.echo("\n".join(table_markdown(table, f"{clf.name}: every preset")))


# ---------------------------------------------------------------- serving


@command()
def serve(
    model: Annotated[Path, typer.Argument(help="An end-to-end .onnx model from `phonemekit export`.")],
    host: Annotated[str, typer.Option(help="Interface to bind; loopback by default.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    token: Annotated[Optional[str], typer.Option(envvar="PHONEMEKIT_TOKEN", help="Require this bearer token (or env PHONEMEKIT_TOKEN).")] = None,
    cors: Annotated[Optional[list[str]], typer.Option(help="Allow browser requests from this origin (repeatable).")] = None,
    allowed_host: Annotated[Optional[list[str]], typer.Option(help="Answer this Host name too (repeatable; '*': any).")] = None,
    stream_minutes: Annotated[float, typer.Option(min=0.1, help="Close a stream open this long.")] = 30.0,
    watch: Annotated[bool, typer.Option(help="Reload the model when its file changes, keeping open streams.")] = False,
    record: Annotated[Optional[Path], typer.Option(help="Write received audio to this folder (off by default: audio stays in memory).")] = None,
    max_body_mb: Annotated[float, typer.Option(min=0.01, max=100)] = 5.0,
    max_clip_seconds: Annotated[float, typer.Option(min=0.1, max=600)] = 10.0,
    max_requests: Annotated[int, typer.Option(min=1, help="Classifications in flight; more wait, then get 503.")] = 8,
    max_streams: Annotated[int, typer.Option(min=1)] = 8,
    workers: Annotated[int, typer.Option(min=1, help="Inference threads.")] = 2,
    idle_timeout: Annotated[float, typer.Option(min=0.1, help="Close a stream after this many seconds without audio.")] = 30.0,
    web: Annotated[bool, typer.Option(help="Also serve the practice and recording page at / (the browser runs the model itself).")] = False,
    web_dir: Annotated[Optional[Path], typer.Option(help="The page's build folder (default: this checkout's web/dist, from `make web`).")] = None,
    collect: Annotated[Optional[Path], typer.Option(help="Save the page's guided recordings here (COLLECT/<pseudonym>/<label>/).")] = None,
) -> None:
    """Serve a model to games: HTTP /classify, WebSocket /stream, /model, /health (OpenAPI at /docs)."""
    from phonemekit.serve.app import ServeConfig
    from phonemekit.serve.app import serve as run_server
    from phonemekit.serve.guard import LOOPBACK_HOSTS
    from phonemekit.serve.web import DEFAULT_DIST

    if host not in LOOPBACK_HOSTS:
        log.warning("binding %s: the server is reachable from other machines%s", host, "" if token else " and has no --token")
    if record:
        record.mkdir(parents=True, exist_ok=True)
        log.warning("recording every received clip and stream to %s", record)
    hosts = (*LOOPBACK_HOSTS, *(allowed_host or ()))
    if host not in LOOPBACK_HOSTS and not allowed_host:
        log.warning("only loopback host names are answered; pass --allowed-host NAME for the name clients use to reach %s", host)
    cfg = ServeConfig(token=token, cors_origins=tuple(cors or ()), allowed_hosts=hosts, max_stream_wall_s=stream_minutes * 60,
                      max_body_bytes=int(max_body_mb * 1e6), max_clip_seconds=max_clip_seconds,
                      max_requests=max_requests, max_streams=max_streams, workers=workers, idle_timeout_s=idle_timeout, record_dir=record,
                      watch_s=1.0 if watch else None, web_dir=(web_dir or DEFAULT_DIST) if web or web_dir else None, collect_dir=collect)
    if cfg.web_dir:
        log.info("page at http://%s:%d/", host, port)
    run_server(model, cfg, host=host, port=port)


@command()
def loadtest(
    model: Annotated[Path, typer.Argument(help="An end-to-end .onnx model; a server for it is started on a free loopback port.")],
    file: Annotated[Path, typer.Option(help="A replay .wav (see `make-replay`): streams send it, HTTP clients post its clips.")],
    clients: Annotated[int, typer.Option(min=0, max=256)] = 4,
    streams: Annotated[int, typer.Option(min=0, max=64)] = 2,
    seconds: Annotated[float, typer.Option(min=1, max=600)] = 10.0,
    workers: Annotated[int, typer.Option(min=1)] = 2,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures here.")] = None,
) -> None:
    """Load-test the server on loopback: requests/s, p50/p99 latency, errors, peak RSS."""
    import io
    import json as _json

    import numpy as np
    import soundfile as sf

    from phonemekit.config import AudioConfig
    from phonemekit.data.audio import load_audio
    from phonemekit.fileio import read_json, write_json
    from phonemekit.serve.loadtest import load_test_model

    x = load_audio(file, AudioConfig(max_seconds=3600, max_bytes=2_000_000_000)).samples
    labels = file.with_suffix(".labels.json")
    spans = ([(t["start"] - 0.1, t["end"] + 0.1) for t in read_json(labels)] if labels.exists()
             else [(t, t + 1.0) for t in np.arange(0, len(x) / 16000 - 1, 1.0)])
    clips = []
    for a, b in spans[:64]:
        buf = io.BytesIO()
        sf.write(buf, x[max(0, int(a * 16000)) : int(b * 16000)], 16000, subtype="PCM_16", format="WAV")
        clips.append(buf.getvalue())
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    res = load_test_model(model, clips, pcm, clients=clients, streams=streams, seconds=seconds, workers=workers)
    typer.echo(_json.dumps(res, indent=2))
    if json_out:
        write_json(json_out, res)


@command("browser-bench")
def browser_bench(
    models: Annotated[list[Path], typer.Argument(help="End-to-end .onnx files (fp32 and/or int8).")],
    web_dir: Annotated[Optional[Path], typer.Option(help="The page's build (default: web/dist from `make web`).")] = None,
    clips: Annotated[int, typer.Option(min=1, max=100)] = 10,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures here.")] = None,
) -> None:
    """Model size, load time and per-clip (1 s) inference time in headless Chromium (onnxruntime-web, WASM)."""
    from phonemekit.fileio import write_json
    from phonemekit.serve.browserbench import browser_timings
    from phonemekit.serve.web import DEFAULT_DIST

    rows = [browser_timings(m, web_dir or DEFAULT_DIST, clips=clips) for m in models]
    table = Table("model", "MB", "load ms", "1 s clip ms (median / max)", "RTF")
    for r in rows:
        table.add_row(r["model"], f"{r['bytes'] / 1e6:.1f}", str(r["load_ms"]), f"{r['infer_ms_median']} / {r['infer_ms_max']}", f"{r['rtf']:.4f}")
    console.print(table)
    if json_out:
        write_json(json_out, rows)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
