"""Enrolment of a new speaker: K clips per sound adapt a model to one voice.

A profile is a residual on the class scores, linear in the model's last
hidden layer (its `embedding`):

    scores = log_probs + embedding @ weight.T + bias

fitted on the enrolment clips by L2-penalised cross-entropy (scipy's
L-BFGS), starting from zero. It is the same as fine-tuning the head's last
layer with a pull towards its trained weights, but needs only what an
exported graph outputs (log_probs, embedding), so the ONNX runtime, the
server and the browser apply it as they are. The penalty `reg` keeps a
profile from one clip per sound close to the model; the recipe's
`enrolment` step chooses it on validation speakers and measures top-1 by K
on speakers no model has heard (`enrolment_by_shots`).

A profile file is untrusted input: its format, the model it was fitted for,
its labels and its shapes are checked on load, and anything else is refused
with one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from phonemekit.errors import DataError
from phonemekit.fileio import read_json, write_json

FORMAT = "phonemekit-profile/1"
# Chosen by `make real`'s enrolment step on validation speakers (real and
# synthetic, one clip per sound; `sections.enrolment.choice` of its report).
DEFAULT_REG = 0.3
MAX_PROFILE_BYTES = 5_000_000  # a profile of 39 classes on a 256-wide embedding is ~0.2 MB of JSON
MAX_ITER = 100


@dataclass(frozen=True)
class SpeakerProfile:
    """One speaker's adaptation of one model (by its checkpoint digest)."""

    model: str  # the checkpoint sha256 the profile was fitted on
    labels: list[str]
    weight: np.ndarray  # (C, E)
    bias: np.ndarray  # (C,)
    shots: dict[str, int]  # enrolment clips per sound
    reg: float

    def adapt(self, log_probs: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        """Adapted class probabilities (N, C) from a model's outputs."""
        if embedding.shape[-1] != self.weight.shape[1]:
            raise DataError(f"the profile adapts a {self.weight.shape[1]}-wide embedding, the model gives {embedding.shape[-1]}")
        return softmax(log_probs + embedding @ self.weight.T + self.bias, axis=-1)

    def check_model(self, checkpoint_sha256: str | None, labels: list[str], name: str) -> None:
        if checkpoint_sha256 != self.model:
            raise DataError(f"this profile was enrolled on another model (checkpoint {self.model[:12]}), not {name}; enrol again with it")
        if labels != self.labels:
            raise DataError(f"this profile's labels differ from {name}'s; enrol again with it")

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "labels": self.labels,
            "shots": self.shots,
            "reg": self.reg,
            "weight": np.round(self.weight, 7).tolist(),
            "bias": np.round(self.bias, 7).tolist(),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, d: object) -> SpeakerProfile:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise DataError(f"not a speaker profile (expected format {FORMAT!r}; write one with `phonemekit enrol`)")
        labels, model, shots, reg = d.get("labels"), d.get("model"), d.get("shots"), d.get("reg")
        if not isinstance(model, str) or not model or not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise DataError("a speaker profile needs the model's digest and its labels")
        if len(set(labels)) != len(labels):
            raise DataError("a speaker profile's labels repeat")
        if not isinstance(shots, dict) or not all(k in labels and type(v) is int and v >= 0 for k, v in shots.items()):
            raise DataError("a speaker profile's shots must count clips of its own labels")
        if not isinstance(reg, (int, float)) or isinstance(reg, bool) or not math.isfinite(reg) or reg <= 0:
            raise DataError("a speaker profile's reg must be a positive number")
        weight, bias = _matrix(d.get("weight"), "weight"), _matrix(d.get("bias"), "bias")
        if weight.ndim != 2 or weight.shape[0] != len(labels) or bias.shape != (len(labels),):
            raise DataError(f"a speaker profile's weight must be ({len(labels)}, E) and its bias ({len(labels)},)")
        return cls(model, labels, weight, bias, dict(shots), float(reg))

    @classmethod
    def load(cls, path: str | Path) -> SpeakerProfile:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"no speaker profile at {path}")
        if path.stat().st_size > MAX_PROFILE_BYTES:
            raise DataError(f"{path} is too large for a speaker profile ({path.stat().st_size} bytes)")
        try:
            return cls.from_dict(read_json(path))
        except DataError as e:
            raise DataError(f"{path}: {e}") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise DataError(f"{path} is not a speaker profile (not JSON: {str(e)[:80]})") from None


def _matrix(x: object, key: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"a speaker profile's {key} is not a numeric array") from None
    if a.dtype == object or not np.all(np.isfinite(a)):
        raise DataError(f"a speaker profile's {key} holds non-finite or non-numeric values")
    return a


def fit_residual(embedding: np.ndarray, log_probs: np.ndarray, y: np.ndarray, reg: float = DEFAULT_REG) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) minimising cross-entropy of the adapted scores plus
    reg * (|weight|^2 + |bias|^2): convex, so L-BFGS from zero finds the one answer."""
    n, e = embedding.shape
    c = log_probs.shape[1]
    onehot = np.eye(c)[y]
    x = embedding.astype(np.float64)

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: c * e].reshape(c, e), theta[c * e :]
        s = log_probs + x @ w.T + b
        loss = -np.sum(onehot * log_softmax(s, axis=1)) / n + reg * (np.sum(w**2) + np.sum(b**2))
        g = (softmax(s, axis=1) - onehot) / n
        return loss, np.concatenate([(g.T @ x + 2 * reg * w).ravel(), g.sum(0) + 2 * reg * b])

    res = minimize(loss_and_grad, np.zeros(c * e + c), jac=True, method="L-BFGS-B", options={"maxiter": MAX_ITER})
    return res.x[: c * e].reshape(c, e), res.x[c * e :]


def enrol(model_sha256: str, labels: list[str], embedding: np.ndarray, log_probs: np.ndarray, clip_labels: list[str],
          reg: float = DEFAULT_REG) -> SpeakerProfile:  # fmt: skip
    """A profile from one speaker's enrolment clips (their embeddings and log-probs, in order of `clip_labels`)."""
    unknown = sorted(set(clip_labels) - set(labels))
    if unknown:
        raise DataError(f"enrolment clips of sounds the model does not know: {', '.join(unknown[:10])}")
    if not clip_labels:
        raise DataError("no enrolment clips")
    y = np.array([labels.index(lab) for lab in clip_labels])
    w, b = fit_residual(embedding, log_probs, y, reg)
    shots = {lab: int(n) for lab, n in zip(*np.unique(clip_labels, return_counts=True))}
    return SpeakerProfile(model_sha256, list(labels), w, b, shots, reg)


def pick_shots(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of k clips of each sound that has more than k (the rest is what is tested)."""
    picked = [rng.choice(np.flatnonzero(y == c), k, replace=False) for c in np.unique(y) if np.sum(y == c) > k]
    return np.concatenate(picked).astype(int) if picked and k else np.zeros(0, int)


def enrolment_by_shots(embedding: np.ndarray, log_probs: np.ndarray, y: np.ndarray, speakers: np.ndarray, shots=(0, 1, 2, 5),
                       reg: float = DEFAULT_REG, seed: int = 0) -> dict[int, dict]:  # fmt: skip
    """Top-1 after enrolling each speaker apart on K clips per sound (drawn
    with a seed, among sounds the speaker said more than K times) and testing
    on the rest of their clips; K = 0 scores the same clips unadapted, so
    each K compares with its own baseline (`unadapted_top1`). Top-1 is the
    mean over speakers, with a bootstrap interval over speakers."""
    from phonemekit.evaluation.metrics import bootstrap_ci  # here: metrics imports torch, which the runtime side of this module must not

    rng = np.random.default_rng(seed)
    out = {}
    for k in shots:
        per_speaker, base, clips = [], [], 0
        for s in np.unique(speakers):
            idx = np.flatnonzero(speakers == s)
            enrolled = idx[pick_shots(y[idx], k, rng)] if k else np.zeros(0, int)
            test = np.setdiff1d(idx, enrolled)
            if not len(test):
                continue
            scores = log_probs[test]
            base.append(float(np.mean(scores.argmax(1) == y[test])))
            if len(enrolled):
                w, b = fit_residual(embedding[enrolled], log_probs[enrolled], y[enrolled], reg)
                scores = scores + embedding[test] @ w.T + b
            per_speaker.append(float(np.mean(scores.argmax(1) == y[test])))
            clips += len(test)
        out[k] = {
            "top1": float(np.mean(per_speaker)) if per_speaker else None,
            "top1_ci95_speakers": bootstrap_ci(np.array(per_speaker)) if len(per_speaker) > 1 else None,
            "unadapted_top1": float(np.mean(base)) if base else None,
            "speakers": len(per_speaker),
            "test_clips": clips,
        }
    return out
