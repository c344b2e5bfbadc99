"""The report's `train` section: one shape for any number of models (each
beside its baseline, with speaker-level intervals and significance), and
the figures it shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phonemekit.data.manifest import Manifest
from phonemekit.data.splits import Split
from phonemekit.evaluation import calibration
from phonemekit.evaluation.baseline import baseline_name
from phonemekit.evaluation.metrics import group_top1, groups_of, versus
from phonemekit.evaluation.predict import Predictions
from phonemekit.privacy import Namer
from phonemekit.report import plots
from phonemekit.training.results import ModelRun


def build_report(
    manifest: Manifest,
    split: Split,
    runs: list[ModelRun],
    leaky_top1: dict,
    *,
    target_group: str | None,
    namer: Namer,
    notes: list[str] | None = None,
    baselines: dict[str, tuple[dict, Predictions]] | None = None,
) -> dict:
    groups = set(manifest.groups.values())
    if target_group is None and "child" in groups:
        target_group = "child"
    baselines = baselines or {}
    models = {}
    for r in runs:
        m = r.metrics
        models[r.name] = {
            "encoder": {"family": r.cfg.encoder.family, "source": r.cfg.encoder.source, "layer": r.cfg.encoder.layer, "view": r.cfg.encoder.view},
            "weights": r.weights,
            "head": r.cfg.head.kind,
            "trained": "end-to-end" if r.cfg.train.finetune_layers else "frozen encoder, cached features",
            "top1": m["top1"],
            "top3": m["top3"],
            "macro_f1": m["macro_f1"],
            "top1_ci95": m["top1_ci95"],
            "top1_ci95_speakers": m["top1_ci95_speakers"],
            "leaky_top1": leaky_top1.get(r.name),
            "per_speaker": namer.keys(m["per_speaker"]),
            "per_group": m["per_group"],
            "target_top1": group_top1(m["per_group"], target_group),
            # What a game asks ("I asked for /s/; did the child say it?"):
            # calibrated accept/reject at the operating point fitted on val.
            "verdict": _verdict(r, manifest) if r.calibration else None,
            "per_class": m["per_class"],
            "confused_pairs": m["confused_pairs"][:8],
            "epochs": len(r.history),
            "train_seconds": round(r.train_seconds, 1),
            "checkpoint": str(r.run_dir),
        }
        if "fold_top1" in m:
            models[r.name]["fold_top1"] = namer.keys(m["fold_top1"])
        base = baseline_name(r.cfg.encoder)
        if base in baselines:
            models[r.name]["baseline"] = base
            models[r.name]["vs_baseline"] = versus(r.test, baselines[base][1])
        if r.layer_weights:
            models[r.name]["layer_weights"] = r.layer_weights
    key = "target_top1" if target_group and all(v["target_top1"] is not None for v in models.values()) else "top1"
    # The best model is one a game can use: a clip heard alone (the utterance view needs the sentence around the sound).
    usable = [r.name for r in runs if r.cfg.encoder.view == "clip"] or list(models)
    best = max(usable, key=lambda k: models[k][key]) if models else None
    frozen = [r for r in runs if not r.cfg.train.finetune_layers]
    # Same head on a learned encoder vs on log-mel features, and the heads
    # ranked on each encoder: the two questions the comparison exists for.
    encoder_vs_logmel = [
        {"head": a.cfg.head.kind, "model": a.name, "logmel_model": b.name, **versus(a.test, b.test)}
        for a in frozen
        if a.cfg.encoder.family != "fbank"
        for b in frozen
        if b.cfg.encoder.family == "fbank" and b.cfg.head == a.cfg.head
    ]
    heads = {}
    for family in dict.fromkeys(r.cfg.encoder.family for r in frozen):
        same = sorted((r for r in frozen if r.cfg.encoder.family == family), key=lambda r: -r.metrics["top1"])
        if len(same) > 1:
            heads[family] = {"best": same[0].name, "vs": {r.name: versus(same[0].test, r.test) for r in same[1:]}}
    sd = split.to_dict()
    sd = {k: ([namer(s) for s in v] if isinstance(v, list) else v) for k, v in sd.items()}
    return {
        "split": sd,
        "labels": manifest.labels,
        "target_group": target_group,
        "headline": key,
        "models": models,
        "baselines": {name: {**entry, "target_top1": group_top1(entry["per_group"], target_group)} for name, (entry, _) in baselines.items()},
        "best_model": best,
        "encoder_vs_logmel": encoder_vs_logmel,
        "heads_by_encoder": heads,
        "notes": notes or [],
    }


def _verdict(r: ModelRun, manifest: Manifest) -> dict:
    return calibration.summary(r.calibration, r.val.scores, r.val.y, r.test.scores, r.test.y, r.test.labels, groups_of(r.test.rows, manifest.groups))


def draw_figures(section: dict, runs: list[ModelRun], manifest: Manifest, out: Path) -> None:
    """Confusion matrices, training curves and the model bars the `train` section shows."""
    figs = out / "figures"
    for r in runs:
        plots.confusion(np.array(r.metrics["confusion"]), manifest.labels, figs / f"confusion-{r.name}.png", f"{r.name}: held-out speakers")
        if r.history:
            plots.curves(r.history, figs / f"curves-{r.name}.png", r.name)
        v = section["models"].get(r.name, {}).get("verdict")
        if v:
            plots.reliability(v["reliability"], figs / f"reliability-{r.name}.png", f"{r.name}: held-out speakers, T={v['temperature']:.2f}")
    with_verdict = {n: m["verdict"] for n, m in section["models"].items() if m.get("verdict")}
    if with_verdict:
        plots.det(with_verdict, figs / "det.png")
    names = list(section["models"])
    if names:
        plots.model_bars(
            names,
            [section["models"][n]["top1"] for n in names],
            [section["models"][n]["top1_ci95"] for n in names],
            figs / "models.png",
            leaky=[section["models"][n]["leaky_top1"] for n in names],
        )


def held_out_rows(manifest: Manifest, section: dict) -> list[dict]:
    """The manifest's clips of a `train` section's test speakers, whether it
    names them by pseudonym (the default) or plainly (--show-speakers)."""
    held = set(section["split"]["test_speakers"])
    namer = Namer.of(manifest)
    return [r for r in manifest.rows if r["speaker"] in held or namer(r["speaker"]) in held]
