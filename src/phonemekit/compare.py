"""Side-by-side comparison of trained models on the same held-out clips:
accuracy with CIs, per-speaker and target-group accuracy, latency, size,
memory, and whether the differences are significant (exact McNemar test
and a paired bootstrap of the top-1 difference)."""

from __future__ import annotations

import logging
import math
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from .evaluate import Predictions, metrics, paired
from .experiment import load_predictions
from .model import load_checkpoint, read_sidecar
from .privacy import private_tmpdir

log = logging.getLogger(__name__)


def _time_ms(fn, n: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1000


def measure_speed(run_dir: Path, threads: int = 2, frames: int = 100) -> dict:
    """Head latency through ONNX Runtime on (1, frames, D) features, end-to-end
    latency for 1 s of audio (the exported e2e file when there is one, else
    torch), size, and the peak RSS of an inference-only process."""
    from .benchmark import _inference_process_rss, _session
    from .export import HeadGraph, _export, _io, max_frames

    model = load_checkpoint(run_dir, with_encoder=True)
    out = {"params": int(sum(p.numel() for p in model.parameters())),
           "head_params": int(sum(p.numel() for p in model.head.parameters())),
           "checkpoint_mb": round((run_dir / "model.safetensors").stat().st_size / 1e6, 2)}
    shape = model.frame_shape()
    with private_tmpdir("phonemekit-cmp-") as d:
        path = d / "head.onnx"
        inputs, outputs, dynamic = _io("head", model.output_kind == "ctc")
        _export(HeadGraph(model), (torch.randn(2, frames, *shape), torch.tensor([frames, frames - 5])), path, inputs, outputs, dynamic,
                max_frames(model))
        sess = _session(path, threads)
        feed = {"features": np.random.default_rng(0).standard_normal((1, frames, *shape)).astype(np.float32), "lengths": np.array([frames])}
        out["head_ms"] = round(_time_ms(lambda: sess.run(["probs"], feed), 100, 10), 3)
    wave = (np.random.default_rng(0).standard_normal((1, 16000)) * 0.1).astype(np.float32)
    e2e = run_dir / "onnx" / f"{model.cfg.name}.e2e.onnx"
    if e2e.exists():
        sess = _session(e2e, threads)
        feed = {"waveform": wave, "lengths": np.array([16000])}
        out["e2e_ms_per_s_audio"] = round(_time_ms(lambda: sess.run(["probs"], feed), 20), 2)
        out["e2e_engine"] = "onnxruntime"
        out["peak_rss_mb"] = _inference_process_rss(e2e, threads, 16000).get("peak_rss_mb")
        out["onnx_mb"] = round(e2e.stat().st_size / 1e6, 2)
    else:
        with torch.no_grad():
            w, n = torch.from_numpy(wave), torch.tensor([16000])
            out["e2e_ms_per_s_audio"] = round(_time_ms(lambda: model.classify_waves(w, n), 10), 2)
        out["e2e_engine"] = "torch"
        out["peak_rss_mb"] = None
    return out


def compare_runs(run_dirs: list[Path], *, groups: dict[str, str] | None = None, target_group: str | None = None, speed: bool = True,
                 threads: int = 2) -> dict:
    runs = {}
    for d in run_dirs:
        side = read_sidecar(d)
        runs[side["config"]["name"]] = (d, side)
    preds: dict[str, Predictions] = {n: load_predictions(d / "predictions.npz", "test", s["labels"]) for n, (d, s) in runs.items()}
    # Align on the clips every model was tested on.
    common = set.intersection(*({r["sha256"] for r in p.rows} for p in preds.values()))
    aligned = {}
    for n, p in preds.items():
        keep = np.array([r["sha256"] in common for r in p.rows])
        sub = p.subset(keep)
        order = np.argsort([r["sha256"] for r in sub.rows])
        aligned[n] = Predictions(sub.scores[order], sub.y[order], [sub.rows[i] for i in order], sub.labels)
    models = {}
    for n, p in aligned.items():
        m = metrics(p, groups)
        entry = {k: m[k] for k in ("n", "top1", "top3", "macro_f1", "top1_ci95", "top1_ci95_speakers", "per_speaker", "per_group")}
        entry["target_top1"] = m["per_group"].get(target_group) if target_group else None
        entry["weights"] = runs[n][1]["weights"]
        if speed:
            entry.update(measure_speed(runs[n][0], threads))
        models[n] = entry
    correct = {n: (p.scores.argmax(1) == p.y).astype(float) for n, p in aligned.items()}
    speakers = np.array([r["speaker"] for r in next(iter(aligned.values())).rows])
    pairs = {f"{a} vs {b}": paired(correct[a], correct[b], speakers) for a, b in combinations(aligned, 2)}
    key = "target_top1" if target_group and all(v["target_top1"] is not None for v in models.values()) else "top1"
    best = max(models, key=lambda k: models[k][key])
    faster = min(models, key=lambda k: models[k].get("e2e_ms_per_s_audio", math.inf)) if speed else None
    return {"clips": len(common), "models": models, "pairs": pairs, "best_model": best, "faster_model": faster, "headline": key}


def _mb(x) -> str:
    return "-" if x is None else f"{x:.0f}"


def markdown(cmp: dict) -> str:
    lines = ["## Comparison (same held-out clips)", "",
             "| model | weights | top-1 (95% CI) | top-3 | target group | params | head ms (1x100 frames, ONNX) | end-to-end ms per 1 s audio | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, m in cmp["models"].items():
        t = "-" if m.get("target_top1") is None else f"{m['target_top1']:.3f}"
        lines.append(f"| {n} | {m['weights']} | {m['top1']:.3f} ({m['top1_ci95'][0]:.3f}-{m['top1_ci95'][1]:.3f}) | {m['top3']:.3f} | {t} | "
                     f"{m.get('params', 0) / 1e6:.2f}M | {m.get('head_ms', float('nan')):.2f} | {m.get('e2e_ms_per_s_audio', float('nan')):.1f} ({m.get('e2e_engine', '-')}) | "
                     f"{_mb(m.get('peak_rss_mb'))} |")
    lines += ["", f"Best model ({cmp['headline']}): **{cmp['best_model']}**; fastest end to end: **{cmp['faster_model']}**.", "",
              "Differences: 95% CI resampling speakers; McNemar's exact test on the clips.", "",
             "| pair | top-1 difference (95% CI) | McNemar p | significant |", "|---|---|---|---|"]
    for pair, s in cmp["pairs"].items():
        lines.append(f"| {pair} | {s['top1_diff']:+.3f} ({s['diff_ci95'][0]:+.3f} to {s['diff_ci95'][1]:+.3f}) | {s['mcnemar_p']:.3g} | {'yes' if s['significant'] else 'no'} |")
    return "\n".join(lines) + "\n"


def compare_into_report(runs, out: Path, *, target_group: str | None = None, speed: bool = True, threads: int = 2) -> dict:
    """Compare runs, write compare.json/.md and add them to OUT/report.json if there is one."""
    out = Path(out)
    from . import plots
    from .data.manifest import load_manifest
    from .experiment import update_report
    from .fileio import write_json, write_text

    data = read_sidecar(runs[0]).get("data")
    groups = load_manifest(data).groups if data else None
    if target_group is None and groups and "child" in groups.values():
        target_group = "child"
    cmp = compare_runs(list(runs), groups=groups, target_group=target_group, speed=speed, threads=threads)
    write_json(out / "compare.json", cmp)
    write_text(out / "compare.md", markdown(cmp))
    if speed:
        names = list(cmp["models"])
        plots.accuracy_vs_latency(names, [cmp["models"][n]["top1"] for n in names], [cmp["models"][n]["e2e_ms_per_s_audio"] for n in names],
                                  out / "figures" / "accuracy-vs-latency.png")
    if (out / "report.json").exists():
        section = markdown(cmp) + ("\n![accuracy vs latency](figures/accuracy-vs-latency.png)\n" if speed else "")
        update_report(out, section=section, comparison=cmp, faster_model=cmp["faster_model"])
    return cmp
