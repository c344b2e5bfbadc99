"""`phonemekit bench-assess`: how long a reading verdict takes once the
child stops speaking, on this CPU, against the 150 ms target.

The words are synthesised (eSpeak NG) and padded to 1.5 s. Every call is
timed whole, from a finished recording to its verdicts: an upper bound on
the delay after the end of speech (a game that streams could do part of it
while the child speaks). Warm-up calls are excluded."""

from __future__ import annotations

import time

import numpy as np
import soxr

from phonemekit.assess.assess import MODES, assess
from phonemekit.assess.lexicon import word_sounds
from phonemekit.data.demo import ESpeak
from phonemekit.data.inventory import SOUNDS
from phonemekit.deploy.runtime import Classifier

TARGET_MS = 150.0
WORD_S = 1.5
VOICE, PITCH, RATE = "en-us+f3", 80, 130  # a child-like pitch
SR = 16_000


def _fit(x: np.ndarray, seconds: float) -> np.ndarray:
    """Centred in `seconds` of silence (longer audio is kept whole)."""
    n = max(int(seconds * SR), len(x))
    out = np.zeros(n, np.float32)
    a = (n - len(x)) // 2
    out[a : a + len(x)] = x
    return out


def word_audio(word: str, mode: str, espeak: ESpeak | None = None) -> np.ndarray:
    """The word said whole (blend), or its sounds said apart as phonics teaches them (segment)."""
    e = espeak or ESpeak()
    say = lambda text: soxr.resample(e.synth(text, VOICE, PITCH, RATE), e.sample_rate, SR).astype(np.float32)  # noqa: E731
    if mode == "blend":
        return _fit(say(word), WORD_S)
    espeak_of = {s.label: s.espeak for s in SOUNDS}
    pause = np.zeros(int(0.3 * SR), np.float32)
    parts = [pause]
    for s in word_sounds(word):
        parts += [say(espeak_of[s]), pause]
    return np.concatenate(parts)


def bench_assess(clf: Classifier, words: tuple[str, ...] = ("cat", "ship", "frog"), repeats: int = 10, modes: tuple[str, ...] = MODES) -> dict:
    """Per mode: the verdict time per word (median, 90th percentile, max) and whether it meets the target."""
    e = ESpeak()
    out = {"model": clf.name, "target_ms": TARGET_MS, "words": list(words), "repeats": repeats, "modes": {}}
    for mode in modes:
        times, correct, total, seconds = [], 0, 0, []
        for word in words:
            x = word_audio(word, mode, e)
            expected = word_sounds(word)
            seconds.append(len(x) / SR)
            for k in range(repeats + 2):
                t0 = time.perf_counter()
                res = assess(clf, x, expected, mode=mode, word=word)
                if k >= 2:  # warm-up excluded
                    times.append((time.perf_counter() - t0) * 1000)
            correct, total = correct + res["correct"], total + len(expected)
        t = np.array(times)
        out["modes"][mode] = {
            "audio_s": round(float(np.mean(seconds)), 2),
            "median_ms": round(float(np.median(t)), 1),
            "p90_ms": round(float(np.percentile(t, 90)), 1),
            "max_ms": round(float(t.max()), 1),
            "meets_target": bool(np.median(t) <= TARGET_MS),
            "sounds_correct": f"{correct}/{total}",
        }
    return out
