"""Train several models on one split, evaluate them on held-out speakers,
show what a leaky split would have claimed, and write the report.

`report.json` has one shape for any number of models (see `build_report`);
`report.md` embeds the plots.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import plots
from .baseline import baseline_name, fit_baseline
from .config import ModelConfig
from .data.manifest import Manifest
from .data.splits import Split, leaky_split, loso_folds, speaker_disjoint
from .encoders import EncoderSpec
from .errors import DataError
from .evaluate import Predictions, metrics, paired, predict
from .fileio import atomic_open, read_json, write_json, write_text
from .model import read_sidecar
from .privacy import Namer
from .train import train_model

log = logging.getLogger(__name__)


def save_predictions(path: Path, preds: dict[str, Predictions], namer: Namer | None = None) -> None:
    """Scores per held-out clip. Speakers are stored as pseudonyms (with their
    group), so run folders can be shared without naming anyone."""
    namer = namer or Namer()
    arrays = {}
    for part, p in preds.items():
        arrays[f"{part}_scores"] = p.scores.astype(np.float32)
        arrays[f"{part}_y"] = p.y
        arrays[f"{part}_sha256"] = np.array([r["sha256"] for r in p.rows])
        arrays[f"{part}_speaker"] = np.array([namer(r["speaker"]) for r in p.rows])
        arrays[f"{part}_group"] = np.array([r.get("group", "unknown") for r in p.rows])
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def load_predictions(path: Path, part: str, labels: list[str]) -> Predictions:
    z = np.load(path, allow_pickle=False)
    rows = [{"sha256": s, "speaker": k, "group": g} for s, k, g in zip(z[f"{part}_sha256"], z[f"{part}_speaker"], z[f"{part}_group"])]
    return Predictions(z[f"{part}_scores"], z[f"{part}_y"], rows, labels)


@dataclass
class ModelRun:
    name: str
    cfg: ModelConfig
    run_dir: Path
    test: Predictions
    val: Predictions
    metrics: dict
    train_seconds: float
    history: list[dict]
    weights: str
    layer_weights: list[float] | None = None  # a learned layer mix, bottom to top


def rows_of(manifest: Manifest, speakers) -> list[dict]:
    keep = set(speakers)
    return [r for r in manifest.rows if r["speaker"] in keep]


def run_one(cfg: ModelConfig, manifest: Manifest, split: Split, run_dir: Path, *, cache_root, device, resume, progress, namer: Namer | None = None) -> ModelRun:
    res = train_model(cfg, manifest, rows_of(manifest, split.train), rows_of(manifest, split.val), run_dir,
                      cache_root=cache_root, device=device, resume=resume, progress=progress)
    test = predict(res.model, manifest, rows_of(manifest, split.test), cache_root=cache_root, device=device)
    val = predict(res.model, manifest, rows_of(manifest, split.val), cache_root=cache_root, device=device)
    save_predictions(run_dir / "predictions.npz", {"test": test, "val": val}, namer)
    m = metrics(test, manifest.groups)
    write_json(run_dir / "metrics.json", _named(m, namer or Namer()))
    mix = res.model.layer_mix.weights() if res.model.layer_mix is not None else None
    return ModelRun(cfg.name, cfg, run_dir, test, val, m, res.seconds, res.history, res.model.spec.weights, mix)


def _named(m: dict, namer: Namer) -> dict:
    """Metrics as written to disk: speakers by pseudonym."""
    return {**m, **{k: namer.keys(m[k]) for k in ("per_speaker", "fold_top1") if k in m}}


def run_leaky(cfg: ModelConfig, manifest: Manifest, run_dir: Path, *, cache_root, device, resume, progress) -> float:
    """Same model, same settings, clip-level random split: the number a leaky
    evaluation would have reported."""
    parts = leaky_split(manifest.rows, seed=cfg.train.seed)
    pick = lambda part: [manifest.rows[i] for i in parts[part]]  # noqa: E731
    res = train_model(cfg, manifest, pick("train"), pick("val"), run_dir, cache_root=cache_root, device=device, resume=resume, progress=progress)
    return float(metrics(predict(res.model, manifest, pick("test"), cache_root=cache_root, device=device))["top1"])


def run_loso(cfg: ModelConfig, manifest: Manifest, run_dir: Path, *, cache_root, device, resume, progress, namer: Namer | None = None,
             held_out: list[str] | None = None) -> ModelRun:
    """Leave one speaker out: one model per fold; every clip is predicted by
    the model that never heard its speaker. `held_out` limits the folds
    (e.g. to the target group)."""
    tests, vals, seconds, history = [], [], 0.0, []
    for fold in loso_folds(manifest.speakers, held_out=held_out):
        r = run_one(cfg, manifest, fold, run_dir / f"fold-{fold.name}", cache_root=cache_root, device=device, resume=resume, progress=progress, namer=namer)
        tests.append(r.test)
        vals.append(r.val)
        seconds += r.train_seconds
        history = r.history
    cat = lambda ps: Predictions(np.concatenate([p.scores for p in ps]), np.concatenate([p.y for p in ps]), sum((p.rows for p in ps), []), ps[0].labels)  # noqa: E731
    test = cat(tests)
    m = metrics(test, manifest.groups)
    m["fold_top1"] = {t.rows[0]["speaker"]: float(np.mean(t.scores.argmax(1) == t.y)) for t in tests}
    write_json(run_dir / "metrics.json", _named(m, namer or Namer()))
    save_predictions(run_dir / "predictions.npz", {"test": test, "val": cat(vals)}, namer)
    return ModelRun(cfg.name, cfg, run_dir, test, cat(vals), m, seconds, history, r.weights)


def make_split(manifest: Manifest, kind: str, held_out: list[str] | None = None) -> Split:
    if kind == "speaker-disjoint":
        return speaker_disjoint(manifest.speakers, manifest.groups)
    if kind == "loso":
        sp = tuple(manifest.speakers)
        return Split("loso", sp, sp, tuple(sorted(held_out)) if held_out else sp)
    raise ValueError(f"unknown split kind {kind!r}")


def train_all(manifest: Manifest, models: list[ModelConfig], out: str | Path, *, split_kind: str = "speaker-disjoint",
              leaky: bool | set[str] = True, cache_root: str | Path = "cache", device: str = "cpu", resume: bool = True,
              target_group: str | None = None, show_speakers: bool = False, progress=None, notes: list[str] | None = None,
              loso_group: str | None = None) -> dict:
    """`loso_group` limits leave-one-speaker-out folds to that group's speakers."""
    out = Path(out)
    namer = Namer(show_speakers)
    held_out = [s for s, g in manifest.groups.items() if g == loso_group] if loso_group else None
    if loso_group and not held_out:
        raise DataError(f"no speakers in group {loso_group!r}")
    split = make_split(manifest, split_kind, held_out)
    runs: list[ModelRun] = []
    leaky_top1: dict[str, float | None] = {}
    for cfg in models:
        t0 = time.perf_counter()
        run_dir = out / "models" / cfg.name
        log.info("training %s (%s %s + %s head, %s split)", cfg.name, cfg.encoder.family, cfg.encoder.source, cfg.head.kind, split_kind)
        kw = dict(cache_root=cache_root, device=device, resume=resume, progress=progress)
        run = (run_loso(cfg, manifest, run_dir, **kw, namer=namer, held_out=held_out) if split_kind == "loso"
               else run_one(cfg, manifest, split, run_dir, **kw, namer=namer))
        runs.append(run)
        if leaky is True or (isinstance(leaky, set) and cfg.name in leaky):
            leaky_top1[cfg.name] = run_leaky(cfg, manifest, out / "models" / f"{cfg.name}-leaky", **kw)
        else:
            leaky_top1[cfg.name] = None
        log.info("%s: held-out top-1 %.3f (95%% CI %.3f-%.3f)%s in %.0f s", cfg.name, run.metrics["top1"], *run.metrics["top1_ci95"],
                 "" if leaky_top1[cfg.name] is None else f", leaky split would claim {leaky_top1[cfg.name]:.3f}", time.perf_counter() - t0)
    baselines = fit_baselines(manifest, split, runs, cache_root) if split_kind != "loso" else {}
    report = build_report(manifest, split, runs, leaky_top1, target_group=target_group, namer=namer, notes=notes, baselines=baselines)
    write_report(report, runs, manifest, out)
    return report


def fit_baselines(manifest: Manifest, split: Split, runs: list[ModelRun], cache_root) -> dict[str, tuple[dict, Predictions]]:
    """One logistic-regression baseline per frozen encoder among the runs,
    on the same split and the same cached features."""
    out: dict[str, tuple[dict, Predictions]] = {}
    for r in runs:
        name = baseline_name(r.cfg.encoder)
        if r.cfg.train.finetune_layers or name in out:
            continue
        spec = EncoderSpec(**read_sidecar(r.run_dir)["encoder_spec"])
        t0 = time.perf_counter()
        base = fit_baseline(manifest, spec, cache_root, rows_of(manifest, split.train), rows_of(manifest, split.val))
        preds = base.predict(cache_root, rows_of(manifest, split.test))
        m = metrics(preds, manifest.groups)
        log.info("%s: held-out top-1 %.3f (C=%g, %.0f s)", name, m["top1"], base.C, time.perf_counter() - t0)
        out[name] = ({"encoder": {"family": r.cfg.encoder.family, "source": r.cfg.encoder.source, "layer": r.cfg.encoder.layer},
                      "weights": spec.weights, "C": base.C, **{k: m[k] for k in ("top1", "top3", "macro_f1", "top1_ci95", "top1_ci95_speakers", "per_group")}},
                     preds)
    return out


def versus(a: Predictions, b: Predictions) -> dict:
    """Paired comparison of two prediction sets on their common clips."""
    common = {r["sha256"] for r in a.rows} & {r["sha256"] for r in b.rows}
    def hits(p: Predictions) -> tuple[np.ndarray, np.ndarray]:
        order = sorted((r["sha256"], i) for i, r in enumerate(p.rows) if r["sha256"] in common)
        idx = np.array([i for _, i in order])
        return (p.scores[idx].argmax(1) == p.y[idx]).astype(float), np.array([p.rows[i]["speaker"] for i in idx])
    (ha, speakers), (hb, _) = hits(a), hits(b)
    return paired(ha, hb, speakers)


def build_report(manifest: Manifest, split: Split, runs: list[ModelRun], leaky_top1: dict, *, target_group: str | None,
                 namer: Namer, notes: list[str] | None = None, baselines: dict[str, tuple[dict, Predictions]] | None = None) -> dict:
    groups = set(manifest.groups.values())
    if target_group is None and "child" in groups:
        target_group = "child"
    baselines = baselines or {}
    models = {}
    for r in runs:
        m = r.metrics
        models[r.name] = {
            "encoder": {"family": r.cfg.encoder.family, "source": r.cfg.encoder.source, "layer": r.cfg.encoder.layer},
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
            "target_top1": m["per_group"].get(target_group) if target_group else None,
            "known_target": m["known_target"],
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
    best = max(models, key=lambda k: models[k][key]) if models else None
    frozen = [r for r in runs if not r.cfg.train.finetune_layers]
    # Same head on a learned encoder vs on log-mel features, and the heads
    # ranked on each encoder: the two questions the comparison exists for.
    encoder_vs_logmel = [{"head": a.cfg.head.kind, "model": a.name, "logmel_model": b.name, **versus(a.test, b.test)}
                         for a in frozen if a.cfg.encoder.family != "fbank"
                         for b in frozen if b.cfg.encoder.family == "fbank" and b.cfg.head == a.cfg.head]
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
        "baselines": {name: {**entry, "target_top1": entry["per_group"].get(target_group) if target_group else None}
                      for name, (entry, _) in baselines.items()},
        "best_model": best,
        "encoder_vs_logmel": encoder_vs_logmel,
        "heads_by_encoder": heads,
        "notes": notes or [],
    }


def write_report(report: dict, runs: list[ModelRun], manifest: Manifest, out: Path) -> None:
    figs = out / "figures"
    for r in runs:
        plots.confusion(np.array(r.metrics["confusion"]), manifest.labels, figs / f"confusion-{r.name}.png", f"{r.name}: held-out speakers")
        if r.history:
            plots.curves(r.history, figs / f"curves-{r.name}.png", r.name)
    names = list(report["models"])
    if names:
        plots.model_bars(names, [report["models"][n]["top1"] for n in names], [report["models"][n]["top1_ci95"] for n in names],
                         figs / "models.png", leaky=[report["models"][n]["leaky_top1"] for n in names])
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report, out))


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(ci, signed: bool = False) -> str:
    if not ci or any(v != v for v in ci):  # absent or NaN (fewer than two speakers)
        return "n/a"
    f = (lambda v: f"{100 * v:+.1f}") if signed else (lambda v: f"{100 * v:.1f}")
    return f"{f(ci[0])} to {f(ci[1])}"


def render_markdown(report: dict, out: Path) -> str:
    sp = report["split"]
    lines = ["# phonemekit report", ""]
    lines += [f"Split: **{sp['kind']}**. Test speakers (never seen in training): {', '.join(sp['test_speakers'])}.", ""]
    if report["target_group"]:
        lines += [f"Target group: **{report['target_group']}** (reported on its own; it decides the best model).", ""]
    lines += ["Top-1 on the held-out speakers with two 95% intervals: resampling clips, and resampling speakers (the honest one: "
              "a speaker's clips are not independent, and there are few speakers). Against the baseline: the top-1 difference to a "
              "logistic regression on the same encoder's standardised pooled features, same split, with McNemar's exact p.", ""]
    lines += ["| model | encoder | weights | head | trained | top-1 | CI clips | CI speakers | top-3 | macro-F1 | target group | vs baseline (p) | leaky split | epochs | train s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in report["models"].items():
        enc = f"{m['encoder']['family']} `{m['encoder']['source']}`" + ("" if m["encoder"].get("layer", -1) == -1 else f" layer {m['encoder']['layer']}")
        vs = m.get("vs_baseline")
        vs = "-" if vs is None else f"{100 * vs['top1_diff']:+.1f} ({vs['mcnemar_p']:.2g})"
        lines.append(f"| {name} | {enc} | {m['weights']} | {m['head']} | {m['trained']} | {_pct(m['top1'])} | {_ci(m['top1_ci95'])} | "
                     f"{_ci(m.get('top1_ci95_speakers'))} | {_pct(m['top3'])} | {m['macro_f1']:.3f} | {_pct(m['target_top1'])} | {vs} | "
                     f"{_pct(m['leaky_top1'])} | {m['epochs']} | {m['train_seconds']:.0f} |")
    lines += ["", f"Best model (by {report['headline']}): **{report['best_model']}**", ""]
    if report.get("baselines"):
        lines += ["## Baselines (scikit-learn logistic regression, standardised mean+std pooled features, C chosen on validation)", "",
                  "| baseline | weights | C | top-1 | CI clips | CI speakers | top-3 | target group |", "|---|---|---|---|---|---|---|---|"]
        for name, b in report["baselines"].items():
            lines.append(f"| {name} | {b['weights']} | {b['C']:g} | {_pct(b['top1'])} | {_ci(b['top1_ci95'])} | {_ci(b['top1_ci95_speakers'])} | "
                         f"{_pct(b['top3'])} | {_pct(b.get('target_top1'))} |")
        lines.append("")
    if report.get("encoder_vs_logmel"):
        lines += ["## Learned encoder vs log-mel, head by head", "",
                  "| head | model | log-mel model | top-1 difference | CI speakers | McNemar p |", "|---|---|---|---|---|---|"]
        for e in report["encoder_vs_logmel"]:
            lines.append(f"| {e['head']} | {e['model']} | {e['logmel_model']} | {100 * e['top1_diff']:+.1f} points | "
                         f"{_ci(e['diff_ci95'], signed=True)} | {e['mcnemar_p']:.2g} |")
        lines.append("")
    for family, h in report.get("heads_by_encoder", {}).items():
        lines += [f"Heads on {family}: best **{h['best']}**; " + "; ".join(
            f"vs {other}: {100 * v['top1_diff']:+.1f} points (p = {v['mcnemar_p']:.2g})" for other, v in h["vs"].items()), ""]
    for name, m in report["models"].items():
        if m.get("layer_weights"):
            lines += [f"Learned layer weights of {name} (embeddings, then layer 1 up): " + ", ".join(f"{w:.2f}" for w in m["layer_weights"]), ""]
    gaps = [(n, m["leaky_top1"] - m["top1"]) for n, m in report["models"].items() if m["leaky_top1"] is not None]
    if gaps:
        lines += ["## Why the split matters", "",
                  "The leaky column trains the same model with the same settings on a random clip-level split, "
                  "where other takes of the test speakers are in training. It is what a careless evaluation would report:", ""]
        lines += [f"- {n}: leaky {_pct(report['models'][n]['leaky_top1'])} vs honest {_pct(report['models'][n]['top1'])} "
                  f"(overstated by {100 * g:.1f} points)" for n, g in gaps]
        lines.append("")
    if any(m["weights"] == "random" for m in report["models"].values()):
        lines += ["Models marked `random` use randomly initialised encoders (no pretrained weights were given), "
                  "so their numbers say nothing about what pretrained wav2vec2 or WavLM features achieve.", ""]
    for note in report.get("notes", []):
        lines += [f"Note: {note}", ""]
    lines += ["![models](figures/models.png)", ""]
    for name, m in report["models"].items():
        lines += [f"## {name}", "", f"Known-target (the game knows which sound it asked for): top-1 {_pct(m['known_target']['top1'])}, "
                  f"top-3 {_pct(m['known_target']['top3'])}, mean rank {m['known_target']['mean_rank']:.2f}, "
                  f"mean margin {m['known_target']['mean_margin']:+.3f}.", ""]
        lines += ["Per speaker: " + ", ".join(f"{s} {_pct(v)}" for s, v in m["per_speaker"].items()), ""]
        lines += ["Per group: " + ", ".join(f"{g} {_pct(v)}" for g, v in m["per_group"].items()), ""]
        if m["confused_pairs"]:
            lines += ["Most confused: " + ", ".join(f"{c['true']} -> {c['predicted']} ({c['count']})" for c in m["confused_pairs"]), ""]
        lines += [f"![confusion {name}](figures/confusion-{name}.png)", ""]
        if (out / "figures" / f"curves-{name}.png").exists():
            lines += [f"![curves {name}](figures/curves-{name}.png)", ""]
    for section in report.get("sections", []):
        lines += [section, ""]
    return "\n".join(lines)


def load_report(out: str | Path) -> dict:
    return read_json(Path(out) / "report.json")


def update_report(out: str | Path, section: str | None = None, **keys) -> dict:
    """Add results (comparison, ensembles, ...) to an existing report."""
    out = Path(out)
    report = load_report(out)
    report.update(keys)
    if section:
        title = section.splitlines()[0]
        report["sections"] = [s for s in report.get("sections", []) if s.splitlines()[0] != title] + [section]
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report, out))
    return report


def held_out_rows(manifest: Manifest, report: dict) -> list[dict]:
    """The manifest's clips of a report's test speakers, whether the report
    names them by pseudonym (the default) or plainly (--show-speakers)."""
    held = set(report["split"]["test_speakers"])
    namer = Namer()
    return [r for r in manifest.rows if r["speaker"] in held or namer(r["speaker"]) in held]


def embedding_maps(out: str | Path, manifest: Manifest, run_dirs: list[Path], *, cache_root: str | Path = "cache", device: str = "cpu") -> dict:
    """A 2-D map of each model's pooled encoder features on the held-out
    clips, coloured by label; added to the report."""
    from .evaluate import pooled_embeddings
    from .model import load_checkpoint

    out = Path(out)
    rows = held_out_rows(manifest, load_report(out))
    lines, maps = ["## Embedding maps (held-out clips, pooled encoder features)", ""], {}
    for run in run_dirs:
        model = load_checkpoint(run, with_encoder=True)
        emb, y = pooled_embeddings(model, manifest, rows, cache_root=cache_root, device=device)
        path = plots.embedding_map(emb, y, manifest.labels, out / "figures" / f"embedding-{run.name}.png", run.name)
        maps[run.name] = str(path.relative_to(out))
        lines += [f"![embedding map {run.name}]({maps[run.name]})", ""]
    update_report(out, section="\n".join(lines), embedding_maps=maps)
    return maps
