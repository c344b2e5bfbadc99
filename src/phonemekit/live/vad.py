"""Voice activity detection on 32 ms frames: silero-vad's shipped ONNX
model (no torch), or an energy gate."""

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


def make_vad(kind: str, energy_threshold_db: float):
    return SileroVAD() if kind == "silero" else EnergyVAD(energy_threshold_db)
