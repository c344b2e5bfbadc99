"""`Run`: the one object that knows a run folder's layout.

    RUN/model.safetensors   weights (safetensors; never a pickle)
    RUN/model.json          sidecar: config, labels, blank, encoder spec, sha256 of the weights
    RUN/predictions.npz     scores per held-out clip, parts "test" and "val"
    RUN/metrics.json        held-out metrics (speakers by pseudonym)
    RUN/history.json        one record per epoch
    RUN/onnx/NAME.FORM[.int8].onnx, RUN/onnx/NAME.parity.json

Every other module reaches these files through a `Run`, which reads the
sidecar once. Loading verifies the weights' sha256 against the sidecar (and
an optional allow-list) before anything is deserialised.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save

from phonemekit import __version__
from phonemekit.config import ModelConfig, from_dict
from phonemekit.errors import DataError, IntegrityError
from phonemekit.evaluation.predict import Predictions
from phonemekit.fileio import atomic_open, read_json, sha256_file, write_bytes, write_json
from phonemekit.models.encoders import EncoderSpec, build_encoder
from phonemekit.models.model import PhonemeModel
from phonemekit.privacy import Namer

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
SIDECAR = "model.json"
PREDICTIONS = "predictions.npz"
METRICS = "metrics.json"
HISTORY = "history.json"
CONFIG = "config.json"
ONNX = "onnx"
FORMS = ("head", "e2e")


class Run:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # -- the sidecar, read once --------------------------------------------------------

    @functools.cached_property
    def sidecar(self) -> dict:
        path = self.path / SIDECAR
        if not path.is_file():
            raise DataError(f"no checkpoint at {self.path} (missing {SIDECAR})")
        try:
            side = read_json(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IntegrityError(f"checkpoint sidecar {path} is unreadable: {e}") from e
        if not isinstance(side, dict) or not isinstance(side.get("config"), dict) or not isinstance(side.get("labels"), list):
            raise IntegrityError(f"checkpoint sidecar {path} is malformed (no config or labels)")
        return side

    @property
    def name(self) -> str:
        return self.sidecar["config"]["name"]

    @property
    def labels(self) -> list[str]:
        return self.sidecar["labels"]

    @functools.cached_property
    def config(self) -> ModelConfig:
        return from_dict(ModelConfig, self.sidecar["config"])

    @property
    def encoder_spec(self) -> EncoderSpec:
        return EncoderSpec(**self.sidecar["encoder_spec"])

    @property
    def sha256(self) -> str:
        return self.sidecar["sha256"]

    @property
    def weights(self) -> str:
        """pretrained | random | none: what the encoder's weights were."""
        return self.sidecar["weights"]

    @property
    def data(self) -> str | None:
        """The manifest the run trained on, when it recorded one."""
        return self.sidecar.get("data")

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    @property
    def metrics(self) -> dict:
        path = self.path / METRICS
        if not path.is_file():
            raise DataError(f"{self.path} has no {METRICS}; it was trained but not evaluated")
        return read_json(path)

    # -- predictions -------------------------------------------------------------------

    @property
    def predictions_path(self) -> Path:
        return self.path / PREDICTIONS

    def predictions(self, part: str = "test") -> Predictions:
        if not self.predictions_path.is_file():
            raise DataError(f"{self.path} has no {PREDICTIONS}; train it with `phonemekit train` first")
        z = np.load(self.predictions_path, allow_pickle=False)
        if f"{part}_scores" not in z:
            raise DataError(f"{self.predictions_path} has no '{part}' part")
        rows = [{"sha256": s, "speaker": k, "group": g} for s, k, g in zip(z[f"{part}_sha256"], z[f"{part}_speaker"], z[f"{part}_group"])]
        return Predictions(z[f"{part}_scores"], z[f"{part}_y"], rows, self.labels)

    def save_predictions(self, preds: dict[str, Predictions], namer: Namer | None = None) -> None:
        """Scores per held-out clip. Speakers are stored as pseudonyms (with
        their group), so run folders can be shared without naming anyone."""
        namer = namer or Namer()
        arrays = {}
        for part, p in preds.items():
            arrays[f"{part}_scores"] = p.scores.astype(np.float32)
            arrays[f"{part}_y"] = p.y
            arrays[f"{part}_sha256"] = np.array([r["sha256"] for r in p.rows])
            arrays[f"{part}_speaker"] = np.array([namer(r["speaker"]) for r in p.rows])
            arrays[f"{part}_group"] = np.array([r.get("group", "unknown") for r in p.rows])
        with atomic_open(self.predictions_path, "wb") as f:
            np.savez(f, **arrays)

    # -- exported files ----------------------------------------------------------------

    @property
    def onnx_dir(self) -> Path:
        return self.path / ONNX

    def onnx(self, form: str = "e2e", precision: str = "fp32") -> Path:
        """Where the exported file of a form lives (it may not exist yet)."""
        if form not in FORMS:
            raise DataError(f"unknown ONNX form {form!r} (choose from {', '.join(FORMS)})")
        return self.onnx_dir / f"{self.name}.{form}{'' if precision == 'fp32' else '.' + precision}.onnx"

    @property
    def parity_path(self) -> Path:
        return self.onnx_dir / f"{self.name}.parity.json"

    def parity(self) -> dict:
        if not self.parity_path.is_file():
            raise DataError(f"{self.path} has no exported ONNX files; run `phonemekit export {self.path}` first")
        return read_json(self.parity_path)

    # -- checkpoint --------------------------------------------------------------------

    def verify(self, trusted: set[str] | None = None) -> dict:
        """Check the weights' sha256 against the sidecar (and an allow-list)."""
        side = self.sidecar
        if not self.weights_path.is_file():
            raise IntegrityError(f"checkpoint weights {self.weights_path} are missing")
        actual = sha256_file(self.weights_path)
        if actual != side.get("sha256"):
            raise IntegrityError(f"checkpoint {self.weights_path} does not match its recorded sha256 (tampered or corrupt); refusing to load")
        if trusted is not None and actual not in trusted:
            raise IntegrityError(f"checkpoint {self.weights_path} (sha256 {actual[:12]}...) is not in the trusted-hashes list")
        return side

    def load(self, *, with_encoder: bool = False, trusted: set[str] | None = None, map_location: str = "cpu") -> PhonemeModel:
        """The model, after verifying its hash. `with_encoder` attaches the
        encoder (from the checkpoint if it was fine-tuned, else rebuilt from
        its source and checked against the recorded weights fingerprint)."""
        side = self.verify(trusted)
        cfg, spec = self.config, self.encoder_spec
        try:
            state = load_file(str(self.weights_path), device=map_location)
        except Exception as e:  # safetensors raises its own error types for a bad header
            raise IntegrityError(f"checkpoint {self.weights_path} is not a readable safetensors file: {e}") from e
        encoder = None
        if with_encoder or side["includes_encoder"]:
            encoder = build_encoder(cfg.encoder)
            if side["includes_encoder"]:
                encoder.load_state_dict({k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")})
            elif encoder.spec.weights_sha256 != spec.weights_sha256:
                raise IntegrityError(f"encoder weights at {cfg.encoder.source} differ from the ones this model was trained on")
        model = PhonemeModel(cfg, side["labels"], spec, encoder)
        if model.blank != side["blank"]:
            raise IntegrityError(f"blank index mismatch: checkpoint says {side['blank']}, head has {model.blank}")
        head_state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        missing, unexpected = model.load_state_dict(head_state, strict=False)
        missing = [k for k in missing if not k.startswith("encoder.")]
        if missing or unexpected:
            raise IntegrityError(f"checkpoint does not fit its model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return model.eval()

    def save_checkpoint(self, model: PhonemeModel, *, metrics: dict | None = None, extra: dict | None = None) -> None:
        """Atomically write weights then sidecar; the sidecar is the commit point."""
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if model.encoder is not None and model.cfg.train.finetune_layers == 0:
            state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        write_bytes(self.weights_path, save(state))
        sidecar = {
            "format": "phonemekit-checkpoint/1",
            "phonemekit_version": __version__,
            "config": model.cfg.to_dict(),
            "labels": model.labels,
            "blank": model.blank,
            "head_output": model.output_kind,
            "encoder_spec": model.spec.to_dict(),
            "includes_encoder": any(k.startswith("encoder.") for k in state),
            "weights": model.spec.weights,
            "metrics": metrics or {},
            "sha256": sha256_file(self.weights_path),
            **(extra or {}),
        }
        write_json(self.path / SIDECAR, sidecar)
        self.__dict__.pop("sidecar", None)
        self.__dict__.pop("config", None)

    # -- training records --------------------------------------------------------------

    def write_config(self, cfg: ModelConfig) -> None:
        write_json(self.path / CONFIG, cfg.to_dict())

    def write_history(self, history: list[dict]) -> None:
        write_json(self.path / HISTORY, history)

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.path / METRICS, metrics)


def runs(paths: list[str | Path]) -> list[Run]:
    return [p if isinstance(p, Run) else Run(p) for p in paths]

