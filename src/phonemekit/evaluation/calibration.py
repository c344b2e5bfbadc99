"""Calibrated "did the child say it?" verdicts.

A game asks for one sound and needs a yes or no it can trust. Two things
are fitted on the validation speakers (never test):

- a temperature for the class probabilities (`p ∝ p_model^(1/T)`, the
  temperature scaling of Guo et al. 2017), chosen by minimising the
  validation negative log-likelihood, so that on voices like the
  validation ones a reported 0.8 is right about 80% of the time (with few
  validation speakers that can miss the test speakers: the report shows
  ECE on both);
- per-sound acceptance thresholds on the calibrated probability of the
  expected sound, each chosen so that at most `target_far` of the
  validation clips of *other* sounds would be accepted (the false-accept
  rate a game tolerates). Sounds with fewer than `min_clips` validation
  clips of their own use one global threshold fitted the same way on all
  sounds pooled.

`Calibration` travels in the checkpoint's sidecar and in the exported ONNX
metadata; `deploy.runtime.Classifier.verdict`, `live --expect`, `serve` and
the ensembles apply it. numpy and scipy only: the runtime imports this
module and must not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize
import scipy.special

from phonemekit.errors import ConfigError, IntegrityError

FORMAT = "phonemekit-calibration/1"


@dataclass(frozen=True)
class Calibration:
    temperature: float
    target_far: float
    threshold: float  # global acceptance threshold, for sounds without their own
    thresholds: dict[str, float] = field(default_factory=dict)  # per sound

    def threshold_of(self, label: str) -> float:
        return self.thresholds.get(label, self.threshold)

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities from a model's (N, C) probabilities."""
        return calibrate(np.log(np.clip(probs, 1e-30, None)), self.temperature)

    def verdict(self, probs: np.ndarray, labels: list[str], expect: str) -> dict:
        """Accept or reject `expect` for one clip's model probabilities (C,)."""
        p = self.apply(np.asarray(probs, dtype=np.float64)[None])[0]
        k = labels.index(expect)
        thr = self.threshold_of(expect)
        return {"expected": expect, "accepted": bool(p[k] >= thr), "probability": round(float(p[k]), 4), "threshold": round(thr, 4), "calibrated": True}

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "temperature": self.temperature,
            "target_far": self.target_far,
            "threshold": self.threshold,
            "thresholds": dict(self.thresholds),
        }

    @classmethod
    def from_dict(cls, d: object, labels: list[str] | None = None) -> Calibration:
        """Checked: a malformed calibration is refused, never half-applied."""

        def bad(why: str) -> IntegrityError:
            return IntegrityError(f"malformed calibration: {why}")

        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise bad(f"expected an object with format {FORMAT!r}")
        t, far, thr, per = d.get("temperature"), d.get("target_far"), d.get("threshold"), d.get("thresholds")
        if not _finite(t) or not 0.01 <= t <= 100:
            raise bad(f"temperature {t!r}")
        if not _finite(far) or not 0 < far < 1:
            raise bad(f"target_far {far!r}")
        if not isinstance(per, dict) or not all(isinstance(k, str) and _finite(v) and 0 <= v <= 1 for k, v in {**per, "": thr}.items()):
            raise bad("thresholds must be probabilities")
        if labels is not None and set(per) - set(labels):
            raise bad(f"thresholds for unknown sounds {sorted(set(per) - set(labels))[:3]}")
        return cls(float(t), float(far), float(thr), {k: float(v) for k, v in per.items()})


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def uncalibrated_verdict(probs: np.ndarray, labels: list[str], expect: str) -> dict:
    """For models exported before calibration: accept when the expected sound is top-1."""
    k = labels.index(expect)
    return {"expected": expect, "accepted": bool(int(np.argmax(probs)) == k), "probability": round(float(probs[k]), 4), "threshold": None, "calibrated": False}


def check_expect(expect: str | None, labels: list[str]) -> None:
    if expect is not None and expect not in labels:
        raise ConfigError(f"expected sound {expect!r} is not a label of this model ({', '.join(labels)})")


# ------------------------------------------------------------------ fitting


def calibrate(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    return scipy.special.softmax(np.asarray(log_probs, dtype=np.float64) / temperature, axis=1)


def fit_temperature(log_probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood (bounded search over log T)."""

    def nll(log_t: float) -> float:
        return -float(scipy.special.log_softmax(log_probs / math.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    res = scipy.optimize.minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return round(math.exp(res.x), 4)


def far_threshold(impostor: np.ndarray, target_far: float) -> float:
    """The lowest threshold at which at most `target_far` of impostor scores are accepted (score >= threshold)."""
    if not len(impostor):
        return 0.5
    s = np.sort(impostor)[::-1]
    k = int(math.floor(target_far * len(s)))  # this many impostors may pass
    if k >= len(s):
        return 0.0
    return float(min(1.0, np.nextafter(s[k], np.inf)))


def fit_calibration(log_probs: np.ndarray, y: np.ndarray, labels: list[str], *, target_far: float = 0.05, min_clips: int = 5) -> Calibration:
    """Temperature and acceptance thresholds from validation scores (N, C) and labels (N,)."""
    if not 0 < target_far < 1:
        raise ConfigError(f"target false-accept rate must be in (0, 1), got {target_far}")
    if len(y) == 0:
        raise ConfigError("cannot calibrate on zero validation clips")
    t = fit_temperature(log_probs, y)
    p = calibrate(log_probs, t)
    others = np.ones_like(p, dtype=bool)
    others[np.arange(len(y)), y] = False
    up = lambda v: min(1.0, math.ceil(v * 1e6) / 1e6)  # noqa: E731  (rounded up: rounding down could let one more impostor in)
    thresholds = {labels[k]: up(far_threshold(p[others[:, k], k], target_far)) for k in range(len(labels)) if (y == k).sum() >= min_clips}
    return Calibration(t, target_far, up(far_threshold(p[others], target_far)), thresholds)


# ------------------------------------------------------------------ measuring


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence (equal-width bins)."""
    conf, hit = probs.max(1), probs.argmax(1) == y
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs(conf[idx == b].mean() - hit[idx == b].mean()) * (idx == b).mean() for b in range(bins) if (idx == b).any()))


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> dict:
    """Per confidence bin: mean confidence, accuracy, count (the reliability diagram)."""
    conf, hit = probs.max(1), probs.argmax(1) == y
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    keep = [b for b in range(bins) if (idx == b).any()]
    return {
        "confidence": [float(conf[idx == b].mean()) for b in keep],
        "accuracy": [float(hit[idx == b].mean()) for b in keep],
        "count": [int((idx == b).sum()) for b in keep],
    }


def verdict_rates(cal: Calibration, log_probs: np.ndarray, y: np.ndarray, labels: list[str]) -> dict:
    """False-accept and false-reject rates at the operating point, over every
    (clip, expected sound) pair: a clip of sound k asked as k is a genuine
    attempt (rejecting it is a false reject); asked as any other sound it is
    an impostor (accepting it is a false accept). Also per sound."""
    return verdict_rates_of(cal, calibrate(log_probs, cal.temperature), y, labels)


def verdict_rates_of(cal: Calibration, p: np.ndarray, y: np.ndarray, labels: list[str]) -> dict:
    """`verdict_rates` on calibrated probabilities."""
    thr = np.array([cal.threshold_of(lab) for lab in labels])
    accept = p >= thr[None, :]
    genuine = np.zeros_like(accept)
    genuine[np.arange(len(y)), y] = True
    per = {}
    for k, lab in enumerate(labels):
        g, i = genuine[:, k], ~genuine[:, k]
        if g.any():
            per[lab] = {
                "far": float(accept[i, k].mean()) if i.any() else None,
                "frr": float((~accept[g, k]).mean()),
                "clips": int(g.sum()),
                "threshold": round(float(thr[k]), 4),
            }
    return {
        "far": float(accept[~genuine].mean()) if (~genuine).any() else None,
        "frr": float((~accept[genuine]).mean()) if len(y) else None,
        "clips": int(len(y)),
        "per_sound": per,
    }


def det_points(p: np.ndarray, y: np.ndarray) -> dict:
    """The DET curve (false-accept vs false-reject over all thresholds) of
    the expected sound's calibrated probability `p` (N, C), by scikit-learn."""
    import sklearn.metrics

    genuine = np.zeros_like(p, dtype=bool)
    genuine[np.arange(len(y)), y] = True
    fpr, fnr, _ = sklearn.metrics.det_curve(genuine.ravel(), p.ravel())
    step = max(1, len(fpr) // 200)  # enough points to draw, not to bloat report.json
    return {"far": [float(v) for v in fpr[::step]], "frr": [float(v) for v in fnr[::step]]}


def summary(
    cal: Calibration,
    val_log_probs: np.ndarray,
    val_y: np.ndarray,
    test_log_probs: np.ndarray,
    test_y: np.ndarray,
    labels: list[str],
    groups: np.ndarray | None = None,
) -> dict:
    """What the report shows for one model: ECE before and after on test,
    FAR/FRR on held-out speakers (all, and per group), reliability and DET data."""
    raw, cal_p = calibrate(test_log_probs, 1.0), calibrate(test_log_probs, cal.temperature)  # each once; the figures below share them
    out = {
        "temperature": cal.temperature,
        "target_far": cal.target_far,
        "global_threshold": cal.threshold,
        "own_thresholds": len(cal.thresholds),
        "ece_val": {"before": ece(calibrate(val_log_probs, 1.0), val_y), "after": ece(calibrate(val_log_probs, cal.temperature), val_y)},
        "ece_test": {"before": ece(raw, test_y), "after": ece(cal_p, test_y)},
        "test": verdict_rates_of(cal, cal_p, test_y, labels),
        "reliability": {"before": reliability(raw, test_y), "after": reliability(cal_p, test_y)},
        "det": det_points(cal_p, test_y),
    }
    if groups is not None:
        out["per_group"] = {}
        for g in sorted(set(groups)):
            r = verdict_rates_of(cal, cal_p[groups == g], test_y[groups == g], labels)
            out["per_group"][str(g)] = {"far": r["far"], "frr": r["frr"], "clips": r["clips"]}
    return out
