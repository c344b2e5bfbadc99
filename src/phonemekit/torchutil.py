"""Small torch helpers shared by training, evaluation and export."""

from __future__ import annotations

import torch

from phonemekit.errors import ConfigError


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"invalid device {device!r} (auto|cpu|cuda)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    return device


def lengths_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) bool: True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
