"""A model is an (encoder, head) pair: a head on frame features, with the
encoder attached when it runs end to end. Checkpoints of a model belong to
its run folder (`phonemekit.runs.Run`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from phonemekit.config import WEIGHTED, ModelConfig
from phonemekit.errors import DataError
from phonemekit.models.decoding import class_log_probs
from phonemekit.models.encoders import Encoder, EncoderSpec
from phonemekit.models.heads import build_head


class PhonemeModel(nn.Module):
    """Head on top of features; carries its encoder when it runs end to end."""

    def __init__(self, cfg: ModelConfig, labels: list[str], spec: EncoderSpec, encoder: Encoder | None = None) -> None:
        super().__init__()
        self.cfg, self.labels, self.spec = cfg, list(labels), spec
        self.head = build_head(cfg.head.kind, spec.dim, len(labels), cfg.head.options)
        self.output_kind = self.head.output
        self.blank = self.head.blank
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

    @property
    def embeds(self) -> bool:
        """Whether the head exposes an embedding (MLP heads), which enrolment needs."""
        return hasattr(self.head, "embed")

    def embed(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.embeds:
            raise DataError(f"a {self.cfg.head.kind} head has no embedding to adapt; enrolment needs an MLP head")
        if self.layer_mix is not None:
            feats = self.layer_mix(feats)
        return self.head.embed(feats, lengths)

    def encode(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder is None:
            raise DataError("this model has no encoder attached; it classifies cached features")
        out = self.encoder(wave, lengths)
        return self.encoder.select(out), out.lengths

    def scores(self, outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Class log-probabilities (B, C)."""
        return class_log_probs(outputs, lengths, self.output_kind, self.blank)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames of the head's output (fewer than the features' when the head strides)."""
        return self.head.out_lengths(lengths)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.scores(self.head_outputs(feats, lengths), self.out_lengths(lengths))

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
