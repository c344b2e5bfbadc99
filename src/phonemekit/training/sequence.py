"""A phone recogniser trained on whole utterances: frozen encoder frames, a
BiLSTM CTC head (the clip heads' `ctc`, at sentence scale), and as targets
the canonical phone sequence of each utterance's words. No alignment is
needed to train it; it then transcribes (greedy CTC) and force-aligns
(`models.decoding.forced_align`). Evaluated by phone error rate (PER) per
group, with a 95% interval over speakers.

The artifact is an ordinary run folder (`runs.Run`): a `PhonemeModel` with
a CTC head whose labels are the inventory's sounds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from phonemekit.config import ModelConfig
from phonemekit.data.cache import FeatureCache, extract
from phonemekit.data.importers.base import UTTERANCES
from phonemekit.data.inventory import SOUNDS
from phonemekit.data.manifest import DATASET, Manifest
from phonemekit.data.phones import to_label
from phonemekit.data.segments import segment_row
from phonemekit.data.splits import corpus_split
from phonemekit.errors import DataError
from phonemekit.evaluation.metrics import ratio_bootstrap_ci
from phonemekit.fileio import read_json, read_jsonl
from phonemekit.models.decoding import greedy
from phonemekit.models.encoders import frozen_encoder
from phonemekit.models.model import PhonemeModel
from phonemekit.runs import Run
from phonemekit.training.specaugment import spec_augment

log = logging.getLogger(__name__)

LABELS = [s.label for s in SOUNDS]


@dataclass(frozen=True)
class Utterance:
    row: dict
    targets: list[int]


def utterances(data: Path) -> tuple[Manifest, list[Utterance], dict]:
    """The imported utterances whose canonical phones all map to the
    inventory, as a manifest of whole files (each is its own clip), and
    their target sequences; the rest are counted by reason."""
    try:
        dataset, rows = read_json(data / DATASET), read_jsonl(data / UTTERANCES)
    except (OSError, ValueError) as e:
        raise DataError(f"no imported utterances in {data} ({e}); run `phonemekit import` first") from None
    index = {label: i for i, label in enumerate(LABELS)}
    kept, skipped = [], {"no_words": 0, "unmapped_phone": 0}
    for r in rows:
        phones = [p for _, ps in r.get("words") or [] for p in ps]
        if not phones:
            skipped["no_words"] += 1
            continue
        labels = [to_label(p, "arpabet") for p in phones]
        if None in labels:
            skipped["unmapped_phone"] += 1
            continue
        # An utterance inside a longer recording (Kaldi segments, lhotse supervisions) is a segment row: only its part is encoded.
        row = segment_row(r, *r["segment"], labels[0]) if "segment" in r else {**r, "label": labels[0]}
        kept.append(Utterance(row, [index[x] for x in labels]))
    manifest = Manifest(Path(dataset["root"]), [u.row for u in kept], LABELS, groups={r["speaker"]: r.get("group", "unknown") for r in rows})
    return manifest, kept, skipped


def _batches(items: list[int], lengths: list[int], max_frames: int, rng: np.random.Generator | None) -> list[list[int]]:
    """Items sorted by length, cut into batches of at most `max_frames`
    padded frames; shuffled batch order when training."""
    order = sorted(items, key=lambda i: lengths[i])
    out, cur = [], []
    for i in order:
        if cur and lengths[i] * (len(cur) + 1) > max_frames:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    if rng is not None:
        rng.shuffle(out)
    return out


def _pad(feats: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(f) for f in feats])
    x = torch.zeros(len(feats), int(lengths.max()), *feats[0].shape[1:])
    for k, f in enumerate(feats):
        x[k, : len(f)] = torch.from_numpy(f.astype(np.float32))
    return x, lengths


def _loss(model: PhonemeModel, feats: list[np.ndarray], targets: list[list[int]], rng: np.random.Generator | None = None) -> torch.Tensor:
    """CTC loss of a batch; with `rng`, its frames are masked first (SpecAugment)."""
    x, lengths = _pad(feats)
    if rng is not None:
        x = spec_augment(x, lengths, rng)
    dev = next(model.parameters()).device
    x, lengths = x.to(dev), lengths.to(dev)
    lp = model.head_outputs(x, lengths)
    y = torch.tensor([t for seq in targets for t in seq], device=dev)
    ylen = torch.tensor([len(seq) for seq in targets], device=dev)
    return F.ctc_loss(lp.transpose(0, 1), y, model.out_lengths(lengths), ylen, blank=model.blank, zero_infinity=True)


@torch.no_grad()
def transcribe(model: PhonemeModel, feats: list[np.ndarray], max_frames: int = 20_000) -> list[list[int]]:
    """Greedy CTC transcriptions of cached utterance frames."""
    model.eval()
    out: list[list[int]] = [[] for _ in feats]
    for batch in _batches(list(range(len(feats))), [len(f) for f in feats], max_frames, None):
        x, lengths = _pad([feats[i] for i in batch])
        dev = next(model.parameters()).device
        x, lengths = x.to(dev), lengths.to(dev)
        for i, seq in zip(batch, greedy(model.head_outputs(x, lengths), model.out_lengths(lengths), model.blank)):
            out[i] = seq
    return out


def phone_errors(refs: list[list[int]], hyps: list[list[int]]) -> np.ndarray:
    """Per utterance (substitutions, deletions, insertions), by jiwer's edit-distance alignment over phone tokens."""
    import jiwer

    rows = []
    for ref, hyp in zip(refs, hyps):
        o = jiwer.process_words(" ".join(LABELS[i] for i in ref), " ".join(LABELS[i] for i in hyp))
        rows.append((o.substitutions, o.deletions, o.insertions))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def per_report(rows: list[dict], refs: list[list[int]], hyps: list[list[int]], groups: dict[str, str]) -> dict:
    """PER overall and per group (errors over reference phones), with a 95%
    interval resampling speakers, and the kinds of error."""
    err = phone_errors(refs, hyps)
    n_ref = np.array([len(r) for r in refs])
    speakers = np.array([r["speaker"] for r in rows])
    group = np.array([groups.get(s, "unknown") for s in speakers])

    def summary(mask: np.ndarray) -> dict:
        e, n = err[mask], n_ref[mask]
        spk = speakers[mask]
        names = np.unique(spk)
        per_spk_e = np.array([e[spk == s].sum() for s in names])
        per_spk_n = np.array([n[spk == s].sum() for s in names])
        return {
            "per": round(float(e.sum() / max(1, n.sum())), 4),
            "per_ci95_speakers": ratio_bootstrap_ci(per_spk_e, per_spk_n),
            "substitutions": int(e[:, 0].sum()),
            "deletions": int(e[:, 1].sum()),
            "insertions": int(e[:, 2].sum()),
            "phones": int(n.sum()),
            "utterances": int(mask.sum()),
            "speakers": len(names),
        }

    return {**summary(np.ones(len(rows), bool)), "per_group": {g: summary(group == g) for g in sorted(set(group))}}


@dataclass(frozen=True)
class RecogniserResult:
    section: dict
    run: Run


def train_recogniser(data: Path, cfg: ModelConfig, out: Path, *, cache_root, device: str = "cpu", progress=None,
                     max_frames: int = 6000) -> RecogniserResult:  # fmt: skip
    """Train on the corpus's train speakers (validation speakers drawn from
    them, early stopping on their CTC loss), test on its test speakers:
    PER per group, written into `out` as a run."""
    t0 = time.perf_counter()
    manifest, utts, skipped = utterances(data)
    split = corpus_split({u.row["speaker"]: u.row.get("split", "") for u in utts}, manifest.groups, salt="recogniser")
    encoder = frozen_encoder(cfg.encoder)
    res = extract(manifest, encoder, cache_root, audio_cfg=cfg.audio, progress=progress, device=device)
    cache = FeatureCache(cache_root, encoder.spec)
    failed = {f["sha256"] for f in res.failed}
    utts = [u for u in utts if u.row["sha256"] not in failed]
    # Held as float16: every layer of every frame of a corpus (5.5 h of speech: 3.8 GB, not 7.6)
    feats = [cache.get(u.row["sha256"]).astype(np.float16) for u in utts]
    lengths = [len(f) for f in feats]
    part = {s: name for name in ("train", "val", "test") for s in getattr(split, name)}
    idx = {name: [i for i, u in enumerate(utts) if part.get(u.row["speaker"]) == name] for name in ("train", "val", "test")}
    log.info("recogniser: %d train, %d val, %d test utterances (%d skipped)", *(len(v) for v in idx.values()), sum(skipped.values()))

    torch.manual_seed(cfg.train.seed)
    rng = np.random.default_rng(cfg.train.seed)
    model = PhonemeModel(cfg, LABELS, encoder.spec).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    best, best_state, history, waited = float("inf"), None, [], 0
    task = progress.add_task("training the phone recogniser", total=cfg.train.epochs) if progress else None
    for epoch in range(1, cfg.train.epochs + 1):
        model.train()
        losses = []
        for batch in _batches(idx["train"], lengths, max_frames, rng):
            loss = _loss(model, [feats[i] for i in batch], [utts[i].targets for i in batch], rng if cfg.train.augment else None)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            val = [float(_loss(model, [feats[i] for i in b], [utts[i].targets for i in b])) * len(b) for b in _batches(idx["val"], lengths, max_frames, None)]
        val_loss = sum(val) / max(1, len(idx["val"]))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss})
        log.info("recogniser epoch %d: train loss %.3f, val loss %.3f", epoch, history[-1]["train_loss"], val_loss)
        if progress:
            progress.advance(task)
        if val_loss < best - 1e-4:
            best, waited = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited >= cfg.train.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)

    hyps = {name: transcribe(model, [feats[i] for i in idx[name]]) for name in ("val", "test")}
    report = {name: per_report([utts[i].row for i in idx[name]], [utts[i].targets for i in idx[name]], hyps[name], manifest.groups) for name in ("val", "test")}
    section = {
        "model": cfg.name,
        "encoder": {"family": cfg.encoder.family, "source": cfg.encoder.source, "layer": cfg.encoder.layer},
        "head": cfg.head.kind,
        "targets": "canonical phones of each utterance's words (ARPAbet -> the inventory's sounds); no alignment",
        "utterances": {name: len(v) for name, v in idx.items()},
        "skipped": skipped,
        "epochs": len(history),
        "best_val_loss": round(best, 4),
        "val": report["val"],
        "test": report["test"],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    run = Run(out)
    run.write_config(cfg)
    run.write_history(history)
    run.save_checkpoint(model, metrics={"per": report["test"]["per"]}, extra={"split": split.to_dict()})
    log.info("recogniser: test PER %.3f (%s)", report["test"]["per"], ", ".join(f"{g} {v['per']:.3f}" for g, v in report["test"]["per_group"].items()))
    return RecogniserResult(section, run)
