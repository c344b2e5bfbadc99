"""Phones in their sentence: the phone tagger (`models.tagger`) trained on
the aligned phones of whole utterances, and tested on exactly the phone
clips the clip models are tested on (the manifest's rows), so its top-1
sits beside theirs.

Each utterance is encoded once, whole (the recogniser's features: the same
cache), every aligned phone pooled over its own span, and the phones that
are examples (the manifest's rows: aligner and canonical agree) carry their
label as a target; the others are context only. The split is the clip
models' (`make_split(manifest, "corpus")`): validation speakers from the
corpus's train speakers choose the epoch, its test speakers are scored.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from phonemekit.align.dataset import alignments
from phonemekit.config import ModelConfig
from phonemekit.data.cache import FeatureCache, extract
from phonemekit.data.manifest import DATASET, Manifest
from phonemekit.data.segments import segment_row
from phonemekit.errors import ConfigError, DataError
from phonemekit.evaluation.metrics import metrics
from phonemekit.evaluation.predict import Predictions
from phonemekit.fileio import ensure_folder, read_json, write_bytes, write_json
from phonemekit.models.encoders import frozen_encoder
from phonemekit.models.tagger import POSITION_FEATURES, PhoneTagger, TaggerConfig
from phonemekit.training.experiment import make_split
from phonemekit.training.sequence import utterances

log = logging.getLogger(__name__)

WEIGHTS = "tagger.safetensors"
CONFIG = "tagger.json"


@dataclass(frozen=True)
class Sentence:
    """One utterance as the tagger reads it."""

    row: dict  # the utterance
    phones: np.ndarray  # (P, L, 2D) float16: mean and std of each layer over each aligned phone's span
    positions: np.ndarray  # (P, POSITION_FEATURES) float32
    targets: np.ndarray  # (P,) label index; -1 where the phone is context only
    examples: list[dict]  # the manifest rows of the targeted phones, in order


def pooled(frames: np.ndarray, start: float, end: float, rate: float) -> np.ndarray:
    """Mean and standard deviation over the frames of [start, end) (at least one frame), per layer."""
    a = min(max(0, int(start * rate)), len(frames) - 1)
    b = max(a + 1, min(int(np.ceil(end * rate)), len(frames)))
    span = frames[a:b].astype(np.float32)
    return np.concatenate([span.mean(0), span.std(0)], axis=-1)


def sentence(utt: dict, record: dict, frames: np.ndarray, rate: float, examples: dict[str, dict], index: dict[str, int], context: float) -> Sentence | None:
    """`utt` with its alignment `record` and encoded `frames` (T, L, D); the
    phones that are manifest rows (found by the same segment id the aligner
    step gave them) become targets. None when nothing in it is an example."""
    feats, positions, targets, rows = [], [], [], []
    for _word, w_start, w_end, phones in record["words"]:
        for i, (_phone, start, end, _score) in enumerate(phones):
            start, end = float(start), float(end)
            feats.append(pooled(frames, start, end, rate))
            width = max(float(w_end) - float(w_start), 1e-3)
            positions.append([i == 0, i == len(phones) - 1, end - start, (start - float(w_start)) / width])
            row = examples.get(segment_row(utt, start - context, end + context, "")["sha256"])
            targets.append(index[row["label"]] if row is not None else -1)
            if row is not None:
                rows.append(row)
    if not rows:
        return None
    return Sentence(utt, np.stack(feats).astype(np.float16), np.asarray(positions, np.float32), np.asarray(targets, np.int64), rows)


def sentences(data: Path, manifest: Manifest, cfg: ModelConfig, cache_root, *, device: str = "cpu", progress=None) -> tuple[list[Sentence], dict]:
    """Every aligned utterance holding an example, encoded whole with
    `cfg.encoder` (cached); counts of what was left out and why."""
    context = float(((read_json(data / DATASET).get("aligned") or {}).get("context_s")) or 0.0)
    umanifest, utts, _ = utterances(data)
    encoder = frozen_encoder(cfg.encoder)
    res = extract(umanifest, encoder, cache_root, audio_cfg=cfg.audio, progress=progress, device=device)
    cache, failed = FeatureCache(cache_root, encoder.spec), {f["sha256"] for f in res.failed}
    records = alignments(data)
    examples = {r["sha256"]: r for r in manifest.rows}
    index = {label: i for i, label in enumerate(manifest.labels)}
    out, skipped = [], {"not_aligned": 0, "not_encoded": 0, "no_examples": 0, "malformed_alignment": 0}
    for u in utts:
        sha = u.row["sha256"]
        if sha not in records:
            skipped["not_aligned"] += 1
        elif sha in failed or not cache.has(sha):
            skipped["not_encoded"] += 1
        else:
            try:
                s = sentence(u.row, records[sha], cache.get(sha), encoder.spec.frame_rate, examples, index, context)
            except (TypeError, ValueError, KeyError, IndexError) as e:  # a hand-edited or cut alignment record
                log.warning("skipping utterance %s: malformed alignment (%s)", u.row.get("utt", sha[:12]), e)
                skipped["malformed_alignment"] += 1
                continue
            if s is None:
                skipped["no_examples"] += 1
            else:
                out.append(s)
    return out, skipped


def _batch(items: list[Sentence]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(phones, positions, lengths, targets) padded to the longest sentence; padded targets are -1 (none)."""

    def pad(arrays: list[np.ndarray], value: float = 0) -> torch.Tensor:
        return pad_sequence([torch.from_numpy(a) for a in arrays], batch_first=True, padding_value=value)

    lengths = torch.tensor([len(s.targets) for s in items])
    return pad([s.phones.astype(np.float32) for s in items]), pad([s.positions for s in items]), lengths, pad([s.targets for s in items], -1)


@torch.no_grad()
def tag(model: PhoneTagger, items: list[Sentence], batch: int = 64) -> np.ndarray:
    """Class log-probabilities of every targeted phone, in the order of the items' examples."""
    model.eval()
    out = []
    for i in range(0, len(items), batch):
        x, pos, lengths, y = _batch(items[i : i + batch])
        out.append(F.log_softmax(model(x, pos, lengths), -1)[y >= 0].numpy())
    return np.concatenate(out) if out else np.zeros((0, model.out.out_features), np.float32)


def predictions(model: PhoneTagger, items: list[Sentence], labels: list[str]) -> Predictions:
    rows = [r for s in items for r in s.examples]
    y = np.array([t for s in items for t in s.targets if t >= 0], dtype=np.int64)
    return Predictions(tag(model, items), y, rows, labels)


def fit(train: list[Sentence], val: list[Sentence], num_classes: int, cfg: TaggerConfig, progress=None) -> tuple[PhoneTagger, list[dict]]:
    """Cross-entropy on the targeted phones; the epoch with the best
    validation top-1 is kept (stopping after `patience` without one)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    layers, dim = train[0].phones.shape[1:]
    model = PhoneTagger(layers, dim, num_classes, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    val_y = np.array([t for s in val for t in s.targets if t >= 0])
    best, best_state, history, waited = -1.0, None, [], 0
    task = progress.add_task("training the phone tagger", total=cfg.epochs) if progress else None
    for epoch in range(1, cfg.epochs + 1):
        t0, losses = time.perf_counter(), []
        model.train()
        order = rng.permutation(len(train))
        for i in range(0, len(order), cfg.batch):
            x, pos, lengths, y = _batch([train[j] for j in order[i : i + cfg.batch]])
            loss = F.cross_entropy(model(x, pos, lengths)[y >= 0], y[y >= 0])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        top1 = float((tag(model, val).argmax(1) == val_y).mean())
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_top1": top1, "seconds": round(time.perf_counter() - t0, 2)})
        log.info("tagger epoch %d: train loss %.3f, val top-1 %.3f", epoch, history[-1]["train_loss"], top1)
        if progress:
            progress.advance(task)
        if top1 > best:
            best, waited = top1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return model, history


def load_tagger(folder: Path) -> tuple[PhoneTagger, list[str]]:
    """A trained tagger and its labels from its folder (`train_tagger`'s `out`);
    a folder that does not hold one is refused with one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        meta = read_json(Path(folder) / CONFIG)
        labels, cfg = meta["labels"], TaggerConfig(**meta["tagger"])
        state = load_file(str(Path(folder) / WEIGHTS))
        if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
            raise ValueError("labels are not a list of names")
        layers, dim = state["mix.logits"].shape[0], state["proj.0.weight"].shape[0] - POSITION_FEATURES
        model = PhoneTagger(layers, dim, len(labels), cfg)
        model.load_state_dict(state)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError, ConfigError) as e:
        raise DataError(f"{folder} holds no usable phone tagger ({type(e).__name__}: {e})") from None
    return model.eval(), labels


def train_tagger(data: Path, manifest: Manifest, encoder_cfg: ModelConfig, out: Path, *, cfg: TaggerConfig = TaggerConfig(), cache_root,
                 device: str = "cpu", progress=None) -> tuple[dict, Predictions]:  # fmt: skip
    """Train on the clip models' train speakers, choose the epoch on their
    validation speakers, test on the test speakers: the report's section
    (figures per group with intervals over speakers) and the test predictions.
    The weights and settings go into `out`."""
    from safetensors.torch import save

    t0 = time.perf_counter()
    items, skipped = sentences(data, manifest, encoder_cfg, cache_root, device=device, progress=progress)
    split = make_split(manifest, "corpus")
    part = {s: name for name in ("train", "val", "test") for s in getattr(split, name)}
    parts = {name: [s for s in items if part.get(s.row["speaker"]) == name] for name in ("train", "val", "test")}
    if not parts["train"] or not parts["val"] or not parts["test"]:
        raise DataError(f"the tagger needs train, validation and test utterances; got { ({k: len(v) for k, v in parts.items()}) }")
    model, history = fit(parts["train"], parts["val"], len(manifest.labels), cfg, progress=progress)
    preds = predictions(model, parts["test"], manifest.labels)
    m = metrics(preds, manifest.groups)
    ensure_folder(out)
    write_json(out / CONFIG, {"tagger": cfg.to_dict(), "encoder": dataclasses.asdict(encoder_cfg.encoder), "labels": manifest.labels, "history": history})
    write_bytes(out / WEIGHTS, save({k: v.contiguous() for k, v in model.state_dict().items()}))  # atomic, and last: the step's output
    section = {
        "model": "phone tagger over the sentence (BiLSTM over every aligned phone's pooled frames and its place in its word)",
        "encoder": {"family": encoder_cfg.encoder.family, "source": encoder_cfg.encoder.source, "layer": encoder_cfg.encoder.layer},
        "settings": cfg.to_dict(),
        "utterances": {k: len(v) for k, v in parts.items()},
        "skipped": skipped,
        "epochs": len(history),
        "best_epoch": int(np.argmax([h["val_top1"] for h in history])) + 1,
        "val_top1": max(h["val_top1"] for h in history),
        **{k: m[k] for k in ("n", "top1", "top3", "macro_f1", "top1_ci95", "top1_ci95_speakers", "per_group", "per_class", "confused_pairs")},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    log.info("tagger: test top-1 %.3f (%s)", m["top1"], ", ".join(f"{g} {v['top1']:.3f}" for g, v in m["per_group"].items()))
    return section, preds
