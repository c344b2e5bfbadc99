"""Model commands: train, train-all, evaluate, family-test, confusions, demo."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from phonemekit.cli.base import Address, Cache, Device, Engine, JsonOut, TargetFar, Workers, command
from phonemekit.console import console, progress_bar
from phonemekit.data.manifest import load_or_prepare
from phonemekit.models.presets import DEFAULT_MODEL, DEFAULT_MODELS, DEMO_MODELS, REAL_MODELS, model_config

log = logging.getLogger("phonemekit")


@command()
def train(
    data: Annotated[Path, typer.Option(help="manifest.jsonl, its folder, or a recordings root.")],
    out: Annotated[Path, typer.Option(help="Run folder for the checkpoint and logs.")],
    model: Annotated[str, typer.Option(help="Preset name (whisper-mlp, fbank-mlp, wavlm-ctc, ...).")] = DEFAULT_MODEL,
    config: Annotated[Path | None, typer.Option(help="JSON/TOML model config instead of a preset.")] = None,
    source: Annotated[str | None, typer.Option(help="Encoder weights: hub id, local folder or random:small.")] = None,
    layer: Annotated[str | None, typer.Option(help="Encoder layer (index, negative from the top) or 'weighted'.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    finetune_layers: Annotated[int | None, typer.Option(help="0 frozen, N top layers, -1 everything.")] = None,
    split: Annotated[str, typer.Option(help="speaker-disjoint | loso | corpus (the data's own train/test)")] = "speaker-disjoint",
    cache: Cache = Path("cache"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in OUT.")] = False,
    device: Device = "auto",
    show_speakers: Annotated[bool, typer.Option(help="Name speakers in reports instead of pseudonyms.")] = False,
    engine: Engine = "local",
    address: Address = None,
    target_far: TargetFar = 0.05,
) -> None:
    """Train one model and evaluate it on held-out speakers."""
    from phonemekit.scale.engines import make_engine
    from phonemekit.torchutil import resolve_device
    from phonemekit.training.experiment import train_all

    runner = make_engine(engine, address=address)
    cfg = model_config(model, config, source=source, layer=layer, epochs=epochs, batch_size=batch_size, lr=lr, finetune_layers=finetune_layers)
    with progress_bar() as p:
        m = load_or_prepare(data, out, progress=p)
    with progress_bar() as p:
        section = train_all(
            m,
            [cfg],
            out,
            split_kind=split,
            leaky=False,
            cache_root=cache,
            device=resolve_device(device),
            resume=resume,
            show_speakers=show_speakers,
            progress=p,
            engine=runner,
            target_far=target_far,
        )
    r = section["models"][cfg.name]
    log.info("%s: top-1 %.3f (95%% CI %.3f-%.3f), top-3 %.3f -> %s", cfg.name, r["top1"], *r["top1_ci95"], r["top3"], r["checkpoint"])


@command("train-all")
def train_all_cmd(
    data: Annotated[Path, typer.Option(help="manifest.jsonl, its folder, or a recordings root.")],
    out: Annotated[Path, typer.Option(help="Output folder: models/, figures/, report.json, report.md.")],
    models: Annotated[str, typer.Option(help="Comma-separated presets.")] = ",".join(DEFAULT_MODELS),
    wav2vec2: Annotated[str | None, typer.Option(help="wav2vec2 weights (hub id or folder).")] = None,
    wavlm: Annotated[str | None, typer.Option(help="WavLM weights (hub id or folder).")] = None,
    split: Annotated[str, typer.Option(help="speaker-disjoint | loso | corpus (the data's own train/test)")] = "speaker-disjoint",
    leaky: Annotated[bool, typer.Option(help="Also train on a leaky clip-level split to show what it would claim.")] = True,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    cache: Cache = Path("cache"),
    device: Device = "auto",
    show_speakers: Annotated[bool, typer.Option()] = False,
    engine: Engine = "local",
    address: Address = None,
    target_far: TargetFar = 0.05,
    workers: Workers = None,
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
        cfgs.append(model_config(name, epochs=epochs, source=sources.get(family)))
    with progress_bar() as p:
        m = load_or_prepare(data, out, progress=p)
    with progress_bar() as p:
        train_all(
            m,
            cfgs,
            out,
            split_kind=split,
            leaky=leaky,
            cache_root=cache,
            device=resolve_device(device),
            show_speakers=show_speakers,
            progress=p,
            engine=make_engine(engine, address=address),
            target_far=target_far,
            workers=workers or default_workers(),
        )
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
        table.add_row(
            name,
            f"{m['top1']:.3f} [{m['top1_ci95'][0]:.2f}-{m['top1_ci95'][1]:.2f}]",
            f(m["top3"]),
            f"{m['macro_f1']:.2f}",
            f(m["target_top1"]),
            f(m["leaky_top1"]),
        )
    console.print(table)
    rand = [n for n, m in report["models"].items() if m["weights"] == "random"]
    if rand:
        console.print(f"randomly initialised encoders (not a verdict on pretrained ones): {', '.join(rand)}")
    console.print(
        f"best model (by {report['headline']}): [bold]{report['best_model']}[/]"
        + (f"; fastest end to end: [bold]{cmp['faster_model']}[/]" if cmp.get("faster_model") else "")
    )


@command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder (holds model.json).")],
    data: Annotated[Path | None, typer.Option(help="Manifest to evaluate on; default: the run's own test split.")] = None,
    cache: Cache = Path("cache"),
    device: Device = "auto",
    json_out: JsonOut = None,
) -> None:
    """Re-evaluate a trained model on any manifest (default: its own held-out speakers)."""
    from phonemekit.evaluation.evaluate import evaluate_run
    from phonemekit.fileio import write_json
    from phonemekit.runs import Run
    from phonemekit.torchutil import resolve_device

    res = evaluate_run(Run(run), data, cache_root=cache, device=resolve_device(device))
    if json_out:
        write_json(json_out, res)
    typer.echo(
        f"clips {res['n']}  top-1 {res['top1']:.3f} (95% CI {res['top1_ci95'][0]:.3f}-{res['top1_ci95'][1]:.3f})  "
        f"top-3 {res['top3']:.3f}  macro-F1 {res['macro_f1']:.3f}"
    )
    for g, v in res["per_group"].items():
        typer.echo(f"  group {g}: top-1 {v['top1']:.3f} ({v['speakers']} speakers)")


@command("family-test")
def family_test(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of models trained on --train-data.")],
    train_data: Annotated[Path, typer.Option(help="The manifest the runs were trained on (for the baselines' split).")],
    family_data: Annotated[Path, typer.Option(help="Manifest of a voice family no training speaker belongs to.")],
    cache: Cache = Path("cache"),
    device: Device = "auto",
    json_out: JsonOut = None,
) -> None:
    """Test trained models and each encoder's logistic-regression baseline on a held-out voice family."""
    from phonemekit.data.manifest import load_manifest
    from phonemekit.evaluation.transfer import evaluate_family
    from phonemekit.fileio import write_json
    from phonemekit.report.report import render
    from phonemekit.torchutil import resolve_device

    res = evaluate_family(
        runs,
        load_manifest(train_data),
        load_manifest(family_data),
        cache_root=cache,
        device=resolve_device(device),
        title=f"Held-out voice family ({family_data})",
    )
    if json_out:
        write_json(json_out, res)
    typer.echo(render("unseen", res))


@command()
def confusions(
    run: Annotated[Path, typer.Argument(help="Run folder of a model trained by train/train-all.")],
    data: Annotated[Path | None, typer.Option(help="Manifest; default: the run's held-out predictions.")] = None,
    top: Annotated[int, typer.Option(min=1)] = 10,
    examples: Annotated[int, typer.Option(min=0, help="Example files per pair.")] = 3,
    cache: Cache = Path("cache"),
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
    wav2vec2: Annotated[str | None, typer.Option(help="Pretrained wav2vec2 (hub id or folder); default: a pipeline check on random:tiny.")] = None,
    wavlm: Annotated[str | None, typer.Option(help="Pretrained WavLM (hub id or folder); default: a pipeline check on random:tiny.")] = None,
    speakers: Annotated[int, typer.Option(min=3, max=18)] = 18,
    takes: Annotated[int, typer.Option(min=1, max=12, help="Takes per speaker and sound (2: the demo's 10-minute budget).")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    channel: Annotated[str, typer.Option(help="Demo corpus channel: room | plain (see demo-data).")] = "room",
    voices: Annotated[str, typer.Option(help="Demo corpus voices: espeak | varied (see demo-data).")] = "espeak",
    e2e_epochs: Annotated[int, typer.Option(min=1, help="Epochs for the seed models' pipeline check (random encoders, end to end).")] = 1,
    models: Annotated[str, typer.Option(help="Comma-separated presets to train.")] = ",".join(DEMO_MODELS),
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the epochs of every model (quick runs).")] = None,
    force: Annotated[list[str] | None, typer.Option(help="Redo this step (repeatable): corpus, prepare, train, ...")] = None,
    cache: Annotated[Path | None, typer.Option(help="Feature cache; default OUT/cache.")] = None,
    device: Device = "auto",
    engine: Engine = "local",
    address: Address = None,
    workers: Workers = None,
) -> None:
    """Run the whole pipeline on the built-in demo corpus (resumable)."""
    from phonemekit.recipes.demo import run_demo
    from phonemekit.scale.engines import make_engine
    from phonemekit.torchutil import resolve_device
    from phonemekit.training.workers import default_workers

    t0 = time.perf_counter()
    with progress_bar() as p:
        run_demo(
            out,
            force=set(force or []),
            speakers=speakers,
            takes=takes,
            seed=seed,
            channel=channel,
            voices=voices,
            wav2vec2=wav2vec2,
            wavlm=wavlm,
            e2e_epochs=e2e_epochs,
            models=tuple(m.strip() for m in models.split(",") if m.strip()),
            epochs=epochs,
            cache=cache or out / "cache",
            device=resolve_device(device),
            progress=p,
            engine=make_engine(engine, address=address),
            workers=workers or default_workers(),
        )
    _print_report(out)
    log.info(
        "demo finished in %.0f s; report: %s, figures: %s, step log: %s", time.perf_counter() - t0, out / "report.md", out / "figures", out / "steps.jsonl"
    )


@command()
def real(
    src: Annotated[Path, typer.Argument(help="A copy of speechocean762 (train/, test/, WAVE/, resource/).")],
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/real"),
    models: Annotated[str, typer.Option(help="Comma-separated presets.")] = ",".join(REAL_MODELS),
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the epochs of every model.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes for alignment and training.")] = 2,
    force: Annotated[
        list[str] | None,
        typer.Option(
            help="Redo this step (repeatable): import, align, train, recognise, context, transfer, boundaries, pronunciation, bundle, enrolment, augmentation."
        ),
    ] = None,
    augmentation: Annotated[
        str | None,
        typer.Option(
            help="Also measure augmentations, comma-separated or 'all' (none, speed, tempo, vtlp, pitch, room, noise, microphone, specaugment, combined); about 4 minutes each."
        ),
    ] = None,
    finetune: Annotated[str | None, typer.Option(help="Also fine-tune the encoder's top N blocks beside the frozen model, e.g. 1,2.")] = None,
    device: Device = "auto",
) -> None:
    """Real children: import and align speechocean762, train the clip models and a phone recogniser, evaluate on its test
    children and adults, measure aligners and reading verdicts, bundle the best model (resumable)."""
    from phonemekit.recipes.augmentation import CONDITIONS
    from phonemekit.recipes.real import run_real
    from phonemekit.torchutil import resolve_device

    conditions = CONDITIONS if augmentation == "all" else tuple(c.strip() for c in (augmentation or "").split(",") if c.strip())
    if unknown := sorted(set(conditions) - set(CONDITIONS)):
        raise typer.BadParameter(f"unknown augmentation {', '.join(unknown)} (known: {', '.join(CONDITIONS)})")
    try:
        layers = tuple(int(n) for n in (finetune or "").split(",") if n.strip())
    except ValueError:
        raise typer.BadParameter(f"--finetune takes block counts such as 1,2 (got {finetune!r})") from None
    t0 = time.perf_counter()
    with progress_bar() as p:
        run_real(src, out, force=set(force or []), models=tuple(m.strip() for m in models.split(",") if m.strip()), epochs=epochs,
                 workers=workers, device=resolve_device(device), augmentation=conditions, finetune=layers, progress=p)  # fmt: skip
    _print_report(out)
    log.info("real-speech recipe finished in %.0f s; report: %s", time.perf_counter() - t0, out / "report.md")


@command()
def phones(
    audio: Annotated[Path, typer.Argument(help="A recording (WAV/FLAC/OGG), up to 30 s.")],
    recogniser: Annotated[Path, typer.Option(help="A phone recogniser's run folder (`make real` trains one: runs/real/recogniser).")] = Path(
        "runs/real/recogniser"
    ),
    text: Annotated[str | None, typer.Option(help="Align these words instead (CTC forced alignment through the CMU dictionary).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The sounds in a recording, with their times: transcribed by a phone recogniser, or aligned to given words."""
    import json as _json

    from phonemekit.align import get_aligner
    from phonemekit.align.base import AlignmentError
    from phonemekit.config import AudioConfig
    from phonemekit.data.audio import load_audio
    from phonemekit.errors import ConfigError
    from phonemekit.runs import Run

    samples = load_audio(audio, AudioConfig(max_seconds=30)).samples
    ctc = get_aligner("ctc", model=Run(recogniser).load(with_encoder=True))
    if text is None:
        out = [{"sound": s, "start": round(a, 3), "end": round(b, 3)} for s, a, b in ctc.transcribe(samples)]
    else:
        try:
            out = [{"word": w.word, "phones": [{"phone": p.phone, "start": round(p.start, 3), "end": round(p.end, 3), "score": round(p.score, 3)}
                    for p in w.phones]} for w in ctc.align(samples, text.split())]  # fmt: skip
        except AlignmentError as e:
            raise ConfigError(f"cannot align {text!r} in this audio: {e}") from None
    if json_out:
        typer.echo(_json.dumps(out, indent=1))
    elif text is None:
        typer.echo(" ".join(x["sound"] for x in out) or "(no sound heard)")
    else:
        for w in out:
            typer.echo(f"{w['word']}: " + " ".join(f"{p['phone']} {p['start']:.2f}-{p['end']:.2f}" for p in w["phones"]))
