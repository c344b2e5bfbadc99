"""The verdicts: sounds heard (with times and probabilities) matched to the
sounds expected by alignment, each judged with the model's calibrated
verdict."""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from phonemekit.assess.lexicon import default_variants, expected_parts
from phonemekit.deploy.runtime import Classifier
from phonemekit.errors import ConfigError

MODES = ("segment", "blend")
CONTEXT_S = 0.05  # kept around a phone cut from a blended word (as in training on aligned phones)


@dataclass
class Heard:
    start: float
    end: float
    probs: np.ndarray


def heard_segments(clf: Classifier, samples: np.ndarray, preset: str = "balanced") -> list[Heard]:
    """Sounds said apart: the live engine's VAD cuts them and scores each whole segment, as `live` does."""
    from phonemekit.live.engine import LiveEngine, load_live_config
    from phonemekit.live.sources import array_blocks

    heard: list[Heard] = []
    # Only each segment's final scores count: no sliding windows while a sound goes on.
    cfg = dataclasses.replace(load_live_config(preset), window_s=0.0)
    engine = LiveEngine(clf, cfg, on_final=lambda start, end, p: heard.append(Heard(start, end, p)))
    for block in array_blocks(samples):
        engine.feed(block)
    engine.flush()
    return heard


class WordSession:
    """A word expected on a live stream, its sounds said apart: each labelled
    segment the engine closes is kept (`hear`, the engine's `on_final`), and
    the verdicts are judged again over all of them (`verdicts`)."""

    MAX_HEARD = 64  # a word never has this many sounds; a stream that never ends its word keeps only the latest

    def __init__(self, clf: Classifier, expected: list[str], word: str | None = None, variants: dict[str, tuple[str, ...]] | None = None) -> None:
        unknown = [s for s in expected if s not in clf.labels]
        if unknown or not expected:
            raise ConfigError(f"sounds this model does not know: {' '.join(unknown[:5])}" if unknown else "a word needs at least one sound")
        self.clf, self.expected, self.word = clf, expected, word
        self.variants = default_variants() if variants is None else variants
        self.heard: list[Heard] = []
        self.changed = False

    def hear(self, start: float, end: float, probs: np.ndarray) -> None:
        self.heard = [*self.heard[-(self.MAX_HEARD - 1) :], Heard(start, end, probs)]
        self.changed = True

    def verdicts(self, final: bool) -> dict:
        """The stream's `word` event: verdicts so far (sounds not yet heard are
        `missing`), or the last ones (`final`)."""
        self.changed = False
        sounds, inserted = judge(self.expected, self.heard, self.clf.labels, self.clf.verdict_of, self.variants)
        return {"type": "word", "final": final, "word": self.word, "mode": "segment", "expected": self.expected, "sounds": sounds,
                "inserted": inserted, "correct": sum(s["verdict"] == "correct" for s in sounds)}  # fmt: skip


@functools.cache
def _aligner():
    """One pocketsphinx decoder for the process (loading its model takes
    longer than aligning a word), used by one thread at a time."""
    from phonemekit.align import get_aligner

    return get_aligner("pocketsphinx"), threading.Lock()


def heard_phones(clf: Classifier, samples: np.ndarray, words: list[str], expected: list[str],
                 pronunciations: dict[str, list[str]] | None = None) -> list[Heard]:  # fmt: skip
    """A word said whole: the forced aligner places its phones, each is
    classified with its context. `pronunciations`: sounds of words the
    aligner's dictionary lacks (sounded out by phonics rules)."""
    from phonemekit.align.base import AlignmentError

    aligner, lock = _aligner()
    try:
        with lock:
            for w, sounds in (pronunciations or {}).items():
                if not aligner.knows(w):
                    aligner.add_word(w, sounds)
            aligned = aligner.align(samples, words)
    except AlignmentError as e:
        raise ConfigError(f"the word could not be aligned in this audio ({e.reason}); try --mode segment") from None
    # Every phone the aligner placed: where its pronunciation differs from the
    # expected sounds, `match` reports the extra ones as inserted, the absent as missing.
    phones = [p for w in aligned for p in w.phones]
    sr = clf.sample_rate
    clips = [samples[max(0, int((p.start - CONTEXT_S) * sr)) : int((p.end + CONTEXT_S) * sr)] for p in phones]
    probs = clf.probs(clips) if clips else np.zeros((0, len(clf.labels)))
    return [Heard(p.start, p.end, q) for p, q in zip(phones, probs)]


def match(expected: list[str], heard: list[Heard], labels: list[str]) -> list[tuple[int | None, int | None]]:
    """Needleman-Wunsch over (expected sound, heard segment): a pair costs the
    model's doubt that the segment is that sound (1 - p), a gap costs 1, so a
    missing or extra sound shifts nothing. Returns aligned index pairs."""
    n, m = len(expected), len(heard)
    cost = np.zeros((n + 1, m + 1))
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    idx = [labels.index(s) for s in expected]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            pair = 1.0 - float(heard[j - 1].probs[idx[i - 1]])
            cost[i, j] = min(cost[i - 1, j - 1] + pair, cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    pairs, i, j = [], n, m
    while i or j:
        if i and j and np.isclose(cost[i, j], cost[i - 1, j - 1] + 1.0 - float(heard[j - 1].probs[idx[i - 1]])):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i and np.isclose(cost[i, j], cost[i - 1, j] + 1):
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    return pairs[::-1]


def assess(clf: Classifier, samples: np.ndarray, expected: list[str], *, mode: str = "segment", words: list[str] | None = None,
           word: str | None = None, variants: dict[str, tuple[str, ...]] | None = None,
           pronunciations: dict[str, list[str]] | None = None) -> dict:  # fmt: skip
    """Verdicts for the sounds of a word: the documented JSON shape.
    `variants`: sounds accepted in place of others (default: `variants.json`)."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r} ({' | '.join(MODES)})")
    unknown = [s for s in expected if s not in clf.labels]
    if unknown:
        raise ConfigError(f"sounds this model does not know: {' '.join(unknown)}")
    heard = heard_segments(clf, samples) if mode == "segment" else heard_phones(clf, samples, words or [word or ""], expected, pronunciations)
    sounds, inserted = judge(expected, heard, clf.labels, clf.verdict_of, default_variants() if variants is None else variants)
    return {"word": word, "mode": mode, "expected": expected, "sounds": sounds, "inserted": inserted,
            "correct": sum(s["verdict"] == "correct" for s in sounds), "model": clf.name}  # fmt: skip


def judge(expected: list[str], heard: list[Heard], labels: list[str], verdict_of: Callable[[np.ndarray, str], dict],
          variants: dict[str, tuple[str, ...]] | None = None) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Each expected sound matched to what was heard and judged by
    `verdict_of` (a classifier's calibrated verdict): (sounds, inserted).
    A sound heard as one of its accepted `variants` is correct too, and
    says which variant (`"variant": "aw_ao"`)."""
    variants = variants or {}
    sounds, inserted = [], []
    for i, j in match(expected, heard, labels):
        if i is None:
            h = heard[j]
            k = int(np.argmax(h.probs))
            inserted.append({"heard": labels[k], "probability": round(float(h.probs[k]), 4), "start": round(h.start, 3), "end": round(h.end, 3)})
            continue
        if j is None:
            sounds.append({"expected": expected[i], "verdict": "missing", "heard": None, "probability": None, "score": 0.0, "start": None, "end": None})
            continue
        h = heard[j]
        k = int(np.argmax(h.probs))
        v = verdict_of(h.probs, expected[i])
        variant = labels[k] if not v["accepted"] and labels[k] in variants.get(expected[i], ()) else None
        sounds.append({
            "expected": expected[i],
            "verdict": "correct" if v["accepted"] or variant else "substituted",
            **({"variant": variant} if variant else {}),
            "heard": labels[k],
            "probability": round(float(h.probs[k]), 4),
            "score": v["probability"],  # the calibrated probability of the expected sound
            "start": round(h.start, 3),
            "end": round(h.end, 3),
        })  # fmt: skip
    return sounds, inserted


def assess_expected(clf: Classifier, samples: np.ndarray, *, word: str | None = None, phones: str | list[str] | None = None,
                    text: str | None = None, mode: str = "segment", variants: dict[str, tuple[str, ...]] | None = None) -> dict:  # fmt: skip
    """`assess` for what a game asks: a word, a sentence (`text`; each sound
    says which word it belongs to) or sounds named directly. Words in
    neither dictionary are sounded out by phonics rules, and the result
    says so (`"guessed": ["zorb"]`)."""
    parts = expected_parts(clf.labels, word=word, phones=phones, text=text)
    expected = [s for _, sounds, _ in parts for s in sounds]
    if phones is not None:
        return assess(clf, samples, expected, mode=mode, variants=variants)
    guessed = {w: sounds for w, sounds, source in parts if source == "g2p"}
    res = assess(clf, samples, expected, mode=mode, words=[w for w, _, _ in parts], word=word if text is None else text, variants=variants,
                 pronunciations=guessed)  # fmt: skip
    if text is not None:
        owners = [w for w, sounds, _ in parts for _ in sounds]
        for sound, w in zip(res["sounds"], owners):
            sound["word"] = w
    res["guessed"] = list(guessed)
    return res
