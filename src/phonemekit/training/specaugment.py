"""SpecAugment on encoder frames (Park et al., 2019), for models trained on
cached features: the phone recogniser on utterances and, with
`train.spec_augment`, the clip heads. Written here because it acts on the
encoder's output frames, which the audio augmentation libraries never see."""

from __future__ import annotations

import numpy as np
import torch


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, rng: np.random.Generator, time_masks: int = 2, max_frames: int = 8,
                 feature_masks: int = 2, max_features: int = 40) -> torch.Tensor:  # fmt: skip
    """SpecAugment on encoder frames (Park et al., 2019): a few spans of
    frames and of feature channels zeroed per utterance, in place."""
    for k, n in enumerate(lengths.tolist()):
        for _ in range(time_masks):
            w = int(rng.integers(0, max_frames + 1))
            a = int(rng.integers(0, max(1, n - w)))
            x[k, a : a + w] = 0
        for _ in range(feature_masks):
            w = int(rng.integers(0, max_features + 1))
            a = int(rng.integers(0, max(1, x.shape[-1] - w)))
            x[k, ..., a : a + w] = 0
    return x
