"""The augmentation effect table of the real-speech recipe (`phonemekit real
--augmentation`, `sections.augmentation`): the transfer preset trained on
real and synthetic speech together, once plain and once with each
augmentation (`data.augment`) alone and all combined, tested on the real
test children and adults and on the synthetic held-out voices.

Every condition trains on the same subset of training clips (a share of
the real train speakers' clips drawn by hash, every synthetic training
clip) plus, except the plain one, one augmented copy of each clip of a
training speaker (validation speakers are never augmented), for the same
epochs. SpecAugment masks the cached frames instead of adding copies. The
copies are written, encoded and trained on, then deleted with their cached
features: one condition at a time holds the disk. Resumable by condition.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from phonemekit.config import ModelConfig
from phonemekit.data.audio import load_audio, write_audio
from phonemekit.data.augment import AUGMENTATIONS, augmentation
from phonemekit.data.cache import FeatureCache
from phonemekit.data.manifest import Manifest, combine
from phonemekit.errors import AudioValidationError, DataError
from phonemekit.evaluation.metrics import metrics
from phonemekit.evaluation.predict import predict
from phonemekit.fileio import read_json, write_json
from phonemekit.models.encoders import frozen_encoder
from phonemekit.runs import Run
from phonemekit.training.experiment import make_split, train_all
from phonemekit.training.loop import train_model

log = logging.getLogger(__name__)

SPEC_AUGMENT = "specaugment"
CONDITIONS = ("none", *AUGMENTATIONS, SPEC_AUGMENT, "combined")
RESULT = "result.json"


def _kept(sha: str, share: float) -> bool:
    """A stable draw of a share of clips: by their hash, the same in every condition and every run."""
    return int(sha[:8], 16) / 0xFFFFFFFF < share


def training_subset(both: Manifest, real_share: float) -> list[dict]:
    """The rows every condition trains, validates and tests on: a share of
    the real training clips, every synthetic one, every test clip."""
    real = {r["sha256"] for r in both.rows if not both.groups.get(r["speaker"], "").startswith("synthetic")}
    return [r for r in both.rows if r.get("split") == "test" or r["sha256"] not in real or _kept(r["sha256"], real_share)]


def augmented_copies(base: Manifest, rows: list[dict], name: str, audio_dir: Path, *, seed: int = 0, progress=None) -> tuple[Manifest, list[dict]]:
    """One augmented copy of each row, written under `audio_dir`: a row of
    its own (same speaker and label; its own hash), never a segment."""
    fn = augmentation(name)
    out: list[dict] = []
    task = progress.add_task(f"augmenting ({name})", total=len(rows)) if progress else None
    for r in rows:
        path = audio_dir / r["sha256"][:2] / f"{r['sha256']}.wav"
        try:
            if not path.is_file():
                rng = np.random.default_rng([seed, int(r["sha256"][:12], 16)])
                write_audio(path, fn(base.samples(r), rng))
            clip = load_audio(path)
        except (AudioValidationError, DataError, OSError) as e:  # a clip that breaks is left out, never the condition
            log.warning("no %s copy of %s: %s", name, r["sha256"][:12], e)
        else:
            keep = {k: v for k, v in r.items() if k in ("speaker", "label", "group", "split")}
            out.append({**keep, "path": str(path.relative_to(audio_dir)), "sha256": clip.sha256, "duration": clip.duration, "augmented": name})
        if progress:
            progress.advance(task)
    if progress:
        progress.remove_task(task)
    return Manifest(audio_dir, out, list(base.labels), None, dict(base.groups), own_salt=base.salt), out


def held_out_figures(m: dict) -> dict:
    """Top-1 of the real test children and adults (with intervals) and of the synthetic held-out voices together."""
    synthetic = [v for g, v in m["per_group"].items() if g.startswith("synthetic")]
    n_syn = sum(v["clips"] for v in synthetic)
    return {
        "per_group": {g: {k: v[k] for k in ("top1", "top1_ci95_speakers", "speakers", "clips")} for g, v in m["per_group"].items() if g in ("child", "adult")},
        "synthetic_top1": sum(v["top1"] * v["clips"] for v in synthetic) / n_syn if n_syn else None,
    }


def gain_over(result: dict, base: dict) -> dict:
    """Top-1 gained over `base` (both `held_out_figures`), per real group and on the synthetic voices."""
    gain = {g: v["top1"] - base["per_group"][g]["top1"] for g, v in result["per_group"].items() if g in base["per_group"]}
    if result["synthetic_top1"] is not None and base["synthetic_top1"] is not None:
        gain["synthetic"] = result["synthetic_top1"] - base["synthetic_top1"]
    return gain


def run_condition(name: str, both: Manifest, rows: list[dict], cfg: ModelConfig, out: Path, cache: Path, *, device: str = "cpu", progress=None) -> dict:
    """Train and test the preset under one condition (cached in OUT/NAME/result.json)."""
    folder = out / name
    if (folder / RESULT).is_file():
        return read_json(folder / RESULT)
    t0 = time.perf_counter()
    subset = Manifest(both.root, rows, list(both.labels), None, dict(both.groups), own_salt=both.salt)
    split = make_split(subset, "corpus")
    train_rows, val_rows, test_rows = subset.rows_of(split.train), subset.rows_of(split.val), subset.rows_of(split.test)
    manifest, copies = subset, []
    if name == SPEC_AUGMENT:
        cfg = cfg.with_overrides(spec_augment=True)
    elif name != "none":
        aug, copies = augmented_copies(subset, train_rows, name, folder / "audio", progress=progress)
        manifest = combine([(subset, rows), (aug, copies)], same_speakers=True)
        trainers = set(split.train)
        train_rows = [r for r in manifest.rows if r["speaker"] in trainers]
        val_rows, test_rows = manifest.rows_of(split.val), [r for r in manifest.rows if r.get("split") == "test"]
    run_dir = folder / "models" / cfg.name
    train_model(cfg, manifest, train_rows, val_rows, run_dir, cache_root=cache, device=device, resume=True, progress=progress)
    model = Run(run_dir).load()
    history = read_json(run_dir / "history.json")
    result = {
        "condition": name,
        "train_clips": len(train_rows),
        "augmented_clips": len(copies),
        "epochs": len(history),
        "val_top1": max(float(h["val_top1"]) for h in history),  # the checkpoint kept is the best on validation
        **held_out_figures(metrics(predict(model, manifest, test_rows, cache_root=cache, device=device), manifest.groups)),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(folder / RESULT, result)
    _drop_copies(folder, copies, cfg, cache)
    return result


def _drop_copies(folder: Path, copies: list[dict], cfg: ModelConfig, cache: Path) -> None:
    """The condition's augmented audio and their cached features: only its
    figures and model are kept (a local cache; a remote one keeps them)."""
    features = FeatureCache(cache, frozen_encoder(cfg.encoder).spec) if copies else None
    if features is not None and features.store.is_local:
        for r in copies:
            Path(features.dir, FeatureCache.key(r["sha256"])).unlink(missing_ok=True)
    shutil.rmtree(folder / "audio", ignore_errors=True)


def train_augmented(both: Manifest, cfg: ModelConfig, condition: str, out: Path, cache: Path, *, device: str = "cpu", workers: int = 1,
                    progress=None) -> Path:  # fmt: skip
    """The preset on every clip of `both` plus one `condition` copy of each
    training speaker's clip (validation and test speakers never augmented),
    trained and evaluated as `train_all` does into OUT: a candidate to
    bundle. The copies and their features go once it is trained."""
    split = make_split(both, "corpus")
    aug, copies = augmented_copies(both, both.rows_of(split.train), condition, out / "audio", progress=progress)
    manifest = combine([(both, both.rows), (aug, copies)], same_speakers=True)
    train_all(manifest, [cfg], out, split_kind="corpus", leaky=False, cache_root=cache, device=device, workers=workers, progress=progress,
              target_group="child", notes=[f"Trained with one {condition} copy of each training clip ({len(copies)} copies)."])  # fmt: skip
    _drop_copies(out, copies, cfg, cache)
    return out / "models" / cfg.name


def best_condition(results: list[dict]) -> str | None:
    """The waveform augmentation with the best validation top-1 (never a test figure), if any beats the plain condition."""
    plain = next((r["val_top1"] for r in results if r["condition"] == "none"), None)
    waves = [r for r in results if r["condition"] not in ("none", SPEC_AUGMENT)]
    best = max(waves, key=lambda r: r["val_top1"], default=None)
    return best["condition"] if best and (plain is None or best["val_top1"] > plain) else None


def augmentation_section(both: Manifest, cfg: ModelConfig, out: Path, cache: Path, *, real_share: float = 0.25, conditions=CONDITIONS,
                         device: str = "cpu", progress=None) -> dict:  # fmt: skip
    rows = training_subset(both, real_share)
    results = [run_condition(c, both, rows, cfg, out, cache, device=device, progress=progress) for c in conditions]
    plain = next((r for r in results if r["condition"] == "none"), None)
    for r in results:  # each condition against the plain one on the same clips
        if plain is not None:
            r["gain"] = gain_over(r, plain)
    return {
        "model": cfg.name,
        "real_share": real_share,
        "epochs": cfg.train.epochs,
        "method": f"{cfg.name} on real and synthetic speech together: {100 * real_share:.0f}% of the real training clips (drawn by hash) "
        "and every synthetic one; each condition adds one augmented copy of every clip of a training speaker (SpecAugment masks "
        "cached frames instead), trains for the same epochs with early stopping on the validation speakers, and is tested on "
        "the real test children and adults and the synthetic held-out voices. Gain: top-1 points over the plain condition.",
        "conditions": results,
    }
