"""Convolutional heads: a thin projection, dilated separable 1-D convolutions
(local context) and one self-attention layer (the whole clip, as a BiLSTM
would see it), with no step that runs frame by frame. Two read-outs share
that trunk: `conv-ctc` (labels + blank per frame, scored by CTC) and
`conv-pool` (attention pooling, or mean and max, over the valid frames ->
class logits), which needs no CTC class scoring at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from phonemekit.models.heads.base import Head, check_dropout, check_layers, check_size, check_width, register_head
from phonemekit.models.heads.mlp import Standardize
from phonemekit.torchutil import lengths_mask


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
    written out in plain ops so the ONNX export is exact."""

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
class ConvOptions:
    channels: int = 128
    kernel: int = 5
    layers: int = 2  # separable blocks, dilations 1, 2, 4, ...
    attention_heads: int = 4  # 0: no attention layer
    dropout: float = 0.2
    stride: int = 1  # frames averaged into one after the projection: less work for the blocks, attention and CTC scoring
    # "layer": a LayerNorm on every input frame; "standardize": fixed
    # training-set statistics (one multiply-add per value, no reductions).
    input_norm: str = "layer"

    def __post_init__(self) -> None:
        check_width(self.channels, "channels")
        check_size(1 <= self.kernel <= 31 and self.kernel % 2 == 1, "kernel", "an odd integer in [1, 31]")
        check_layers(self.layers, "layers", minimum=0)
        check_size(0 <= self.attention_heads <= self.channels, "attention_heads", "an integer in [0, channels]")
        check_size(not self.attention_heads or self.channels % self.attention_heads == 0, "channels", f"a multiple of attention_heads ({self.attention_heads})")
        check_dropout(self.dropout, "dropout")
        check_size(1 <= self.stride <= 4, "stride", "an integer in [1, 4]")
        check_size(self.input_norm in ("layer", "standardize"), "input_norm", "layer|standardize")


class ConvTrunk(Head):
    """The shared trunk; subclasses add the read-out (`self.out`)."""

    Options = ConvOptions

    def __init__(self, in_dim: int, num_classes: int, opts: ConvOptions) -> None:
        super().__init__(in_dim, num_classes, opts)
        c = opts.channels
        norm = nn.LayerNorm(in_dim) if opts.input_norm == "layer" else Standardize(in_dim)
        self.proj = nn.Sequential(norm, nn.Linear(in_dim, c))
        self.blocks = nn.ModuleList(SeparableBlock(c, opts.kernel, 2**i, opts.dropout) for i in range(opts.layers))
        self.attention = SelfAttention(c, opts.attention_heads, opts.dropout) if opts.attention_heads else None

    @torch.no_grad()
    def fit_statistics(self, items: list[np.ndarray]) -> None:
        """Per-dimension statistics of the training clips' frames (for `input_norm = "standardize"`)."""
        if isinstance(self.proj[0], Standardize):
            self.proj[0].fit(torch.from_numpy(np.concatenate(items)).float())

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        s = self.opts.stride
        return lengths if s == 1 else torch.div(lengths + s - 1, s, rounding_mode="floor")

    def trunk(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T', C) frame states and their (B, T') validity."""
        valid = lengths_mask(lengths, x.shape[1])
        norm, linear = self.proj
        if isinstance(norm, Standardize):
            # Fixed statistics are affine: fold them into the projection (the
            # exported graph holds one constant matrix, no pass over the input).
            w = linear.weight * norm.inv_std
            h = F.linear(x, w, linear.bias - w @ norm.mean)
        else:
            h = self.proj(x)
        mask = valid.unsqueeze(1).to(h.dtype)
        h = h.transpose(1, 2) * mask  # zero padding so it never bleeds into valid frames
        if self.opts.stride > 1:
            # Mean over the valid frames of each window of `stride` (a partial
            # last window is not diluted by padding); pooling ops, no reshapes,
            # which in an exported graph cost more than the arithmetic.
            s = self.opts.stride
            count = F.avg_pool1d(mask, s, s, ceil_mode=True)
            h = F.avg_pool1d(h, s, s, ceil_mode=True) / count.clamp_min(1e-6)
            mask = (count > 0).to(h.dtype)
            valid = mask.squeeze(1) > 0
        for block in self.blocks:
            h = block(h, mask)
        h = h.transpose(1, 2)
        if self.attention is not None:
            h = self.attention(h, valid)
        return h, valid


@register_head("conv-ctc")
class ConvCTCHead(ConvTrunk):
    """Conv trunk -> labels + blank per frame (CTC). Built for the CPU
    latency target; `attention_heads=0` leaves the convolutions alone."""

    output = "ctc"

    def __init__(self, in_dim: int, num_classes: int, opts: ConvOptions) -> None:
        super().__init__(in_dim, num_classes, opts)
        self.blank = num_classes
        self.out = nn.Linear(opts.channels, num_classes + 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h, _ = self.trunk(x, lengths)
        return F.log_softmax(self.out(h), dim=-1)


@dataclass(frozen=True)
class ConvPoolOptions(ConvOptions):
    pooling: str = "attention"  # attention (learned weights over frames, 4 queries) | meanmax
    queries: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_size(self.pooling in ("attention", "meanmax"), "pooling", "attention|meanmax")
        check_size(1 <= self.queries <= 16, "queries", "an integer in [1, 16]")


@register_head("conv-pool")
class ConvPoolHead(ConvTrunk):
    """Conv trunk -> pooling over the valid frames (learned attention
    weights, or mean and max) -> class logits. The trunk sees the frames in
    order as the CTC head's does; the read-out is a softmax over time and one
    matrix product, so inference pays no CTC scoring."""

    output = "logits"
    Options = ConvPoolOptions

    def __init__(self, in_dim: int, num_classes: int, opts: ConvPoolOptions) -> None:
        super().__init__(in_dim, num_classes, opts)
        self.dropout = nn.Dropout(opts.dropout)
        c = opts.channels
        if opts.pooling == "attention":
            self.weights = nn.Linear(c, opts.queries)  # one score per frame and query: where the sound is
            self.out = nn.Linear(opts.queries * c, num_classes)
        else:
            self.out = nn.Linear(2 * c, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h, valid = self.trunk(x, lengths)
        m = valid.unsqueeze(-1).to(h.dtype)
        if self.opts.pooling == "attention":
            a = torch.softmax(self.weights(h) + (m - 1) * 1e4, dim=1)  # (B, T, Q); padded frames weigh nothing
            pooled = (a.transpose(1, 2) @ h).flatten(1)  # (B, Q * C)
        else:
            mean = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            peak = (h + (m - 1) * 1e4).amax(1)  # padded frames never win the max
            pooled = torch.cat([mean, peak], dim=-1)
        return self.out(self.dropout(pooled))
