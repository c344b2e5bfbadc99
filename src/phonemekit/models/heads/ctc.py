"""CTC heads: frame features -> per-frame log-probs over labels + blank.

The blank is the last index (`num_classes`) and is stored in checkpoints
and ONNX metadata, never re-derived.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from phonemekit.models.heads.base import Head, check_dropout, check_layers, check_size, check_width, register_head
from phonemekit.torchutil import lengths_mask


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


@dataclass(frozen=True)
class ConvCTCOptions:
    channels: int = 128
    kernel: int = 5
    layers: int = 2  # separable blocks, dilations 1, 2, 4, ...
    attention_heads: int = 4  # 0: no attention layer
    dropout: float = 0.2
    stride: int = 1  # frames averaged into one after the projection: less work for the blocks, attention and CTC scoring

    def __post_init__(self) -> None:
        check_width(self.channels, "channels")
        check_size(1 <= self.kernel <= 31 and self.kernel % 2 == 1, "kernel", "an odd integer in [1, 31]")
        check_layers(self.layers, "layers", minimum=0)
        check_size(0 <= self.attention_heads <= self.channels, "attention_heads", "an integer in [0, channels]")
        check_size(not self.attention_heads or self.channels % self.attention_heads == 0, "channels",
                   f"a multiple of attention_heads ({self.attention_heads})")
        check_dropout(self.dropout, "dropout")
        check_size(1 <= self.stride <= 4, "stride", "an integer in [1, 4]")


@register_head("conv-ctc")
class ConvCTCHead(Head):
    """Thin projection -> dilated separable 1-D convolutions (local context)
    -> one self-attention layer (the whole clip, as a BiLSTM would see it)
    -> labels + blank (CTC). Built for the CPU latency target: no step runs
    frame by frame. `attention_heads=0` leaves the convolutions alone."""

    output = "ctc"
    Options = ConvCTCOptions

    def __init__(self, in_dim: int, num_classes: int, opts: ConvCTCOptions) -> None:
        super().__init__(in_dim, num_classes, opts)
        self.blank = num_classes
        c = opts.channels
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, c))
        self.blocks = nn.ModuleList(SeparableBlock(c, opts.kernel, 2**i, opts.dropout) for i in range(opts.layers))
        self.attention = SelfAttention(c, opts.attention_heads, opts.dropout) if opts.attention_heads else None
        self.out = nn.Linear(c, num_classes + 1)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        s = self.opts.stride
        return lengths if s == 1 else torch.div(lengths + s - 1, s, rounding_mode="floor")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = lengths_mask(lengths, x.shape[1])
        mask = valid.unsqueeze(1).to(x.dtype)
        h = self.proj(x).transpose(1, 2) * mask  # zero padding so it never bleeds into valid frames
        if self.opts.stride > 1:
            # Mean over the valid frames of each window of `stride` (a partial last window is not diluted by padding).
            s = self.opts.stride
            h = F.avg_pool1d(h, s, s, ceil_mode=True) / F.avg_pool1d(mask, s, s, ceil_mode=True).clamp_min(1e-6)
            valid = lengths_mask(self.out_lengths(lengths), h.shape[-1])
            mask = valid.unsqueeze(1).to(x.dtype)
            h = h * mask
        for block in self.blocks:
            h = block(h, mask)
        h = h.transpose(1, 2)
        if self.attention is not None:
            h = self.attention(h, valid)
        return F.log_softmax(self.out(h), dim=-1)
