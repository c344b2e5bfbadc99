"""Seeded waveform augmentation: noise at a set SNR, speed change, a
cheap-microphone / telephone channel, gain. All functions are pure given
the generator, so a corpus built from a seed is reproducible."""

from __future__ import annotations

import numpy as np
from scipy import signal


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = float(np.mean(x**2)) + 1e-12
    noise = rng.standard_normal(len(x)).astype(np.float32)
    # Pinkish noise: a one-pole low-pass keeps it from sounding like pure hiss.
    noise = signal.lfilter([1.0], [1.0, -0.9], noise).astype(np.float32)
    noise *= np.sqrt(power / (np.mean(noise**2) + 1e-12) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (pitch moves with it, as on tape)."""
    if abs(factor - 1.0) < 1e-6:
        return x
    up, down = 100, int(round(100 * factor))
    return signal.resample_poly(x, up, down).astype(np.float32)


def telephone(x: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """300-3400 Hz band, mild saturation: a cheap microphone or phone line."""
    sos = signal.butter(4, [300, 3400], btype="bandpass", fs=sample_rate, output="sos")
    y = signal.sosfilt(sos, x).astype(np.float32)
    peak = float(np.abs(y).max()) + 1e-9
    return (np.tanh(2.0 * y / peak) * peak / np.tanh(2.0)).astype(np.float32)


def random_augment(x: np.ndarray, rng: np.random.Generator, sample_rate: int = 16_000) -> np.ndarray:
    """One light random augmentation, as used in training (`train.augment`)."""
    choice = rng.integers(4)
    if choice == 1:
        x = add_noise(x, float(rng.uniform(10, 30)), rng)
    elif choice == 2:
        x = telephone(x, sample_rate)
    elif choice == 3:
        x = change_speed(x, float(rng.uniform(0.9, 1.1)))
    return (x * rng.uniform(0.5, 1.0) / (np.abs(x).max() + 1e-9)).astype(np.float32)
