"""ONNX Runtime classifier: what a game ships. Imports no torch.

    clf = Classifier.load("wavlm-ctc.e2e.onnx")
    clf.classify(waveform)            # [(label, prob), ...] top-k
    clf.probs([w1, w2, ...])          # (N, C)
    clf.verdict(waveform, "s")        # {"accepted": ..., "probability": ...}: did the child say /s/?
    clf.with_profile(profile)         # the same model adapted to one enrolled speaker (`phonemekit enrol`)

Labels, blank index and sample rate come from the file's metadata. On load
the recorded sha256 of the graph and the integrity digest over it and every
metadata entry are verified (an edited label table is refused), malformed
metadata is refused, and an optional allow-list of trusted digests can be
enforced.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path

import numpy as np
import onnx

from phonemekit.config import AudioConfig
from phonemekit.data.audio import load_audio
from phonemekit.data.inventory import label_problem
from phonemekit.deploy import bundled
from phonemekit.deploy import onnx as ox
from phonemekit.errors import DataError, IntegrityError
from phonemekit.evaluation.calibration import Calibration, check_expect, uncalibrated_verdict
from phonemekit.evaluation.enrolment import SpeakerProfile, enrol

log = logging.getLogger(__name__)

# Metadata values phonemekit stores as JSON; every other entry is a plain
# string (ours, or one a tool added, e.g. the quantizer's "onnx.infer").
_JSON = ("labels", "blank", "sample_rate", "frame_rate", "max_frames", "encoder_spec", "calibration", "ensemble")


class Classifier:
    def __init__(self, session, meta: dict, path: Path) -> None:
        self.session, self.meta, self.path = session, meta, path
        self.labels: list[str] = meta["labels"]
        self.blank: int = meta["blank"]
        self.sample_rate: int = meta["sample_rate"]
        self.form: str = meta["form"]
        self.name: str = meta.get("model_name", path.stem)
        self.outputs = [o.name for o in session.get_outputs()]
        self.calibration: Calibration | None = meta.get("calibration")
        self.profile: SpeakerProfile | None = None

    @classmethod
    def load(cls, path: str | os.PathLike, *, threads: int | None = None, trusted: set[str] | None = None) -> Classifier:
        """An exported end-to-end or head-only ONNX file, or a bundled model by
        name (`children`: exported from the package on first use)."""
        if not Path(path).exists() and str(path) in bundled.available():
            path = bundled.onnx_path(str(path))
        path = Path(path)
        if not path.is_file():
            raise DataError(f"no ONNX model at {path}")
        try:
            proto = onnx.load(str(path))
        except Exception as e:  # truncated or not ONNX at all: onnx raises protobuf's own errors
            raise IntegrityError(f"{path} is not a readable ONNX model (truncated or corrupt): {str(e).splitlines()[0][:200]}") from e
        raw = ox.metadata_of(proto)
        if "integrity_sha256" not in raw or "labels" not in raw:
            raise IntegrityError(f"{path} carries no phonemekit metadata (or was exported by an older phonemekit); export it with `phonemekit export`")
        if not ox.is_intact(proto):
            raise IntegrityError(f"{path} does not match its recorded sha256 (its graph or metadata were changed: tampered or corrupt); refusing to load")
        if trusted is not None and raw["integrity_sha256"] not in trusted:
            raise IntegrityError(f"{path} (sha256 {raw['integrity_sha256'][:12]}...) is not in the trusted-hashes list")
        meta = _parse_metadata(raw, path)
        sess = ox.session(proto.SerializeToString(), threads)
        classes = sess.get_outputs()[0].shape[-1]  # probs (B, C): a static class count must match the labels
        if isinstance(classes, int) and classes != len(meta["labels"]):
            raise IntegrityError(f"{path} has {len(meta['labels'])} labels in its metadata but its graph scores {classes} classes")
        return cls(sess, meta, path)

    def _run(self, x: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        key = "waveform" if self.form == "e2e" else "features"
        limit = self.meta.get("max_frames")
        if limit is not None and len(lengths):
            # The exported CTC scorer is exact only up to this many frames.
            frames = lengths.max() * self.meta["frame_rate"] / self.sample_rate if self.form == "e2e" else lengths.max()
            if frames > limit:
                raise DataError(
                    f"input of {frames:.0f} frames is longer than {self.path.name} handles ({limit} frames, "
                    f"{limit / self.meta['frame_rate']:.1f} s; raise audio.max_seconds and re-export for longer clips)"
                )
        return self.session.run(None, {key: x.astype(np.float32, copy=False), "lengths": lengths.astype(np.int64)})

    def _outputs(self, waves: list[np.ndarray], names: tuple[str, ...], batch_size: int) -> list[np.ndarray]:
        """The graph's outputs `names` for 16 kHz mono waveforms, in input order."""
        if self.form != "e2e":
            raise DataError(f"{self.path} is a head-only model; use probs_features() or export the e2e form")
        where = [self.outputs.index(n) for n in names]
        order = np.argsort([len(w) for w in waves])  # similar lengths share a batch
        res: list[list] = [[None] * len(waves) for _ in names]
        for start in range(0, len(waves), batch_size):
            idx = order[start : start + batch_size]
            lens = np.array([len(waves[i]) for i in idx])
            x = np.zeros((len(idx), lens.max()), np.float32)
            for j, i in enumerate(idx):
                x[j, : lens[j]] = waves[i]
            out = self._run(x, lens)
            for k, w in enumerate(where):
                for j, i in enumerate(idx):
                    res[k][i] = out[w][j]
        return [np.stack(r) for r in res]

    def probs(self, waves: list[np.ndarray], batch_size: int = 1) -> np.ndarray:
        """Class probabilities for 16 kHz mono waveforms (e2e files), adapted
        to the enrolled speaker when the classifier carries a profile."""
        if self.profile is None:
            return self._outputs(waves, ("probs",), batch_size)[0]
        return self.profile.adapt(*self._outputs(waves, ("log_probs", ox.EMBEDDING), batch_size))

    def probs_features(self, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        out = self._run(features, lengths)
        if self.profile is None:
            return out[0]
        return self.profile.adapt(out[self.outputs.index("log_probs")], out[self.outputs.index(ox.EMBEDDING)])

    @property
    def enrollable(self) -> bool:
        """Whether the graph gives the embedding a speaker profile adapts on (MLP heads)."""
        return ox.EMBEDDING in self.outputs and "log_probs" in self.outputs

    def _check_enrollable(self) -> None:
        if not self.enrollable:
            raise DataError(f"{self.path.name} has no embedding output to adapt (enrolment needs an MLP-head model exported by this version)")

    def enrol(self, waves: list[np.ndarray], labels: list[str], reg: float | None = None) -> SpeakerProfile:
        """A profile of one speaker from their clips (`labels[i]` said in `waves[i]`)."""
        self._check_enrollable()
        log_probs, emb = self._outputs(waves, ("log_probs", ox.EMBEDDING), 1)
        kw = {} if reg is None else {"reg": reg}
        return enrol(self.meta.get("checkpoint_sha256", ""), self.labels, emb, log_probs, labels, **kw)

    def with_profile(self, profile: SpeakerProfile | None) -> Classifier:
        """This classifier (sharing its session) adapted to one speaker; None: unadapted."""
        if profile is not None:
            self._check_enrollable()
            profile.check_model(self.meta.get("checkpoint_sha256"), self.labels, self.path.name)
        clf = copy.copy(self)
        clf.profile = profile
        return clf

    def classify(self, waveform: np.ndarray, top_k: int = 3) -> list[tuple[str, float]]:
        p = self.probs([np.asarray(waveform, dtype=np.float32)])[0]
        best = np.argsort(-p)[:top_k]
        return [(self.labels[i], float(p[i])) for i in best]

    def verdict(self, waveform: np.ndarray, expect: str, top_k: int = 3) -> dict:
        """Did this clip say `expect`? The calibrated accept/reject the file
        carries (fitted on validation speakers), with the top-k beside it."""
        check_expect(expect, self.labels)
        p = self.probs([np.asarray(waveform, dtype=np.float32)])[0]
        return {**self.verdict_of(p, expect), "top_k": [(self.labels[i], float(p[i])) for i in np.argsort(-p)[:top_k]]}

    def verdict_of(self, probs: np.ndarray, expect: str) -> dict:
        """The verdict for already computed probabilities (the live engine's final segment)."""
        if self.calibration is None:
            return uncalibrated_verdict(probs, self.labels, expect)
        return self.calibration.verdict(probs, self.labels, expect)

    def classify_file(self, path: str | os.PathLike, top_k: int = 3) -> list[tuple[str, float]]:
        return self.classify(load_audio(path, AudioConfig(sample_rate=self.sample_rate)).samples, top_k)


def keep_profile(clf: Classifier, profile: SpeakerProfile | None) -> Classifier:
    """A reloaded model keeps a speaker profile that was enrolled on that very
    model; a profile of the model it replaces no longer fits it and is dropped."""
    try:
        return clf.with_profile(profile)
    except DataError as e:
        log.warning("a speaker profile is dropped on reload: %s", e)
        return clf


def _parse_metadata(raw: dict[str, str], path: Path) -> dict:
    """Metadata values decoded and checked: a malformed entry is a refusal,
    never a silent wrong answer."""
    try:
        meta = {k: (json.loads(v) if k in _JSON else v) for k, v in raw.items()}
    except json.JSONDecodeError as e:
        raise IntegrityError(f"{path} has malformed metadata ({e}); refusing to load") from e
    checks = {
        "labels": lambda v: isinstance(v, list) and bool(v) and not any(map(label_problem, v)) and len(set(v)) == len(v),
        "blank": lambda v: isinstance(v, int) and not isinstance(v, bool) and (v == -1 or v == len(meta.get("labels") or [])),
        "sample_rate": lambda v: isinstance(v, int) and 8000 <= v <= 48000,
        "frame_rate": lambda v: isinstance(v, (int, float)) and 0 < v <= 1000,
        "max_frames": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "form": lambda v: v in ("head", "e2e"),
    }
    for key, ok in checks.items():
        if key == "labels" and isinstance(meta.get(key), list) and (why := next(filter(None, map(label_problem, meta[key])), None)):
            raise IntegrityError(f"{path} has a label that is not a sound's name ({why}); refusing to load")
        if key not in meta or not ok(meta[key]):
            raise IntegrityError(f"{path} has malformed metadata ({key} is {'missing' if key not in meta else repr(meta[key])[:60]}); refusing to load")
    if "calibration" in meta:
        try:
            meta["calibration"] = Calibration.from_dict(meta["calibration"], meta["labels"])
        except IntegrityError as e:
            raise IntegrityError(f"{path}: {e}; refusing to load") from e
    return meta


def load_trusted_hashes(path: str | os.PathLike) -> set[str]:
    """One sha256 per line (comments with #)."""
    lines = Path(path).read_text().splitlines()
    return {ln.split("#")[0].strip().lower() for ln in lines if ln.split("#")[0].strip()}
