"""A phone tagger over a sentence: every aligned phone of an utterance, each
seen as its pooled encoder frames (mean and standard deviation of every
layer, the phone's own span) plus where it sits in its word, read by a
BiLSTM over the phone sequence, so that each phone's scores weigh its
neighbours (what a word or a sentence around it says).

Its inputs are acoustic and positional only: the aligner's phone names are
never an input, so a phone's label cannot leak into its own features. The
encoder's own attention already mixes the utterance into each frame; the
tagger adds what the sequence of sounds says (phonotactics, words).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from phonemekit.errors import ConfigError
from phonemekit.models.heads.ctc import BiLSTM
from phonemekit.models.model import LayerMix

# Per phone besides its frames: first in its word, last in its word, duration (s), position inside its word (0-1).
POSITION_FEATURES = 4


@dataclass(frozen=True)
class TaggerConfig:
    """The tagger's shape and training (one object, saved beside its weights)."""

    hidden: int = 256  # projection width; the BiLSTM has half of it per direction
    layers: int = 1
    dropout: float = 0.4  # chosen on validation speakers among 0.3 and 0.4, 1-2 layers, 256-384 wide
    lr: float = 1e-3
    weight_decay: float = 1e-2
    epochs: int = 60
    patience: int = 8  # epochs without a better validation top-1 before stopping
    batch: int = 16  # utterances per step
    seed: int = 0

    def __post_init__(self) -> None:
        ok = (2 <= self.hidden <= 4096 and self.hidden % 2 == 0 and 1 <= self.layers <= 8 and 0 <= self.dropout < 1 and self.lr > 0
              and self.epochs >= 1 and self.patience >= 1 and self.batch >= 1 and self.weight_decay >= 0)  # fmt: skip
        if not ok:
            raise ConfigError(f"invalid tagger settings {self.to_dict()}: hidden an even width 2-4096, layers 1-8, dropout in [0, 1), "
                              "lr > 0, epochs, patience and batch >= 1, weight_decay >= 0")  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)


class PhoneTagger(nn.Module):
    """(B, P, L, D) pooled layers of each phone + (B, P, 4) positions -> (B, P, C) class logits."""

    def __init__(self, num_layers: int, dim: int, num_classes: int, cfg: TaggerConfig) -> None:
        super().__init__()
        self.mix = LayerMix(num_layers, dim)
        self.proj = nn.Sequential(nn.LayerNorm(dim + POSITION_FEATURES), nn.Linear(dim + POSITION_FEATURES, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout))
        self.rnn = BiLSTM(cfg.hidden, cfg.hidden // 2, cfg.layers, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, num_classes)

    def forward(self, phones: torch.Tensor, positions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.proj(torch.cat([self.mix(phones), positions], dim=-1))
        return self.out(self.drop(self.norm(self.rnn(x, lengths))))
