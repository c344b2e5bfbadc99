"""Seeded waveform augmentation: noise at a set SNR, speed and tempo
change, vocal-tract length and pitch perturbation, a cheap-microphone /
telephone channel, rooms, microphone colouring, gain. All functions are
pure given the generator, so a corpus built from a seed is reproducible.

`AUGMENTATIONS` names one draw of each kind (its parameters drawn from the
generator), as the recipe's effect table measures them one by one and
together (`recipes.augmentation`)."""

from __future__ import annotations

import functools
import random
import threading
import warnings
from collections.abc import Callable

import numpy as np
from scipy import signal

SR = 16_000


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


_PRAAT = threading.Lock()  # Praat's random generator is one per process


def _praat_change(x: np.ndarray, sample_rate: int, seed: int, *, formants: float = 1.0, pitch: float = 1.0, duration: float = 1.0) -> np.ndarray:
    """Praat's "Change gender" (PSOLA, via parselmouth): formants scaled by
    `formants` (the vocal tract: a ratio above 1 is a shorter tract, as a
    child's), the median pitch by `pitch`, the length by `duration`. A clip
    without voiced frames keeps its pitch (there is none to move). PSOLA
    draws random pulses in unvoiced stretches: Praat's generator is seeded
    for the call, so the result is a function of its inputs."""
    import parselmouth
    from parselmouth.praat import call

    sound = parselmouth.Sound(x.astype(np.float64), sampling_frequency=sample_rate)
    with _PRAAT, warnings.catch_warnings():
        warnings.simplefilter("ignore", parselmouth.PraatWarning)  # "no voiced segments": a fricative or a stop's burst
        parselmouth.praat.run(f"random_initializeWithSeedUnsafelyButPredictably ({int(seed)})")
        try:
            median = call(sound.to_pitch(), "Get quantile", 0, 0, 0.5, "Hertz") if pitch != 1.0 else 0.0
            new_median = median * pitch if median == median and median > 0 else 0.0  # NaN: unvoiced
            y = call(sound, "Change gender", 75, 600, formants, new_median, 1.0, duration)
        finally:
            parselmouth.praat.run("random_initializeSafelyAndUnpredictably ()")
    return np.asarray(y.values[0], dtype=np.float32)


def vocal_tract(x: np.ndarray, ratio: float, sample_rate: int = SR, seed: int = 0) -> np.ndarray:
    """Vocal-tract length perturbation on the waveform: formants times `ratio`, pitch and length kept."""
    return _praat_change(x, sample_rate, seed, formants=ratio)


def pitch_shift(x: np.ndarray, semitones: float, sample_rate: int = SR, seed: int = 0) -> np.ndarray:
    """The voice's pitch moved by `semitones`, formants and length kept."""
    return _praat_change(x, sample_rate, seed, pitch=2 ** (semitones / 12))


def change_tempo(x: np.ndarray, factor: float, sample_rate: int = SR, seed: int = 0) -> np.ndarray:
    """Play `factor` times faster with pitch and formants kept (tempo, unlike `change_speed`)."""
    return _praat_change(x, sample_rate, seed, duration=1.0 / factor)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(1, 2**31))


def microphone(x: np.ndarray, rng: np.random.Generator, sample_rate: int = SR) -> np.ndarray:
    """A cheap microphone: coloured (shelves and a peak), band-limited at a
    drawn low and high edge, and softly saturated."""
    x = colour(x, rng, sample_rate)
    low, high = float(rng.uniform(100, 400)), float(rng.uniform(3400, 7000))
    sos = signal.butter(4, [low, high], btype="bandpass", fs=sample_rate, output="sos")
    y = signal.sosfilt(sos, x).astype(np.float32)
    peak, drive = float(np.abs(y).max()) + 1e-9, float(rng.uniform(1.0, 3.0))
    return (np.tanh(drive * y / peak) * peak / np.tanh(drive)).astype(np.float32)


@functools.cache
def _rooms(sample_rate: int = SR, n: int = 32) -> tuple[np.ndarray, ...]:
    """A fixed bank of rooms (simulated once per process from a fixed seed: one simulation costs ~50-150 ms, a clip's convolution ~0.1 ms)."""
    return tuple(room_bank(np.random.default_rng(762), n=n, sample_rate=sample_rate))


def in_room(x: np.ndarray, rng: np.random.Generator, sample_rate: int = SR) -> np.ndarray:
    """The clip said in one of 32 small rooms, drawn from `rng`."""
    rooms = _rooms(sample_rate)
    return reverberate(x, rooms[int(rng.integers(len(rooms)))])


Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# One draw of each kind. Speed and tempo as Kaldi recipes perturb (0.9 or
# 1.1; the original is the 1.0); vocal tracts up to 20% shorter (children's
# formants sit 10-20% above adults') or 10% longer; pitch -2 to +4
# semitones; rooms, noise and microphones as a tablet in a home meets them.
AUGMENTATIONS: dict[str, Augmentation] = {
    "speed": lambda x, rng: change_speed(x, float(rng.choice([0.9, 1.1]))),
    "tempo": lambda x, rng: change_tempo(x, float(rng.choice([0.9, 1.1])), seed=_seed(rng)),
    "vtlp": lambda x, rng: vocal_tract(x, float(rng.uniform(0.9, 1.2)), seed=_seed(rng)),
    "pitch": lambda x, rng: pitch_shift(x, float(rng.uniform(-2, 4)), seed=_seed(rng)),
    "room": in_room,
    "noise": lambda x, rng: add_noise(x, float(rng.uniform(5, 25)), rng),
    "microphone": microphone,
}


def combined(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each kind applied with probability one half (at least one), in the
    order a voice meets them: speaker, speaking rate, room, noise, microphone."""
    names = list(AUGMENTATIONS)
    chosen = rng.random(len(names)) < 0.5
    if not chosen.any():
        chosen[int(rng.integers(len(names)))] = True
    for name, on in zip(names, chosen):
        if on:
            x = AUGMENTATIONS[name](x, rng)
    return x


def augmentation(name: str) -> Augmentation:
    """An augmentation by name: one of `AUGMENTATIONS`, or `combined`."""
    if name == "combined":
        return combined
    if name not in AUGMENTATIONS:
        raise KeyError(f"unknown augmentation {name!r} (known: {', '.join([*AUGMENTATIONS, 'combined'])})")
    return AUGMENTATIONS[name]
