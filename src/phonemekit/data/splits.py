"""Speaker-disjoint splits by a stable hash, leave-one-speaker-out folds,
and the leaky clip-level split that shows what a careless split claims."""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

from phonemekit.errors import DataError


@dataclass(frozen=True)
class Split:
    kind: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "train_speakers": list(self.train), "val_speakers": list(self.val), "test_speakers": list(self.test)}


def _order(speakers, salt: str) -> list[str]:
    return sorted(speakers, key=lambda s: hashlib.sha256(f"{salt}:{s}".encode()).hexdigest())


def speaker_disjoint(
    speakers: list[str],
    groups: dict[str, str] | None = None,
    *,
    test_frac: float = 0.25,
    val_frac: float = 0.12,
    salt: str = "phonemekit",
) -> Split:
    """Fixed train/val/test by hash of the speaker name, stratified by group,
    so each group (e.g. children) has speakers in test when it can."""
    speakers = sorted(set(speakers))
    if len(speakers) < 3:
        raise DataError(f"a speaker-disjoint split needs at least 3 speakers, found {len(speakers)}")
    groups = groups or {}
    by_group: dict[str, list[str]] = {}
    for s in speakers:
        by_group.setdefault(groups.get(s, "unknown"), []).append(s)
    train, val, test = [], [], []
    for _, members in sorted(by_group.items()):
        ordered = _order(members, salt)
        n_test = max(1, round(len(ordered) * test_frac)) if len(ordered) >= 3 else 0
        n_val = max(1, round(len(ordered) * val_frac)) if len(ordered) >= 4 else 0
        test += ordered[:n_test]
        val += ordered[n_test : n_test + n_val]
        train += ordered[n_test + n_val :]
    # Small groups may leave a part empty; fill it from the largest part.
    for part in (test, val):
        if not part:
            donor = _order(train, salt + ":fill")
            part.append(donor[0])
            train.remove(donor[0])
    return Split("speaker-disjoint", tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)))


def loso_folds(speakers: list[str], *, held_out: list[str] | None = None, salt: str = "phonemekit") -> list[Split]:
    """One fold per speaker (or per speaker of `held_out`, e.g. the children):
    it is the test set; other speakers (by hash) validate."""
    speakers = sorted(set(speakers))
    if len(speakers) < 3:
        raise DataError(f"leave-one-speaker-out needs at least 3 speakers, found {len(speakers)}")
    folds = []
    for held in sorted(set(held_out)) if held_out else speakers:
        rest = [s for s in speakers if s != held]
        val = _order(rest, f"{salt}:{held}")[: max(1, math.ceil(len(rest) * 0.1))]
        train = [s for s in rest if s not in val]
        folds.append(Split("loso", tuple(train), tuple(sorted(val)), (held,)))
    return folds


def leaky_split(rows: list[dict], *, test_frac: float = 0.25, val_frac: float = 0.12, seed: int = 0) -> dict[str, list[int]]:
    """Random clip-level split: the same speakers land in train and test.
    Only used to show how much such a split overstates accuracy."""
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_test, n_val = round(len(idx) * test_frac), round(len(idx) * val_frac)
    return {"test": sorted(idx[:n_test]), "val": sorted(idx[n_test : n_test + n_val]), "train": sorted(idx[n_test + n_val :])}


def corpus_split(speaker_parts: dict[str, str], groups: dict[str, str] | None = None, *, val_frac: float = 0.12,
                 salt: str = "phonemekit") -> Split:  # fmt: skip
    """The corpus's own split (each speaker's `train` or `test`), kept:
    validation speakers are drawn from the train speakers (stratified by
    group), so nothing is ever chosen on a test speaker."""
    train = sorted(s for s, p in speaker_parts.items() if p == "train")
    test = sorted(s for s, p in speaker_parts.items() if p == "test")
    if len(train) < 2 or not test:
        raise DataError(f"the corpus split needs train and test speakers (found {len(train)} train, {len(test)} test)")
    groups = groups or {}
    val = []
    for g in sorted({groups.get(s, "unknown") for s in train}):
        members = _order([s for s in train if groups.get(s, "unknown") == g], salt)
        val += members[: max(1, round(len(members) * val_frac))] if len(members) >= 4 else []
    if not val:
        val = _order(train, salt)[:1]
    return Split("corpus", tuple(s for s in train if s not in val), tuple(sorted(val)), tuple(test))
