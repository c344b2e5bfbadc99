"""A model is an (encoder, head) pair. Checkpoints are safetensors weights
plus a JSON sidecar (config, labels, blank index, encoder spec, metrics,
sha256 of the weights); loading verifies the hash and never unpickles."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .config import WEIGHTED, ModelConfig, from_dict
from .decoding import class_log_probs
from .encoders import Encoder, EncoderSpec, build_encoder
from .errors import DataError, IntegrityError
from .fileio import read_json, sha256_file, write_bytes, write_json
from .heads import build_head

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
SIDECAR = "model.json"


class PhonemeModel(nn.Module):
    """Head on top of features; carries its encoder when it runs end to end."""

    def __init__(self, cfg: ModelConfig, labels: list[str], spec: EncoderSpec, encoder: Encoder | None = None) -> None:
        super().__init__()
        self.cfg, self.labels, self.spec = cfg, list(labels), spec
        self.head = build_head(cfg.head.kind, spec.dim, len(labels), cfg.head.options)
        self.output_kind = self.head.output
        self.blank = getattr(self.head, "blank", None)
        self.layer_mix = LayerMix(spec.num_layers, spec.dim) if spec.layer == WEIGHTED else None
        self.encoder = encoder

    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame of the features the head form takes: (D,), or
        (layers, D) when the model mixes every layer itself."""
        return (self.spec.dim,) if self.layer_mix is None else (self.spec.num_layers, self.spec.dim)

    def head_outputs(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.layer_mix is not None:
            feats = self.layer_mix(feats)
        return self.head(feats, lengths)

    def encode(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder is None:
            raise DataError("this model has no encoder attached; it classifies cached features")
        out = self.encoder(wave, lengths)
        return self.encoder.select(out), out.lengths

    def scores(self, outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Class log-probabilities (B, C)."""
        return class_log_probs(outputs, lengths, self.output_kind, self.blank)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.scores(self.head_outputs(feats, lengths), lengths)

    def classify_waves(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats, flen = self.encode(wave, lengths)
        return self(feats, flen)


class LayerMix(nn.Module):
    """A learned softmax-weighted sum of every hidden layer (s3prl's
    featurizer). Each layer is layer-normalised first (no parameters), since
    a transformer's residual stream grows in scale with depth."""

    def __init__(self, num_layers: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.logits = nn.Parameter(torch.zeros(num_layers))

    def weights(self) -> list[float]:
        return torch.softmax(self.logits.detach(), 0).tolist()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, L, D) -> (B, T, D)
        x = F.layer_norm(x, (self.dim,))
        return (x * torch.softmax(self.logits, 0)[:, None]).sum(dim=2)


def save_checkpoint(model: PhonemeModel, out_dir: str | Path, *, metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Atomically write weights then sidecar; the sidecar is the commit point."""
    from safetensors.torch import save

    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.encoder is not None and model.cfg.train.finetune_layers == 0:
        state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    write_bytes(out_dir / WEIGHTS, save(state))
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
        "sha256": sha256_file(out_dir / WEIGHTS),
        **(extra or {}),
    }
    write_json(out_dir / SIDECAR, sidecar)
    return out_dir / SIDECAR


def read_sidecar(run_dir: str | Path) -> dict:
    path = Path(run_dir) / SIDECAR
    if not path.is_file():
        raise DataError(f"no checkpoint at {run_dir} (missing {SIDECAR})")
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError) as e:
        raise IntegrityError(f"checkpoint sidecar {path} is unreadable: {e}") from e


def verify_checkpoint(run_dir: str | Path, trusted: set[str] | None = None) -> dict:
    """Check the weights' sha256 against the sidecar (and an allow-list)."""
    side = read_sidecar(run_dir)
    weights = Path(run_dir) / WEIGHTS
    if not weights.is_file():
        raise IntegrityError(f"checkpoint weights {weights} are missing")
    actual = sha256_file(weights)
    if actual != side.get("sha256"):
        raise IntegrityError(f"checkpoint {weights} does not match its recorded sha256 (tampered or corrupt); refusing to load")
    if trusted is not None and actual not in trusted:
        raise IntegrityError(f"checkpoint {weights} (sha256 {actual[:12]}...) is not in the trusted-hashes list")
    return side


def load_checkpoint(run_dir: str | Path, *, with_encoder: bool = False, trusted: set[str] | None = None, map_location: str = "cpu") -> PhonemeModel:
    """Load a checkpoint after verifying its hash. `with_encoder` attaches the
    encoder (from the checkpoint if it was fine-tuned, else rebuilt from its
    source and checked against the recorded weights fingerprint)."""
    from safetensors.torch import load_file

    side = verify_checkpoint(run_dir, trusted)
    cfg = from_dict(ModelConfig, side["config"])
    spec = EncoderSpec(**side["encoder_spec"])
    state = load_file(str(Path(run_dir) / WEIGHTS), device=map_location)
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
