"""Seeded waveform augmentation: noise at a set SNR, speed change, a
cheap-microphone / telephone channel, rooms, microphone colouring, gain.
All functions are pure given the generator, so a corpus built from a seed
is reproducible."""

from __future__ import annotations

import random

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


def room_bank(rng: np.random.Generator, n: int = 6, sample_rate: int = 16_000) -> list[np.ndarray]:
    """Room impulse responses of small rooms (a bedroom, a classroom corner)
    by the image-source method of pyroomacoustics: child at 0.3-1.5 m from
    a tablet, walls from soft to hard. Computed once per speaker and reused,
    since one simulation costs ~50 ms and a clip's convolution ~0.1 ms."""
    import pyroomacoustics as pra

    bank = []
    for _ in range(n):
        dims = rng.uniform([2.5, 2.5, 2.3], [6.0, 5.0, 3.0])
        room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(float(rng.uniform(0.15, 0.6))), max_order=8)
        src = rng.uniform([0.5, 0.5, 0.9], dims - 0.5)
        direction = rng.standard_normal(3)
        mic = np.clip(src + direction / np.linalg.norm(direction) * rng.uniform(0.3, 1.5), 0.2, dims - 0.2)
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float32)
        bank.append(rir / (np.abs(rir).max() + 1e-9))
    return bank


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    y = signal.fftconvolve(x, rir)[: len(x) + len(rir) // 4].astype(np.float32)  # keep a short tail
    return y * (np.abs(x).max() / (np.abs(y).max() + 1e-9))


def colour(x: np.ndarray, rng: np.random.Generator, sample_rate: int = 16_000) -> np.ndarray:
    """A microphone's colouring: random shelf and peaking EQ (audiomentations).
    audiomentations draws from the global generators, so they are seeded
    from `rng` first and the clip stays reproducible."""
    from audiomentations import Compose, HighShelfFilter, LowShelfFilter, PeakingFilter

    seed = int(rng.integers(2**31))
    random.seed(seed)
    np.random.seed(seed)
    chain = Compose(
        [
            LowShelfFilter(min_gain_db=-12, max_gain_db=6, p=0.7),
            HighShelfFilter(min_gain_db=-12, max_gain_db=6, p=0.7),
            PeakingFilter(min_gain_db=-9, max_gain_db=9, p=0.7),
        ]
    )
    return chain(x.astype(np.float32), sample_rate=sample_rate).astype(np.float32)
