"""BiLSTM CTC heads: frame features -> per-frame log-probs over labels + blank.

The blank is the last index (`num_classes`) and is stored in checkpoints
and ONNX metadata, never re-derived.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from phonemekit.models.heads.base import Head, check_dropout, check_layers, check_width, register_head


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's valid frames in place; padding stays at the end.
    Exact for padded batches and exports to ONNX (a gather, no packing)."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class BiLSTM(nn.Module):
    """Bidirectional LSTM stack whose backward pass starts at each sequence's
    own last frame, so padding never leaks into valid outputs."""

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.fwd = nn.ModuleList()
        self.bwd = nn.ModuleList()
        for i in range(layers):
            d = in_dim if i == 0 else 2 * hidden
            self.fwd.append(nn.LSTM(d, hidden, batch_first=True))
            self.bwd.append(nn.LSTM(d, hidden, batch_first=True))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        for i, (f, b) in enumerate(zip(self.fwd, self.bwd)):
            if i:
                x = self.dropout(x)
            out_f, _ = f(x)
            out_b, _ = b(reverse_within_length(x, lengths))
            x = torch.cat([out_f, reverse_within_length(out_b, lengths)], dim=-1)
        return x


@dataclass(frozen=True)
class CTCOptions:
    proj: int = 128  # width of the projection the BiLSTM reads
    hidden: int = 128  # per direction
    layers: int = 2
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check_width(self.proj, "proj")
        check_width(self.hidden, "hidden")
        check_layers(self.layers, "layers")
        check_dropout(self.dropout, "dropout")


@register_head("ctc")
class CTCHead(Head):
    """Projection -> 2-layer BiLSTM -> LayerNorm -> linear to labels + blank (CTC)."""

    output = "ctc"
    Options = CTCOptions

    def __init__(self, in_dim: int, num_classes: int, opts: CTCOptions) -> None:
        super().__init__(in_dim, num_classes, opts)
        self.blank = num_classes
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, opts.proj), nn.GELU(), nn.Dropout(opts.dropout))
        self.rnn = BiLSTM(opts.proj, opts.hidden, opts.layers, opts.dropout)
        self.norm = nn.LayerNorm(2 * opts.hidden)
        self.out = nn.Linear(2 * opts.hidden, num_classes + 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.rnn(self.proj(x), lengths)
        return F.log_softmax(self.out(self.norm(h)), dim=-1)
