"""Train several models on one split, evaluate them on held-out speakers,
show what a leaky split would have claimed, and write the report's
`train` section (one shape for any number of models, see `build_report`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phonemekit.config import EncoderConfig, ModelConfig
from phonemekit.data.manifest import Manifest
from phonemekit.data.splits import Split, leaky_split, loso_folds, speaker_disjoint
from phonemekit.errors import DataError
from phonemekit.evaluation import calibration
from phonemekit.evaluation.baseline import baseline_name, fit_baseline
from phonemekit.evaluation.calibration import Calibration, fit_calibration
from phonemekit.evaluation.metrics import groups_of, metrics, versus
from phonemekit.evaluation.predict import Predictions, predict
from phonemekit.fileio import folder_lock
from phonemekit.models.encoders import frozen_encoder
from phonemekit.models.encoders.base import EncoderSpec
from phonemekit.models.heads import check_head_options
from phonemekit.privacy import Namer
from phonemekit.report import plots
from phonemekit.report.report import Report
from phonemekit.runs import Run
from phonemekit.scale.engines import LocalEngine
from phonemekit.training.loop import train_model
from phonemekit.training.workers import Jobs

log = logging.getLogger(__name__)


@dataclass
class ModelRun:
    name: str
    cfg: ModelConfig
    run_dir: Path
    test: Predictions
    val: Predictions
    metrics: dict
    train_seconds: float
    history: list[dict]  # one record per epoch; LOSO records carry their fold
    weights: str
    layer_weights: list[float] | None = None  # a learned layer mix, bottom to top
    calibration: Calibration | None = None  # fitted on the validation speakers


def run_one(cfg: ModelConfig, manifest: Manifest, split: Split, run_dir: Path, *, cache_root, device, resume, progress, namer: Namer | None = None,
            engine=None, target_far: float = 0.05) -> ModelRun:
    namer = namer or Namer.of(manifest)
    res = train_model(cfg, manifest, manifest.rows_of(split.train), manifest.rows_of(split.val), run_dir,
                      cache_root=cache_root, device=device, resume=resume, progress=progress, engine=engine)
    test = predict(res.model, manifest, manifest.rows_of(split.test), cache_root=cache_root, device=device)
    val = predict(res.model, manifest, manifest.rows_of(split.val), cache_root=cache_root, device=device)
    run = Run(run_dir)
    run.save_predictions({"test": test, "val": val}, namer)
    # Verdict calibration on the validation speakers; it travels in the checkpoint.
    cal = fit_calibration(val.scores, val.y, val.labels, target_far=target_far)
    run.attach(calibration=cal.to_dict())
    m = metrics(test, manifest.groups)
    run.write_metrics(_named(m, namer))
    mix = res.model.layer_mix.weights() if res.model.layer_mix is not None else None
    return ModelRun(cfg.name, cfg, run_dir, test, val, m, res.seconds, res.history, res.model.spec.weights, mix, cal)


def _named(m: dict, namer: Namer) -> dict:
    """Metrics as written to disk: speakers by pseudonym."""
    return {**m, **{k: namer.keys(m[k]) for k in ("per_speaker", "fold_top1") if k in m}}


def run_leaky(cfg: ModelConfig, manifest: Manifest, run_dir: Path, *, cache_root, device, resume, progress, engine=None) -> float:
    """Same model, same settings, clip-level random split: the number a leaky
    evaluation would have reported."""
    parts = leaky_split(manifest.rows, seed=cfg.train.seed)
    pick = lambda part: [manifest.rows[i] for i in parts[part]]  # noqa: E731
    res = train_model(cfg, manifest, pick("train"), pick("val"), run_dir, cache_root=cache_root, device=device, resume=resume, progress=progress,
                      engine=engine)
    return float(metrics(predict(res.model, manifest, pick("test"), cache_root=cache_root, device=device))["top1"])


def loso_fold_dirs(manifest: Manifest, run_dir: Path, namer: Namer, held_out: list[str] | None) -> list[tuple[Split, Path]]:
    """Leave one speaker out: one fold per speaker (or per `held_out`
    speaker), each with its own run folder. Folders (and the records in
    them) carry the held-out speaker's pseudonym, never the name, even when
    reports show names."""
    return [(fold, run_dir / f"fold-{namer.pseudonym(fold.test[0])}") for fold in loso_folds(manifest.speakers, held_out=held_out)]


def combine_loso(cfg: ModelConfig, manifest: Manifest, run_dir: Path, folds: list[ModelRun], namer: Namer) -> ModelRun:
    """The folds as one model run: every clip predicted by the fold model
    that never heard its speaker."""
    tests, vals = [r.test for r in folds], [r.val for r in folds]
    history = [{"fold": Path(r.run_dir).name.removeprefix("fold-"), **h} for r in folds for h in r.history]
    cat = lambda ps: Predictions(np.concatenate([p.scores for p in ps]), np.concatenate([p.y for p in ps]), sum((p.rows for p in ps), []), ps[0].labels)  # noqa: E731
    test = cat(tests)
    m = metrics(test, manifest.groups)
    m["fold_top1"] = {t.rows[0]["speaker"]: float(np.mean(t.scores.argmax(1) == t.y)) for t in tests}
    run = Run(run_dir)
    run.write_metrics(_named(m, namer))
    run.save_predictions({"test": test, "val": cat(vals)}, namer)
    return ModelRun(cfg.name, cfg, run_dir, test, cat(vals), m, sum(r.train_seconds for r in folds), history, folds[0].weights)


def make_split(manifest: Manifest, kind: str, held_out: list[str] | None = None) -> Split:
    if kind == "speaker-disjoint":
        return speaker_disjoint(manifest.speakers, manifest.groups)
    if kind == "loso":
        sp = tuple(manifest.speakers)
        return Split("loso", sp, sp, tuple(sorted(held_out)) if held_out else sp)
    raise DataError(f"unknown split kind {kind!r} (speaker-disjoint | loso)")


def train_all(manifest: Manifest, models: list[ModelConfig], out: str | Path, *, split_kind: str = "speaker-disjoint",
              leaky: bool | set[str] = True, cache_root: str | Path = "cache", device: str = "cpu", resume: bool = True,
              target_group: str | None = None, show_speakers: bool = False, progress=None, notes: list[str] | None = None,
              loso_group: str | None = None, engine=None, target_far: float = 0.05, workers: int = 1) -> dict:
    """`loso_group` limits leave-one-speaker-out folds to that group's speakers;
    `engine` extracts the frozen encoders' features (`phonemekit.scale`);
    `target_far` is the false-accept rate the verdict thresholds aim at;
    `workers` > 1 trains models, twins, folds and baselines side by side
    in that many processes (`phonemekit.training.workers`).
    OUT is locked for the run: a second training into it is refused."""
    with folder_lock(out, "train"):
        return _train_all(manifest, models, Path(out), split_kind=split_kind, leaky=leaky, cache_root=cache_root, device=device, resume=resume,
                          target_group=target_group, show_speakers=show_speakers, progress=progress, notes=notes, loso_group=loso_group,
                          engine=engine, target_far=target_far, workers=workers)


def _train_all(manifest: Manifest, models: list[ModelConfig], out: Path, *, split_kind, leaky, cache_root, device, resume, target_group,
               show_speakers, progress, notes, loso_group, engine, target_far, workers) -> dict:
    for cfg in models:  # every model's head builds, before the first one trains
        check_head_options(cfg.head)
    namer = Namer.of(manifest, show_speakers)
    held_out = [s for s, g in manifest.groups.items() if g == loso_group] if loso_group else None
    if loso_group and not held_out:
        raise DataError(f"no speakers in group {loso_group!r}")
    split = make_split(manifest, split_kind, held_out)
    # Each frozen encoder's features, once, before any worker reads them
    # (workers then only read the cache; none extracts beside another).
    specs = extract_features(manifest, models, cache_root, device=device, progress=progress, engine=engine)
    with Jobs(workers) as jobs:
        inline = jobs.workers == 1
        kw = dict(cache_root=cache_root, device=device, resume=resume, progress=progress if inline else None, engine=engine if inline else None)
        main, twins = {}, {}
        for cfg in models:
            run_dir = out / "models" / cfg.name
            log.info("training %s (%s %s + %s head, %s split)", cfg.name, cfg.encoder.family, cfg.encoder.source, cfg.head.kind, split_kind)
            if split_kind == "loso":
                fold_namer = Namer(show=False, salt=namer.salt)
                main[cfg.name] = [jobs.submit(run_one, cfg, manifest, fold, d, **kw, namer=fold_namer)
                                  for fold, d in loso_fold_dirs(manifest, run_dir, namer, held_out)]
            else:
                main[cfg.name] = [jobs.submit(run_one, cfg, manifest, split, run_dir, **kw, namer=namer, target_far=target_far)]
            if leaky is True or (isinstance(leaky, set) and cfg.name in leaky):
                twins[cfg.name] = jobs.submit(run_leaky, cfg, manifest, out / "models" / f"{cfg.name}-leaky", **kw)
        base_jobs = {name: jobs.submit(fit_baseline_on, manifest, name, enc, spec, cache_root, split) for name, (enc, spec) in specs.items()} \
            if split_kind != "loso" else {}
        task = progress.add_task("training (workers)", total=sum(map(len, main.values())) + len(twins) + len(base_jobs)) \
            if progress and not inline else None
        runs: list[ModelRun] = []
        leaky_top1: dict[str, float | None] = {}
        for cfg in models:
            done = [_result(f, progress, task) for f in main[cfg.name]]
            run = combine_loso(cfg, manifest, out / "models" / cfg.name, done, namer) if split_kind == "loso" else done[0]
            runs.append(run)
            leaky_top1[cfg.name] = _result(twins[cfg.name], progress, task) if cfg.name in twins else None
            log.info("%s: held-out top-1 %.3f (95%% CI %.3f-%.3f)%s, %.0f s of training", cfg.name, run.metrics["top1"], *run.metrics["top1_ci95"],
                     "" if leaky_top1[cfg.name] is None else f", leaky split would claim {leaky_top1[cfg.name]:.3f}", run.train_seconds)
        baselines = {name: _result(f, progress, task) for name, f in base_jobs.items()}
        if task is not None:
            progress.remove_task(task)
    section = build_report(manifest, split, runs, leaky_top1, target_group=target_group, namer=namer, notes=notes, baselines=baselines)
    draw_figures(section, runs, manifest, out)
    Report.open(out).set("train", section).save()
    return section


def _result(fut, progress, task):
    res = fut.result()
    if task is not None:
        progress.advance(task)
    return res


def extract_features(manifest: Manifest, models: list[ModelConfig], cache_root, *, device: str = "cpu", progress=None, engine=None) -> dict:
    """Cache every clip's features for each frozen encoder among `models`;
    returns {baseline name: (encoder config, spec)} for the baselines."""
    specs = {}
    for cfg in models:
        name = baseline_name(cfg.encoder)
        if cfg.train.finetune_layers or name in specs:
            continue
        encoder = frozen_encoder(cfg.encoder)
        (engine or LocalEngine()).extract(manifest, encoder, cache_root, audio_cfg=cfg.audio, progress=progress, device=device)
        specs[name] = (cfg.encoder, encoder.spec)
    return specs


def fit_baseline_on(manifest: Manifest, name: str, encoder: EncoderConfig, spec: EncoderSpec, cache_root, split: Split) -> tuple[dict, Predictions]:
    """A logistic-regression baseline on one frozen encoder's cached
    features, on the models' split: (report entry, test predictions)."""
    t0 = time.perf_counter()
    base = fit_baseline(manifest, spec, cache_root, manifest.rows_of(split.train), manifest.rows_of(split.val))
    preds = base.predict(cache_root, manifest.rows_of(split.test))
    m = metrics(preds, manifest.groups)
    log.info("%s: held-out top-1 %.3f (C=%g, %.0f s)", name, m["top1"], base.C, time.perf_counter() - t0)
    return ({"encoder": {"family": encoder.family, "source": encoder.source, "layer": encoder.layer}, "weights": spec.weights, "C": base.C,
             **{k: m[k] for k in ("top1", "top3", "macro_f1", "top1_ci95", "top1_ci95_speakers", "per_group")}}, preds)


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
        plots.model_bars(names, [section["models"][n]["top1"] for n in names], [section["models"][n]["top1_ci95"] for n in names],
                         figs / "models.png", leaky=[section["models"][n]["leaky_top1"] for n in names])


def held_out_rows(manifest: Manifest, section: dict) -> list[dict]:
    """The manifest's clips of a `train` section's test speakers, whether it
    names them by pseudonym (the default) or plainly (--show-speakers)."""
    held = set(section["split"]["test_speakers"])
    namer = Namer.of(manifest)
    return [r for r in manifest.rows if r["speaker"] in held or namer(r["speaker"]) in held]
