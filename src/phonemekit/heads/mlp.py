"""MLP on pooled frame features."""

from __future__ import annotations

import numpy as np
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

    def __init__(self, in_dim: int, num_classes: int, hidden: tuple[int, ...] | list[int] = (256,), dropout: float = 0.5,
                 input_dropout: float = 0.3, pooling: str = "meanstd") -> None:
        super().__init__()
        if pooling not in ("mean", "meanstd"):
            raise TypeError(f"pooling must be 'mean' or 'meanstd', got {pooling!r}")
        self.in_dim, self.num_classes, self.pooling = in_dim, num_classes, pooling
        dims = [in_dim * (2 if pooling == "meanstd" else 1), *hidden]
        # Pooled features standardised with training-set statistics (what a
        # scikit-learn StandardScaler does for the baselines); they live in the
        # checkpoint and the exported graph. A per-clip LayerNorm here would
        # erase the level differences between clips that pooled features carry.
        self.standardize = Standardize(dims[0])
        layers: list[nn.Module] = [nn.Dropout(input_dropout)]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    @torch.no_grad()
    def fit_statistics(self, items: list[np.ndarray]) -> None:
        """Standardisation statistics from the training clips' frame features."""
        pooled = [masked_pool(torch.from_numpy(f)[None].float(), torch.tensor([len(f)]), self.pooling)[0] for f in items]
        self.standardize.fit(torch.stack(pooled))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardize(masked_pool(x, lengths, self.pooling)))


class Standardize(nn.Module):
    """x -> (x - mean) / std with fixed statistics (identity until fitted)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))

    def fit(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        self.inv_std.copy_(1.0 / x.std(0).clamp(min=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std
