"""The minimal-pair benchmark: how reading verdicts hold on real words.

Ground truth comes from what a corpus holds: real words of its speakers,
aligned, mostly said right. Each word is judged (`assess.judge`, the
verdicts a game gets)
- against its own sounds: every sound should come back correct; those that
  do not are false rejects;
- against dictionary words one sound away ("cat" as "bat", "cut", "cap"):
  the changed sound should come back substituted (substitution recall),
  with the sound actually said as the sound heard;
- against dictionary words with one sound more ("cats" for "cat"): that
  sound should come back missing.

A word's phones are placed by the corpus's own alignment of what was said
(pocketsphinx, in `make real`), not aligned again to each target, and are
scored by the model's test predictions: one classification per phone,
as blend mode classifies them. Words count only where every phone was kept
(aligner and canonical transcription agree). A DET curve sweeps one
threshold on the calibrated probability of the expected sound; the
operating point for 10% false rejects is chosen on validation speakers
and applied to the test speakers.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from phonemekit.align.dictionary import cmu_dictionary
from phonemekit.assess.assess import Heard, judge
from phonemekit.assess.lexicon import default_variants
from phonemekit.data.phones import SOUND_CLASS, to_label
from phonemekit.evaluation.predict import Predictions

MAX_NEIGHBOURS = 3  # per word and kind, drawn by a seed made from the word, so every word weighs alike
TARGET_FRR = 0.10


@dataclass(frozen=True)
class Word:
    speaker: str
    group: str
    text: str
    sounds: tuple[str, ...]
    heard: tuple[Heard, ...]


def corpus_words(preds: Predictions, rows_by_sha: dict[str, dict], utterances: dict[str, dict]) -> list[Word]:
    """The words of `preds`' clips whose every canonical phone is among them, in order."""
    by_word: dict[tuple[str, int], list[tuple[dict, np.ndarray]]] = {}
    probs = preds.probs
    for r, p in zip(preds.rows, probs):
        row = rows_by_sha.get(r["sha256"])
        if row is None or "word_index" not in row:
            continue
        by_word.setdefault((row["utt"], int(row["word_index"])), []).append((row, p))
    words = []
    for (utt, wi), items in by_word.items():
        u = utterances.get(utt)
        if u is None or wi >= len(u.get("words") or []):
            continue
        canonical = tuple(to_label(p, "arpabet") for p in u["words"][wi][1])
        items.sort(key=lambda rp: rp[0]["start"])
        said = tuple(r["label"] for r, _ in items)
        if said != canonical:  # a phone was dropped (aligner and transcription disagreed there)
            continue
        first = items[0][0]
        heard = tuple(Heard(r["start"], r["end"], p) for r, p in items)
        words.append(Word(first["speaker"], first.get("group", "unknown"), str(first.get("word", "")), said, heard))
    return words


class Neighbours:
    """Dictionary words one sound away from a sound sequence: by substituting
    one sound, or by having one sound more."""

    def __init__(self, dictionary: dict[str, list[str]], max_len: int = 10) -> None:
        self.sub: dict[tuple, list[tuple[str, int]]] = {}
        self.ins: dict[tuple, list[tuple[str, int]]] = {}
        self.sounds = dictionary
        for word, s in dictionary.items():
            if len(s) > max_len:
                continue
            for i in range(len(s)):
                self.sub.setdefault((*s[:i], "*", *s[i + 1 :]), []).append((word, i))
                if len(s) > 1:
                    self.ins.setdefault((*s[:i], *s[i + 1 :]), []).append((word, i))

    def _draw(self, found: list[tuple[str, int]], seed: str) -> list[tuple[str, int]]:
        rng = np.random.default_rng(zlib.crc32(seed.encode()))
        found = sorted(set(found))
        return [found[k] for k in sorted(rng.choice(len(found), size=min(MAX_NEIGHBOURS, len(found)), replace=False))] if found else []

    def substitutions(self, sounds: tuple[str, ...]) -> list[tuple[str, int]]:
        found = [(w, i) for i in range(len(sounds)) for w, _ in self.sub.get((*sounds[:i], "*", *sounds[i + 1 :]), []) if self.sounds[w][i] != sounds[i]]
        return self._draw(found, "sub:" + " ".join(sounds))

    def insertions(self, sounds: tuple[str, ...]) -> list[tuple[str, int]]:
        return self._draw(self.ins.get(tuple(sounds), []), "ins:" + " ".join(sounds))


def judge_words(words: list[Word], labels: list[str], verdict_of: Callable[[np.ndarray, str], dict], neighbours: Neighbours) -> list[dict]:
    """One record per judged sound: kind (own, substituted, inserted), group,
    class of the sound said, the verdict, the sound heard and the score."""
    out, variants = [], default_variants()  # as shipped: a sound heard as an accepted variant is correct
    for w in words:
        sounds, _ = judge(list(w.sounds), list(w.heard), labels, verdict_of, variants)
        for i, s in enumerate(sounds):
            out.append({"kind": "own", "group": w.group, "said": w.sounds[i], "class": SOUND_CLASS.get(w.sounds[i], "other"),
                        "verdict": s["verdict"], "heard": s["heard"], "score": s["score"]})  # fmt: skip
        for target, i in neighbours.substitutions(w.sounds):
            s = judge(neighbours.sounds[target], list(w.heard), labels, verdict_of, variants)[0][i]
            out.append({"kind": "substituted", "group": w.group, "said": w.sounds[i], "class": SOUND_CLASS.get(w.sounds[i], "other"),
                        "target": target, "verdict": s["verdict"], "heard": s["heard"], "score": s["score"]})  # fmt: skip
        for target, i in neighbours.insertions(w.sounds):
            s = judge(neighbours.sounds[target], list(w.heard), labels, verdict_of, variants)[0][i]
            out.append({"kind": "inserted", "group": w.group, "said": None, "class": SOUND_CLASS.get(neighbours.sounds[target][i], "other"),
                        "target": target, "verdict": s["verdict"], "heard": s["heard"], "score": s["score"]})  # fmt: skip
    return out


def det(records: list[dict]) -> dict:
    """False rejects (own sounds scored under the threshold) against missed
    substitutions (a wrong target scored at or over it), over thresholds."""
    own = np.sort([r["score"] for r in records if r["kind"] == "own"])
    sub = np.sort([r["score"] for r in records if r["kind"] == "substituted"])
    thresholds = np.unique(np.r_[0.0, own, sub, 1.0 + 1e-9])
    # Counts under each threshold by binary search in the sorted scores (a comparison per pair would be quadratic).
    frr = np.searchsorted(own, thresholds, side="left") / len(own) if len(own) else np.full(len(thresholds), np.nan)
    miss = 1 - np.searchsorted(sub, thresholds, side="left") / len(sub) if len(sub) else np.full(len(thresholds), np.nan)
    return {"thresholds": thresholds, "frr": frr, "miss": miss}


def threshold_for(records: list[dict], frr: float = TARGET_FRR) -> float | None:
    """The highest threshold whose false rejects stay at or under `frr`."""
    d = det(records)
    ok = d["thresholds"][d["frr"] <= frr]
    return float(ok.max()) if len(ok) else None


def summary(records: list[dict], threshold: float | None) -> dict:
    """The figures of one group: as shipped (the calibrated verdicts), and at
    `threshold` (chosen on validation speakers for 10% false rejects)."""
    own = [r for r in records if r["kind"] == "own"]
    sub = [r for r in records if r["kind"] == "substituted"]
    ins = [r for r in records if r["kind"] == "inserted"]
    mean = lambda xs: round(float(np.mean(xs)), 4) if len(xs) else None  # noqa: E731
    caught = [r for r in sub if r["verdict"] != "correct"]
    out = {
        "sounds": len(own),
        "substitutions": len(sub),
        "insertions": len(ins),
        "false_reject_rate": mean([r["verdict"] != "correct" for r in own]),
        "substitution_recall": mean([r["verdict"] != "correct" for r in sub]),
        "heard_accuracy": mean([r["heard"] == r["said"] for r in caught]),
        "missing_recall": mean([r["verdict"] == "missing" for r in ins]),
        "by_class": {},
    }
    if threshold is not None:
        out["at_threshold"] = {
            "threshold": round(threshold, 4),
            "false_reject_rate": mean([r["score"] < threshold for r in own]),
            "substitution_recall": mean([r["score"] < threshold for r in sub]),
        }
    for c in sorted({r["class"] for r in own}):
        o, s = [r for r in own if r["class"] == c], [r for r in sub if r["class"] == c]
        out["by_class"][c] = {"sounds": len(o), "false_reject_rate": mean([r["verdict"] != "correct" for r in o]),
                              "substitutions": len(s), "substitution_recall": mean([r["verdict"] != "correct" for r in s])}  # fmt: skip
    return out


def minimal_pairs(val_words: list[Word], test_words: list[Word], labels: list[str], verdict_of: Callable[[np.ndarray, str], dict]) -> tuple[dict, dict]:
    """The benchmark on test words, its threshold chosen on validation
    words: (section figures per group, DET curves per group)."""
    neighbours = Neighbours(cmu_dictionary())
    val = judge_words(val_words, labels, verdict_of, neighbours)
    test = judge_words(test_words, labels, verdict_of, neighbours)
    figures, curves = {}, {}
    for g in sorted({r["group"] for r in test}):
        v = [r for r in val if r["group"] == g] or val
        t = [r for r in test if r["group"] == g]
        figures[g] = {"words": sum(w.group == g for w in test_words), **summary(t, threshold_for(v))}
        curves[g] = det(t)
    return figures, curves


def expert_agreement(preds: Predictions, verdict_of: Callable[[np.ndarray, str], dict]) -> dict:
    """Pearson correlation between a phone's score (the calibrated
    probability of its canonical sound) and the experts' mean score (0-2),
    over all phones and per group (scipy.stats.pearsonr)."""
    from scipy.stats import pearsonr

    score = np.array([verdict_of(p, preds.labels[y])["probability"] for p, y in zip(preds.probs, preds.y)])
    expert = np.array([r["expert_score"] for r in preds.rows])
    group = np.array([r.get("group", "unknown") for r in preds.rows])

    def pcc(mask: np.ndarray) -> dict:
        if mask.sum() < 3 or np.ptp(score[mask]) == 0 or np.ptp(expert[mask]) == 0:
            return {"pcc": None, "phones": int(mask.sum())}
        return {"pcc": round(float(pearsonr(score[mask], expert[mask]).statistic), 4), "phones": int(mask.sum())}

    return {**pcc(np.ones(len(score), bool)), "per_group": {g: pcc(group == g) for g in sorted(set(group))}}
