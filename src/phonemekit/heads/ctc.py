"""CTC heads: frame features -> per-frame log-probs over labels + blank.

The blank is the last index (`num_classes`) and is stored in checkpoints
and ONNX metadata, never re-derived.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..torchutil import lengths_mask
from . import register_head


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


@register_head("ctc")
class CTCHead(nn.Module):
    """Projection -> 2-layer BiLSTM -> LayerNorm -> linear to labels + blank (CTC)."""

    output = "ctc"

    def __init__(self, in_dim: int, num_classes: int, proj: int = 128, hidden: int = 128, layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.in_dim, self.num_classes, self.blank = in_dim, num_classes, num_classes
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, proj), nn.GELU(), nn.Dropout(dropout))
        self.rnn = BiLSTM(proj, hidden, layers, dropout)
        self.norm = nn.LayerNorm(2 * hidden)
        self.out = nn.Linear(2 * hidden, num_classes + 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.rnn(self.proj(x), lengths)
        return F.log_softmax(self.out(self.norm(h)), dim=-1)


class SeparableBlock(nn.Module):
    """Residual depthwise (dilated) + pointwise convolution. A depthwise
    kernel costs k MACs per channel instead of k x channels."""

    def __init__(self, channels: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(channels, channels, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=channels)
        self.pointwise = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return h + self.dropout(F.gelu(self.pointwise(self.depthwise(h)))) * mask


class SelfAttention(nn.Module):
    """One pre-norm multi-head self-attention layer over the valid frames,
    written out in plain ops so both ONNX exporters handle it."""

    def __init__(self, channels: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:  # h (B, T, C), valid (B, T) bool
        b, t, c = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) * (c // self.heads) ** -0.5
        scores = scores + (valid[:, None, None, :].to(h.dtype) - 1) * 1e4  # padded frames are never attended to
        a = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, c)
        return h + self.dropout(self.out(a))


@register_head("conv-ctc")
class ConvCTCHead(nn.Module):
    """Thin projection -> dilated separable 1-D convolutions (local context)
    -> one self-attention layer (the whole clip, as a BiLSTM would see it)
    -> labels + blank (CTC). Built for the CPU latency target: no step runs
    frame by frame. `attention_heads=0` leaves the convolutions alone."""

    output = "ctc"

    def __init__(self, in_dim: int, num_classes: int, channels: int = 128, kernel: int = 5, layers: int = 2, attention_heads: int = 4,
                 dropout: float = 0.2) -> None:
        super().__init__()
        if attention_heads and channels % attention_heads:
            raise ConfigError(f"head.options: conv-ctc channels ({channels}) must be a multiple of attention_heads ({attention_heads})")
        self.in_dim, self.num_classes, self.blank = in_dim, num_classes, num_classes
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, channels))
        self.blocks = nn.ModuleList(SeparableBlock(channels, kernel, 2**i, dropout) for i in range(layers))
        self.attention = SelfAttention(channels, attention_heads, dropout) if attention_heads else None
        self.out = nn.Linear(channels, num_classes + 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = lengths_mask(lengths, x.shape[1])
        mask = valid.unsqueeze(1).to(x.dtype)
        h = self.proj(x).transpose(1, 2) * mask  # zero padding so it never bleeds into valid frames
        for block in self.blocks:
            h = block(h, mask)
        h = h.transpose(1, 2)
        if self.attention is not None:
            h = self.attention(h, valid)
        return F.log_softmax(self.out(h), dim=-1)
