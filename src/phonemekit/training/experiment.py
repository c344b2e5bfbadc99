"""Train several models on one split, evaluate them on held-out speakers,
show what a leaky split would have claimed, and write the report's
`train` section (one shape for any number of models, see `build_report`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from phonemekit.config import EncoderConfig, ModelConfig
from phonemekit.data.manifest import Manifest
from phonemekit.data.splits import Split, corpus_split, leaky_split, loso_folds, speaker_disjoint
from phonemekit.errors import DataError
from phonemekit.evaluation.baseline import baseline_name, fit_baseline
from phonemekit.evaluation.calibration import fit_calibration
from phonemekit.evaluation.metrics import metrics
from phonemekit.evaluation.predict import Predictions, predict
from phonemekit.fileio import folder_lock
from phonemekit.models.encoders import frozen_encoder
from phonemekit.models.encoders.base import EncoderSpec
from phonemekit.models.heads import check_head_options
from phonemekit.privacy import Namer
from phonemekit.report.report import Report
from phonemekit.runs import Run
from phonemekit.scale.engines import LocalEngine
from phonemekit.training.loop import train_model
from phonemekit.training.loso import combine_loso, loso_fold_dirs, pool_baseline
from phonemekit.training.results import ModelRun, _named
from phonemekit.training.summary import build_report, draw_figures
from phonemekit.training.workers import Jobs

log = logging.getLogger(__name__)


def run_one(
    cfg: ModelConfig,
    manifest: Manifest,
    split: Split,
    run_dir: Path,
    *,
    cache_root,
    device,
    resume,
    progress,
    namer: Namer | None = None,
    engine=None,
    target_far: float = 0.05,
) -> ModelRun:
    namer = namer or Namer.of(manifest)
    res = train_model(
        cfg,
        manifest,
        manifest.rows_of(split.train),
        manifest.rows_of(split.val),
        run_dir,
        cache_root=cache_root,
        device=device,
        resume=resume,
        progress=progress,
        engine=engine,
    )
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


def run_leaky(cfg: ModelConfig, manifest: Manifest, run_dir: Path, *, cache_root, device, resume, progress, engine=None) -> float:
    """Same model, same settings, clip-level random split: the number a leaky
    evaluation would have reported."""
    parts = leaky_split(manifest.rows, seed=cfg.train.seed)
    pick = lambda part: [manifest.rows[i] for i in parts[part]]  # noqa: E731
    res = train_model(cfg, manifest, pick("train"), pick("val"), run_dir, cache_root=cache_root, device=device, resume=resume, progress=progress, engine=engine)
    return float(metrics(predict(res.model, manifest, pick("test"), cache_root=cache_root, device=device))["top1"])


def make_split(manifest: Manifest, kind: str, held_out: list[str] | None = None) -> Split:
    if kind == "speaker-disjoint":
        return speaker_disjoint(manifest.speakers, manifest.groups)
    if kind == "corpus":  # the corpus's own train/test split (rows carry `split`), validation from train
        parts = {}
        for r in manifest.rows:
            if r.get("split") in ("train", "test") and parts.setdefault(r["speaker"], r["split"]) != r["split"]:
                raise DataError(f"speaker {r['speaker']!r} is in both parts of the corpus split")
        return corpus_split(parts, manifest.groups)
    if kind == "loso":
        sp = tuple(manifest.speakers)
        return Split("loso", sp, sp, tuple(sorted(held_out)) if held_out else sp)
    raise DataError(f"unknown split kind {kind!r} (speaker-disjoint | loso | corpus)")


@dataclass(frozen=True)
class TrainAll:
    """How `train_all` runs: one typed object instead of a dozen arguments.

    `loso_group` limits leave-one-speaker-out folds to that group's speakers;
    `target_far` is the false-accept rate the verdict thresholds aim at;
    `workers` > 1 trains models, twins, folds and baselines side by side in
    that many processes (`phonemekit.training.workers`); `leaky` trains each
    model (or those named) again on a clip-level split, to show what a
    leaky evaluation would claim."""

    split_kind: str = "speaker-disjoint"
    leaky: bool | frozenset[str] = True
    cache_root: str | Path = "cache"
    device: str = "cpu"
    resume: bool = True
    target_group: str | None = None
    show_speakers: bool = False
    notes: tuple[str, ...] = ()
    loso_group: str | None = None
    target_far: float = 0.05
    workers: int = 1

    def wants_leaky(self, name: str) -> bool:
        return self.leaky is True or (not isinstance(self.leaky, bool) and name in self.leaky)


def train_all(
    manifest: Manifest, models: list[ModelConfig], out: str | Path, settings: TrainAll | None = None, *, progress=None, engine=None, **changes
) -> dict:
    """Train `models` on one split, evaluate them on held-out speakers beside
    each frozen encoder's baseline, and write the report's `train` section.
    `changes` are fields of `TrainAll` (on top of `settings`); `engine`
    extracts the frozen encoders' features (`phonemekit.scale`). OUT is
    locked for the run: a second training into it is refused."""
    if isinstance(changes.get("leaky"), set):
        changes["leaky"] = frozenset(changes["leaky"])
    if "notes" in changes:
        changes["notes"] = tuple(changes["notes"] or ())
    s = dataclasses.replace(settings or TrainAll(), **changes)
    with folder_lock(out, "train"):
        return _train_all(manifest, models, Path(out), s, progress, engine)


def _train_all(manifest: Manifest, models: list[ModelConfig], out: Path, s: TrainAll, progress, engine) -> dict:
    for cfg in models:  # every model's head builds, before the first one trains
        check_head_options(cfg.head)
    namer = Namer.of(manifest, s.show_speakers)
    held_out = [spk for spk, g in manifest.groups.items() if g == s.loso_group] if s.loso_group else None
    if s.loso_group and not held_out:
        raise DataError(f"no speakers in group {s.loso_group!r}")
    split = make_split(manifest, s.split_kind, held_out)
    loso = s.split_kind == "loso"
    # Each frozen encoder's features, once, before any worker reads them
    # (workers then only read the cache; none extracts beside another).
    specs = extract_features(manifest, models, s.cache_root, device=s.device, progress=progress, engine=engine)
    folds = loso_folds(manifest.speakers, held_out=held_out) if loso else [split]
    with Jobs(s.workers) as jobs:
        inline = jobs.workers == 1
        kw = dict(cache_root=s.cache_root, device=s.device, resume=s.resume, progress=progress if inline else None, engine=engine if inline else None)
        main, twins = {}, {}
        for cfg in models:
            run_dir = out / "models" / cfg.name
            log.info("training %s (%s %s + %s head, %s split)", cfg.name, cfg.encoder.family, cfg.encoder.source, cfg.head.kind, s.split_kind)
            if loso:
                fold_namer = Namer(show=False, salt=namer.salt)
                main[cfg.name] = [jobs.submit(run_one, cfg, manifest, fold, d, **kw, namer=fold_namer) for fold, d in loso_fold_dirs(run_dir, namer, folds)]
            else:
                main[cfg.name] = [jobs.submit(run_one, cfg, manifest, split, run_dir, **kw, namer=namer, target_far=s.target_far)]
            if s.wants_leaky(cfg.name):
                twins[cfg.name] = jobs.submit(run_leaky, cfg, manifest, out / "models" / f"{cfg.name}-leaky", **kw)
        # Every split, LOSO included, has the plain baseline beside the models: per fold, then pooled.
        base_jobs = {
            name: [jobs.submit(fit_baseline_on, manifest, name, enc, spec, s.cache_root, fold) for fold in folds] for name, (enc, spec) in specs.items()
        }
        total = sum(map(len, main.values())) + len(twins) + sum(map(len, base_jobs.values()))
        task = progress.add_task("training (workers)", total=total) if progress and not inline else None
        runs: list[ModelRun] = []
        leaky_top1: dict[str, float | None] = {}
        for cfg in models:
            done = [_result(f, progress, task) for f in main[cfg.name]]
            run = combine_loso(cfg, manifest, out / "models" / cfg.name, done, namer) if loso else done[0]
            runs.append(run)
            leaky_top1[cfg.name] = _result(twins[cfg.name], progress, task) if cfg.name in twins else None
            log.info(
                "%s: held-out top-1 %.3f (95%% CI %.3f-%.3f)%s, %.0f s of training",
                cfg.name,
                run.metrics["top1"],
                *run.metrics["top1_ci95"],
                "" if leaky_top1[cfg.name] is None else f", leaky split would claim {leaky_top1[cfg.name]:.3f}",
                run.train_seconds,
            )
        baselines = {}
        for name, futures in base_jobs.items():
            done = [_result(f, progress, task) for f in futures]
            baselines[name] = pool_baseline(done, manifest, namer) if loso else done[0]
        if task is not None:
            progress.remove_task(task)
    section = build_report(manifest, split, runs, leaky_top1, target_group=s.target_group, namer=namer, notes=list(s.notes), baselines=baselines)
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
    return (
        {
            "encoder": {"family": encoder.family, "source": encoder.source, "layer": encoder.layer},
            "weights": spec.weights,
            "C": base.C,
            **{k: m[k] for k in ("top1", "top3", "macro_f1", "top1_ci95", "top1_ci95_speakers", "per_group")},
        },
        preds,
    )
