"""Statistics of a model's predictions on held-out clips.

Reported per model: top-1, top-3, macro-F1, per-class and per-speaker
accuracy, per-group accuracy (e.g. children), 95% CIs on top-1 that
resample clips and that resample speakers, the most-confused pairs, and
paired comparisons of two models on the same clips (exact McNemar test,
speaker-resampled CI of the difference). scipy and scikit-learn do the
statistics.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
import sklearn.metrics

from phonemekit.errors import DataError
from phonemekit.evaluation.predict import Predictions


def bootstrap_ci(correct: np.ndarray, n: int = 2000, seed: int = 0) -> list[float]:
    """Percentile 95% CI of accuracy, resampling clips (scipy.stats.bootstrap)."""
    if len(correct) < 2 or np.all(correct == correct[0]):
        v = float(correct.mean()) if len(correct) else float("nan")
        return [v, v]
    res = scipy.stats.bootstrap((correct,), np.mean, n_resamples=n, method="percentile", random_state=seed)
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def speaker_bootstrap_ci(correct: np.ndarray, speakers: np.ndarray, n: int = 2000, seed: int = 0) -> list[float]:
    """95% CI of accuracy resampling speakers, not clips: a speaker's clips
    are not independent, so with few held-out speakers this interval is the
    honest (wide) one."""
    names = np.unique(speakers)
    hits = np.array([correct[speakers == s].sum() for s in names])
    clips = np.array([(speakers == s).sum() for s in names], dtype=float)
    return ratio_bootstrap_ci(hits, clips, n=n, seed=seed)


def ratio_bootstrap_ci(num: np.ndarray, den: np.ndarray, n: int = 2000, seed: int = 0) -> list[float]:
    """95% CI of sum(num) / sum(den) resampling speakers (one entry each):
    accuracy (hits over clips), phone error rate (errors over phones).
    scipy.stats.bootstrap, paired over the two sums."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if len(num) < 2:
        return [float("nan"), float("nan")]
    res = scipy.stats.bootstrap(
        (num, den), lambda h, c, axis=-1: h.sum(axis) / c.sum(axis), paired=True, vectorized=True, n_resamples=n, method="percentile", random_state=seed
    )
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (a binomial
    test of b successes in b + c trials at p = 1/2)."""
    return 1.0 if b + c == 0 else float(scipy.stats.binomtest(b, b + c, 0.5).pvalue)


def paired(a: np.ndarray, b: np.ndarray, speakers: np.ndarray | None = None, n_boot: int = 2000, seed: int = 0) -> dict:
    """a, b: 0/1 correctness on the same clips. The McNemar test treats clips
    as independent; the CI of the difference resamples speakers when given
    (clips of one speaker are not independent), else clips."""
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    p = mcnemar_exact(only_a, only_b)
    d = a - b
    ci = speaker_bootstrap_ci(d, speakers, n_boot, seed) if speakers is not None else bootstrap_ci(d, n_boot, seed)
    return {
        "top1_diff": float(d.mean()),
        "diff_ci95": ci,
        "ci_resamples": "speakers" if speakers is not None else "clips",
        "only_first_right": only_a,
        "only_second_right": only_b,
        "mcnemar_p": p,
        "significant": p < 0.05,
    }


def confusion_matrix(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    return sklearn.metrics.confusion_matrix(y, pred, labels=np.arange(num_classes))


def confused_pairs(cm: np.ndarray, labels: list[str], top: int = 10) -> list[dict]:
    off = cm.copy()
    np.fill_diagonal(off, 0)
    idx = np.dstack(np.unravel_index(np.argsort(-off, axis=None), off.shape))[0]
    return [{"true": labels[i], "predicted": labels[j], "count": int(off[i, j])} for i, j in idx[:top] if off[i, j] > 0]


def groups_of(rows: list[dict], groups: dict[str, str] | None) -> np.ndarray:
    """Each row's speaker group: the manifest's map, else the row's own tag."""
    groups = groups or {}
    return np.array([groups.get(r["speaker"], r.get("group", "unknown")) for r in rows])


def metrics(p: Predictions, groups: dict[str, str] | None = None) -> dict:
    if len(p.y) == 0:
        raise DataError("no clips to evaluate")
    c = len(p.labels)
    pred = p.scores.argmax(1)
    rank = (p.scores > p.scores[np.arange(len(p.y)), p.y][:, None]).sum(1)  # 0 = true sound is top-1
    correct = (pred == p.y).astype(float)
    cm = confusion_matrix(p.y, pred, c)
    speakers = np.array([r["speaker"] for r in p.rows])
    group_of = groups_of(p.rows, groups)
    per_class = {p.labels[k]: float(correct[p.y == k].mean()) for k in range(c) if (p.y == k).any()}
    return {
        "n": int(len(p.y)),
        "top1": float(correct.mean()),
        "top3": float((rank < 3).mean()),
        "macro_f1": float(sklearn.metrics.f1_score(p.y, pred, labels=np.unique(p.y), average="macro", zero_division=0)),
        "top1_ci95": bootstrap_ci(correct),
        "top1_ci95_speakers": speaker_bootstrap_ci(correct, speakers),
        "per_class": per_class,
        "per_speaker": {s: float(correct[speakers == s].mean()) for s in sorted(set(speakers))},
        "per_group": {g: _group(correct[group_of == g], rank[group_of == g], speakers[group_of == g]) for g in sorted(set(group_of))},
        "confused_pairs": confused_pairs(cm, p.labels),
        "confusion": cm.tolist(),
    }


def _group(correct: np.ndarray, rank: np.ndarray, speakers: np.ndarray) -> dict:
    """One group's figures (children, adults): top-1 with its interval over the group's speakers."""
    return {
        "top1": float(correct.mean()),
        "top3": float((rank < 3).mean()),
        "top1_ci95_speakers": speaker_bootstrap_ci(correct, speakers),
        "clips": int(len(correct)),
        "speakers": int(len(set(speakers.tolist()))),
    }


def group_top1(per_group: dict, group: str | None) -> float | None:
    """A group's top-1 from a `per_group` entry (None when the group is absent)."""
    return per_group[group]["top1"] if group in per_group else None


def align(preds: list[Predictions]) -> list[Predictions]:
    """The prediction sets restricted to the clips all of them scored, in
    one order (by audio sha256), so their rows correspond."""
    common = set.intersection(*({r["sha256"] for r in p.rows} for p in preds))
    out = []
    for p in preds:
        order = sorted((r["sha256"], i) for i, r in enumerate(p.rows) if r["sha256"] in common)
        idx = np.array([i for _, i in order], dtype=int)
        out.append(Predictions(p.scores[idx], p.y[idx], [p.rows[i] for i in idx], p.labels))
    return out


def correct(p: Predictions) -> np.ndarray:
    return (p.scores.argmax(1) == p.y).astype(float)


def versus(a: Predictions, b: Predictions) -> dict:
    """Paired comparison of two prediction sets on their common clips."""
    a, b = align([a, b])
    return paired(correct(a), correct(b), np.array([r["speaker"] for r in a.rows]))
