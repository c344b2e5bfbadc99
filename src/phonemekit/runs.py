"""`Run`: the one object that knows a run folder's layout.

    RUN/model.safetensors   weights, and the sidecar in the file's own header (safetensors; never a pickle)
    RUN/model.json          a readable copy of the sidecar: config, labels, blank, encoder spec, calibration, digest
    RUN/predictions.npz     scores per held-out clip, parts "test" and "val"
    RUN/metrics.json        held-out metrics (speakers by pseudonym)
    RUN/history.json        one record per epoch
    RUN/onnx/NAME.FORM[.int8].onnx, RUN/onnx/NAME.parity.json

Every other module reaches these files through a `Run`, which reads the
sidecar once. Weights and sidecar are one file, so one rename commits both
(a kill mid-save leaves the previous checkpoint whole). The sidecar's
`sha256` is a digest over the weights' bytes and every field the answers
depend on (labels, blank, encoder spec, config): an edit of either is
refused on load, and `--trusted-hashes` lists these digests.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import struct
from pathlib import Path

import numpy as np
from safetensors.torch import load as load_tensors
from safetensors.torch import save

from phonemekit import __version__
from phonemekit.config import ModelConfig, from_dict, is_name
from phonemekit.data.inventory import label_problem
from phonemekit.errors import DataError, IntegrityError, OutputError
from phonemekit.evaluation.calibration import Calibration
from phonemekit.evaluation.predict import Predictions
from phonemekit.fileio import atomic_open, read_json, write_bytes, write_json
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
FORMAT = "phonemekit-checkpoint/2"
_HEADER_KEY = "phonemekit"  # the sidecar's key in the safetensors header metadata
_MAX_HEADER = 100_000_000  # safetensors' own limit on a header


def digest(data_sha256: str, sidecar: dict) -> str:
    """sha256 over the weights' bytes and the sidecar's fields (its `sha256` excluded)."""
    fields = {k: v for k, v in sidecar.items() if k != "sha256"}
    return hashlib.sha256((data_sha256 + json.dumps(fields, sort_keys=True, separators=(",", ":"))).encode()).hexdigest()


def _parse_checkpoint(data: bytes, path: Path, header_only: bool = False) -> tuple[dict, str | None]:
    """(sidecar from the header, sha256 of the tensor bytes) of a checkpoint's
    bytes; `header_only`: the bytes hold the header alone, and no sha256."""
    bad = lambda why: IntegrityError(f"checkpoint {path} {why}; refusing to load")  # noqa: E731
    if len(data) < 8:
        raise bad("is truncated")
    n = struct.unpack("<Q", data[:8])[0]
    if not 2 <= n <= min(_MAX_HEADER, len(data) - 8):
        raise bad("is not a readable safetensors file")
    try:
        header = json.loads(data[8 : 8 + n])
        side = json.loads(header["__metadata__"][_HEADER_KEY])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad("is not a readable safetensors file") from e
    except (TypeError, KeyError) as e:
        raise bad(f"carries no {FORMAT} sidecar (written by an older phonemekit? train it again)") from e
    if not isinstance(side, dict):
        raise bad("carries a malformed sidecar")
    return side, None if header_only else hashlib.sha256(memoryview(data)[8 + n :]).hexdigest()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise IntegrityError(f"checkpoint {path} cannot be read ({e.strerror or e})") from e


class Run:
    def __init__(self, path: str | Path, name: str | None = None) -> None:
        """`name`: the model's name when the run is not trained yet (a
        pipeline plans its files before its training step writes them)."""
        self.path = Path(path)
        self._name = name

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # -- the sidecar, read once --------------------------------------------------------

    @functools.cached_property
    def sidecar(self) -> dict:
        """The sidecar, read once from the checkpoint's own header (no tensor is
        read; `verify` and `load` check it against the weights' bytes)."""
        if not self.weights_path.is_file():
            raise DataError(f"no checkpoint at {self.path} (missing {WEIGHTS})")
        try:
            with open(self.weights_path, "rb") as f:
                head = f.read(8)
                n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
                head += f.read(min(n, _MAX_HEADER))
        except OSError as e:
            raise IntegrityError(f"checkpoint {self.weights_path} cannot be read ({e.strerror or e})") from e
        side = _parse_checkpoint(head, self.weights_path, header_only=True)[0]
        for key, ok in (
            ("config", isinstance(side.get("config"), dict)),
            ("labels", _is_label_list(side.get("labels"))),
            ("encoder_spec", isinstance(side.get("encoder_spec"), dict)),
            ("name", is_name((side.get("config") or {}).get("name"))),
        ):
            if not ok:
                raise IntegrityError(f"checkpoint {self.weights_path} has a malformed sidecar ({key}); refusing to load")
        return side

    def _mirror(self, side: dict) -> None:
        """Keep model.json, the readable copy, equal to the verified sidecar
        (after a kill between the two writes, or an edit by hand). A run
        folder that cannot be written (a shipped, read-only one) is still read."""
        path = self.path / SIDECAR
        try:
            same = read_json(path) == side
        except (OSError, ValueError):
            same = False
        if not same:
            if path.exists():
                log.warning("%s does not match the checkpoint it describes; rewritten from the checkpoint", path)
            try:
                write_json(path, side)
            except OutputError as e:
                log.warning("%s", e)

    @property
    def name(self) -> str:
        return self._name or self.sidecar["config"]["name"]

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
        # The label table travels with the scores: a leave-one-speaker-out run
        # folder holds its folds' checkpoints, not one of its own.
        labels = [str(x) for x in z["labels"]] if "labels" in z else self.labels
        return Predictions(z[f"{part}_scores"], z[f"{part}_y"], rows, labels)

    def save_predictions(self, preds: dict[str, Predictions], namer: Namer) -> None:
        """Scores per held-out clip. Speakers are stored as the namer names
        them (pseudonyms unless asked otherwise) with their group, so run
        folders can be shared without naming anyone."""
        arrays = {"labels": np.array(next(iter(preds.values())).labels)}
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
        """Check the digest over weights and sidecar (and an allow-list of digests)."""
        return self._verified(_read(self.weights_path), trusted)[0]

    def _verified(self, data: bytes, trusted: set[str] | None) -> tuple[dict, bytes]:
        side, data_sha = _parse_checkpoint(data, self.weights_path)
        if side != self.sidecar:
            raise IntegrityError(f"checkpoint {self.weights_path} changed while it was read; refusing to load")
        actual = digest(data_sha, side)
        if actual != side.get("sha256"):
            raise IntegrityError(
                f"checkpoint {self.weights_path} does not match its recorded sha256 (its weights or sidecar were changed, or it is corrupt); refusing to load"
            )
        if trusted is not None and actual not in trusted:
            raise IntegrityError(f"checkpoint {self.weights_path} (sha256 {actual[:12]}...) is not in the trusted-hashes list")
        self._mirror(side)
        return side, data

    def load(self, *, with_encoder: bool = False, trusted: set[str] | None = None, map_location: str = "cpu") -> PhonemeModel:
        """The model, after verifying its digest on the very bytes it is built
        from. `with_encoder` attaches the encoder (from the checkpoint if it
        was fine-tuned, else rebuilt from its source and checked against the
        recorded weights fingerprint)."""
        side, data = self._verified(_read(self.weights_path), trusted)
        cfg, spec = from_dict(ModelConfig, side["config"]), EncoderSpec(**side["encoder_spec"])
        try:
            state = {k: v.to(map_location) for k, v in load_tensors(data).items()}
        except Exception as e:  # safetensors raises its own error types for bad tensor data
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
        """Weights and sidecar in one file, written atomically: one rename
        commits both. model.json, the readable copy, follows."""
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if model.encoder is not None and model.cfg.train.finetune_layers == 0:
            state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        side = {
            "format": FORMAT,
            "phonemekit_version": __version__,
            "config": model.cfg.to_dict(),
            "labels": model.labels,
            "blank": model.blank,
            "head_output": model.output_kind,
            "encoder_spec": model.spec.to_dict(),
            "includes_encoder": any(k.startswith("encoder.") for k in state),
            "weights": model.spec.weights,
            "metrics": metrics or {},
            **(extra or {}),
        }
        self._write(state, side)

    def attach(self, **fields) -> None:
        """Add fields to the sidecar of a saved checkpoint (the calibration
        fitted after training): weights unchanged, digest renewed."""
        side, data = self._verified(_read(self.weights_path), None)
        state = load_tensors(data)
        self._write(state, {**{k: v for k, v in side.items() if k != "sha256"}, **fields})

    def _write(self, state: dict, side: dict) -> None:
        data = save(state)  # tensors only, to hash the bytes the header will precede
        n = struct.unpack("<Q", data[:8])[0]
        side["sha256"] = digest(hashlib.sha256(data[8 + n :]).hexdigest(), side)
        blob = save(state, metadata={_HEADER_KEY: json.dumps(side, sort_keys=True)})
        write_bytes(self.weights_path, blob)
        self.__dict__.pop("sidecar", None)
        self.__dict__.pop("config", None)
        write_json(self.path / SIDECAR, side)

    @property
    def calibration(self) -> Calibration | None:
        """The verdict calibration fitted on the validation speakers, if any."""
        raw = self.sidecar.get("calibration")
        return None if raw is None else Calibration.from_dict(raw, self.labels)

    # -- training records --------------------------------------------------------------

    def write_config(self, cfg: ModelConfig) -> None:
        write_json(self.path / CONFIG, cfg.to_dict())

    def write_history(self, history: list[dict]) -> None:
        write_json(self.path / HISTORY, history)

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.path / METRICS, metrics)


def _is_label_list(x: object) -> bool:
    return isinstance(x, list) and bool(x) and not any(map(label_problem, x)) and len(set(x)) == len(x)


def runs(paths: list[str | Path]) -> list[Run]:
    return [p if isinstance(p, Run) else Run(p) for p in paths]
