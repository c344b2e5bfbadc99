"""MLP on pooled frame features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from phonemekit.models.heads.base import Head, check_dropout, check_layers, check_size, check_width, register_head
from phonemekit.torchutil import lengths_mask


def masked_pool(x: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """Mean (or mean and std) over valid frames only."""
    mask = lengths_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    n = lengths.clamp(min=1)[:, None].to(x.dtype)
    mean = (x * mask).sum(1) / n
    if how == "mean":
        return mean
    var = (((x - mean[:, None]) ** 2) * mask).sum(1) / n
    return torch.cat([mean, torch.sqrt(var + 1e-6)], dim=-1)


@dataclass(frozen=True)
class MLPOptions:
    hidden: tuple[int, ...] = (256,)  # widths of the hidden layers
    dropout: float = 0.5
    input_dropout: float = 0.3
    pooling: str = "meanstd"  # mean | meanstd

    def __post_init__(self) -> None:
        check_layers(len(self.hidden), "hidden", minimum=0)
        for i, width in enumerate(self.hidden):
            check_width(width, f"hidden[{i}]")
        check_dropout(self.dropout, "dropout")
        check_dropout(self.input_dropout, "input_dropout")
        check_size(self.pooling in ("mean", "meanstd"), "pooling", "mean|meanstd")


@register_head("mlp")
class MLPHead(Head):
    """Pooled features (mean or mean+std over valid frames) -> MLP -> class logits."""

    output = "logits"
    Options = MLPOptions

    def __init__(self, in_dim: int, num_classes: int, opts: MLPOptions) -> None:
        super().__init__(in_dim, num_classes, opts)
        self.pooling = opts.pooling
        dims = [in_dim * (2 if opts.pooling == "meanstd" else 1), *opts.hidden]
        # Pooled features standardised with training-set statistics (what a
        # scikit-learn StandardScaler does for the baselines); they live in the
        # checkpoint and the exported graph. A per-clip LayerNorm here would
        # erase the level differences between clips that pooled features carry.
        self.standardize = Standardize(dims[0])
        layers: list[nn.Module] = [nn.Dropout(opts.input_dropout)]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU(), nn.Dropout(opts.dropout)]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    @torch.no_grad()
    def fit_statistics(self, items: list[np.ndarray]) -> None:
        """Standardisation statistics from the training clips' frame features."""
        pooled = [masked_pool(torch.from_numpy(f)[None].float(), torch.tensor([len(f)]), self.pooling)[0] for f in items]
        self.standardize.fit(torch.stack(pooled))

    def embed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The last hidden layer (B, H): what speaker enrolment adapts on
        (`evaluation.enrolment`); the class logits are one linear map of it."""
        return self.net[:-1](self.standardize(masked_pool(x, lengths, self.pooling)))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net[-1](self.embed(x, lengths))


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
