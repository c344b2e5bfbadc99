"""Voice activity detection on 32 ms frames.

- `silero`: silero-vad's shipped ONNX model (no torch). It is trained on
  speech with voicing and misses quiet unvoiced sounds (f, th, s: a third
  of the demo's held-out replay).
- `energy`: a fixed dBFS gate. Hears every sound in silence, fires on any
  noise louder than the gate.
- `hybrid` (the default): speech when silero says so *or* the frame rises
  well above a tracked noise floor. The floor follows the quietest recent
  frames, so steady noise (fans, hum, traffic) raises it instead of opening
  segments, and a quiet fricative still stands out from it. No maintained
  library offers such a floor-relative gate for streaming frames, hence the
  few lines below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phonemekit.deploy import onnx as ox
from phonemekit.errors import PhonemekitError

SR = 16_000
FRAME = 512  # 32 ms, what silero-vad expects at 16 kHz


class LiveError(PhonemekitError):
    """The live path cannot run as asked (no audio device, missing PortAudio, ...)."""


def dbfs(x: np.ndarray, axis=None) -> np.ndarray | float:
    """RMS level in dB relative to full scale."""
    return 20 * np.log10(np.sqrt(np.mean(x**2, axis=axis)) + 1e-10)


class EnergyVAD:
    """Cheap gate: frame RMS in dBFS against a threshold."""

    def __init__(self, threshold_db: float) -> None:
        self.threshold_db = threshold_db

    def reset(self) -> None:
        pass

    def __call__(self, frame: np.ndarray) -> float:
        return 1.0 if dbfs(frame) > self.threshold_db else 0.0


class SileroVAD:
    """silero-vad through the ONNX model the package ships; no torch needed."""

    CONTEXT = 64

    def __init__(self) -> None:
        try:
            import silero_vad
        except ImportError as e:
            raise LiveError("silero-vad is not installed (pip install 'phonemekit[live]'), or use --vad energy") from e
        path = Path(silero_vad.__file__).parent / "data" / "silero_vad_16k_op15.onnx"
        self.session = ox.session(path, threads=1)
        self.reset()

    def reset(self) -> None:
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros((1, self.CONTEXT), np.float32)

    def __call__(self, frame: np.ndarray) -> float:
        x = np.concatenate([self.context, frame[None, :].astype(np.float32)], axis=1)
        out, self.state = self.session.run(None, {"input": x, "state": self.state, "sr": np.array(SR, dtype=np.int64)})
        self.context = x[:, -self.CONTEXT :]
        return float(out[0, 0])


class NoiseFloorVAD:
    """Frame level against a tracked noise floor: the floor drops at once to
    a quieter frame and rises slowly (`rise_db_s`) while frames stay above
    it, the minimum-statistics idea of noise estimation in its simplest
    form. Speech: `margin_db` above the floor and above `min_db`."""

    def __init__(self, margin_db: float = 14.0, min_db: float = -60.0, rise_db_s: float = 3.0) -> None:
        self.margin_db, self.min_db = margin_db, min_db
        self.rise = rise_db_s * FRAME / SR
        self.reset()

    def reset(self) -> None:
        self.floor: float | None = None

    def __call__(self, frame: np.ndarray) -> float:
        level = float(dbfs(frame))
        self.floor = level if self.floor is None else min(level, self.floor + self.rise)
        return 1.0 if level > max(self.floor + self.margin_db, self.min_db) else 0.0


class HybridVAD:
    """Speech when silero-vad is sure (>= `silero_threshold`) or the noise-floor gate opens."""

    def __init__(self, margin_db: float, min_db: float, silero_threshold: float) -> None:
        self.silero, self.gate = SileroVAD(), NoiseFloorVAD(margin_db, min_db)
        self.silero_threshold = silero_threshold

    def reset(self) -> None:
        self.silero.reset()
        self.gate.reset()

    def __call__(self, frame: np.ndarray) -> float:
        return max(float(self.silero(frame) >= self.silero_threshold), self.gate(frame))


VADS = ("hybrid", "silero", "energy")


def make_vad(cfg):
    """The VAD a `LiveConfig` names."""
    if cfg.vad == "silero":
        return SileroVAD()
    if cfg.vad == "hybrid":
        return HybridVAD(cfg.floor_margin_db, cfg.floor_min_db, cfg.hybrid_silero_threshold)
    return EnergyVAD(cfg.energy_threshold_db)
