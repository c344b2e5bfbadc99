"""MLP on pooled frame features."""

from __future__ import annotations

import torch
from torch import nn

from ..torchutil import lengths_mask
from . import register_head


def masked_pool(x: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """Mean (or mean and std) over valid frames only."""
    mask = lengths_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    n = lengths.clamp(min=1)[:, None].to(x.dtype)
    mean = (x * mask).sum(1) / n
    if how == "mean":
        return mean
    var = (((x - mean[:, None]) ** 2) * mask).sum(1) / n
    return torch.cat([mean, torch.sqrt(var + 1e-6)], dim=-1)


@register_head("mlp")
class MLPHead(nn.Module):
    """Pooled features (mean or mean+std over valid frames) -> MLP -> class logits."""

    output = "logits"

    def __init__(self, in_dim: int, num_classes: int, hidden: tuple[int, ...] | list[int] = (128, 64), dropout: float = 0.2, pooling: str = "meanstd") -> None:
        super().__init__()
        if pooling not in ("mean", "meanstd"):
            raise TypeError(f"pooling must be 'mean' or 'meanstd', got {pooling!r}")
        self.in_dim, self.num_classes, self.pooling = in_dim, num_classes, pooling
        dims = [in_dim * (2 if pooling == "meanstd" else 1), *hidden]
        layers: list[nn.Module] = [nn.LayerNorm(dims[0])]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net(masked_pool(x, lengths, self.pooling))
