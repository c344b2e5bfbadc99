"""Side-by-side comparison of trained models on the same held-out clips:
accuracy with CIs, per-speaker and target-group accuracy, latency, size,
memory, and whether the differences are significant (exact McNemar test
and a speaker-resampled CI of the top-1 difference)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import numpy as np

from phonemekit.data.manifest import load_manifest
from phonemekit.evaluation.metrics import align, correct, group_top1, metrics, paired
from phonemekit.fileio import write_json, write_text
from phonemekit.report import plots
from phonemekit.report.report import REPORT_JSON, Report, render
from phonemekit.runs import Run
from phonemekit.runs import runs as as_runs

log = logging.getLogger(__name__)


SpeedOf = Callable[[Run], dict]  # latency, size and memory of a run (`phonemekit.deploy.speed.measure_speed`)


def compare_runs(runs: list[Run], *, groups: dict[str, str] | None = None, target_group: str | None = None, speed_of: SpeedOf | None = None) -> dict:
    """Accuracy of each run on the clips all of them were tested on, their
    paired differences, and (with `speed_of`) their speed."""
    by_name = {r.name: r for r in runs}
    # Align on the clips every model was tested on.
    aligned = dict(zip(by_name, align([r.predictions("test") for r in by_name.values()])))
    models = {}
    for n, p in aligned.items():
        m = metrics(p, groups)
        entry = {k: m[k] for k in ("n", "top1", "top3", "macro_f1", "top1_ci95", "top1_ci95_speakers", "per_speaker", "per_group")}
        entry["target_top1"] = group_top1(m["per_group"], target_group)
        entry["weights"] = by_name[n].weights
        if speed_of:
            entry.update(speed_of(by_name[n]))
        models[n] = entry
    hits = {n: correct(p) for n, p in aligned.items()}
    speakers = np.array([r["speaker"] for r in next(iter(aligned.values())).rows])
    pairs = {f"{a} vs {b}": paired(hits[a], hits[b], speakers) for a, b in combinations(aligned, 2)}
    key = "target_top1" if target_group and all(v["target_top1"] is not None for v in models.values()) else "top1"
    best = max(models, key=lambda k: models[k][key])
    faster = min(models, key=lambda k: models[k].get("e2e_ms_per_s_audio", math.inf)) if speed_of else None
    return {"clips": len(speakers), "models": models, "pairs": pairs, "best_model": best, "faster_model": faster, "headline": key}


def compare_into_report(run_dirs, out: Path, *, target_group: str | None = None, speed_of: SpeedOf | None = None) -> dict:
    """Compare runs, write compare.json and compare.md, and set the report's
    `comparison` section when OUT holds a report."""
    out = Path(out)
    runs = as_runs(run_dirs)
    groups = load_manifest(runs[0].data).groups if runs[0].data else None
    if target_group is None and groups and "child" in groups.values():
        target_group = "child"
    cmp = compare_runs(runs, groups=groups, target_group=target_group, speed_of=speed_of)
    if speed_of:
        names = list(cmp["models"])
        figure = plots.accuracy_vs_latency(
            names,
            [cmp["models"][n]["top1"] for n in names],
            [cmp["models"][n]["e2e_ms_per_s_audio"] for n in names],
            out / "figures" / "accuracy-vs-latency.png",
        )
        cmp["figure"] = str(figure.relative_to(out))
    write_json(out / "compare.json", cmp)
    write_text(out / "compare.md", render("comparison", cmp, out))
    if (out / REPORT_JSON).exists():
        Report.load(out).set("comparison", cmp).save()
    return cmp
