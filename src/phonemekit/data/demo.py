"""Built-in demo corpus: phonics sounds synthesised with eSpeak NG.

eSpeak NG comes from the `espeakng-loader` package (library and voices, no
network) and is driven through ctypes. Phoneme input `[[...]]` is honoured
only with the phoneme flag; without it eSpeak spells the letters out, which
is audible, plausible and wrong.

There is no child voice in eSpeak. High pitch with voice variants that raise
the formants (Annie, anika, Alicia, f5) are the closest stand-ins; these
speakers are tagged `child` in `speakers.json`.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phonemekit.data import audio, augment
from phonemekit.data.inventory import SOUNDS, Sound
from phonemekit.errors import DataError
from phonemekit.fileio import write_json

log = logging.getLogger(__name__)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 0x1
_ESPEAK_PHONEMES = 0x100
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class Voice:
    speaker: str
    variant: str
    pitch: int  # eSpeak 0-99
    rate: int  # words per minute
    group: str  # "child" or "adult"
    pitch_range: int = 50
    # Vocal-tract scale for `voices="varied"`: every frequency (formants and
    # pitch) times this factor. eSpeak's variants span a narrow band of
    # tract lengths; children's tracts are 15-40% shorter than adults'.
    tract: float = 1.0


# Each speaker differs in voice variant, pitch and rate, so a held-out
# speaker is unseen in all three.
VOICES: tuple[Voice, ...] = (
    Voice("spk01", "m1", 40, 150, "adult", tract=1.0),
    Voice("spk02", "m2", 35, 165, "adult", tract=0.92),
    Voice("spk03", "m3", 48, 140, "adult", tract=1.05),
    Voice("spk04", "m4", 30, 175, "adult", tract=0.9),
    Voice("spk05", "m5", 45, 155, "adult", tract=0.97),
    Voice("spk06", "m6", 52, 145, "adult", tract=1.08),
    Voice("spk07", "f1", 60, 160, "adult", tract=1.0),
    Voice("spk08", "f2", 65, 150, "adult", tract=0.94),
    Voice("spk09", "f3", 70, 170, "adult", tract=1.06),
    Voice("spk10", "f4", 62, 145, "adult", tract=1.1),
    Voice("spk11", "klatt", 50, 160, "adult", tract=0.95),
    Voice("spk12", "klatt3", 58, 150, "adult", tract=1.03),
    Voice("spk13", "Annie", 88, 150, "child", 70, tract=1.2),
    Voice("spk14", "f5", 95, 165, "child", 70, tract=1.15),
    Voice("spk15", "anika", 85, 140, "child", 70, tract=1.25),
    Voice("spk16", "Alicia", 92, 155, "child", 70, tract=1.18),
    Voice("spk17", "m7", 38, 185, "adult", tract=1.12),
    Voice("spk18", "Annie", 99, 130, "child", 80, tract=1.3),
)


CHANNELS = ("room", "plain")
# "espeak": the variants as eSpeak renders them (the default). "varied":
# each speaker's vocal-tract scale (Voice.tract), jittered by up to 4% per
# take (vocal-tract length perturbation). Measured in the demo (docs/data.md, the demo
# corpus): varied voices made held-out eSpeak speakers much harder and did
# not transfer better to the held-out Piper family, so it is not the default.
VOICE_MODES = ("espeak", "varied")


class ESpeak:
    """Minimal ctypes binding: synchronous synthesis into a numpy buffer."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise DataError("the demo corpus needs `espeakng-loader` (pip install espeakng-loader)") from e
        self.lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.sample_rate <= 0:
            raise DataError("eSpeak NG failed to initialise")
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, events):
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: ctypes does not
        self.lib.espeak_SetSynthCallback(self._callback)

    def synth(self, phonemes: str, voice: str, pitch: int, rate: int, pitch_range: int = 50, seed: int = 0) -> np.ndarray:
        with self._lock:
            # Breath noise in some variants (f2, f3, f5, Alicia) comes from
            # eSpeak's own generator, seeded from the clock at start-up.
            self.lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise DataError(f"eSpeak NG has no voice {voice!r}")
            for param, value in ((_RATE, rate), (_VOLUME, 100), (_PITCH, pitch), (_RANGE, pitch_range)):
                self.lib.espeak_SetParameter(param, value, 0)
            self._chunks = []
            text = phonemes.encode()
            flags = _ESPEAK_CHARS_UTF8 | _ESPEAK_PHONEMES
            self.lib.espeak_Synth(text, len(text) + 1, 0, 0, 0, flags, None, None)
            self.lib.espeak_Synchronize()
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0


def _trim(x: np.ndarray, rel: float = 0.02) -> np.ndarray:
    idx = np.flatnonzero(np.abs(x) > rel * (np.abs(x).max() + 1e-9))
    return x[idx[0] : idx[-1] + 1] if len(idx) else x


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def render_take(
    engine: ESpeak, sound: Sound, voice: Voice, take: int, seed: int, sr: int = 16_000, rooms: list[np.ndarray] | None = None, voices: str = "espeak"
) -> np.ndarray:
    """One clip: jittered prosody, the speaker's vocal-tract scale (`voices`
    "varied"), then a light channel/noise augmentation; with `rooms`, half
    the takes are heard in one of those rooms and half through a coloured
    microphone."""
    rng = np.random.default_rng(_seed(seed, voice.speaker, sound.label, take))
    tract = 1.0
    if voices == "varied":  # a generator of its own: the other draws stay those of the "espeak" corpus
        tract = voice.tract * float(np.random.default_rng(_seed(seed, voice.speaker, sound.label, take, "tract")).uniform(0.96, 1.04))
    x = engine.synth(
        sound.espeak,
        f"en-us+{voice.variant}",
        pitch=int(np.clip(voice.pitch + rng.integers(-4, 5), 0, 99)),
        rate=int(voice.rate * rng.uniform(0.9, 1.1) / tract),  # slower by the factor the scaling speeds it up
        pitch_range=voice.pitch_range,
        seed=int(rng.integers(1, 2**31 - 1)),
    )
    # Played `tract` times faster: every frequency scales by it (resampled once, with the rate change).
    x = audio.resample(_trim(x), round(engine.sample_rate * tract), sr)
    if rooms:  # a generator of its own, so a take that meets neither is the plain corpus's take
        crng = np.random.default_rng(_seed(seed, voice.speaker, sound.label, take, "channel"))
        if crng.random() < 0.5:
            x = augment.reverberate(x, rooms[int(crng.integers(len(rooms)))])
        if crng.random() < 0.5:
            x = augment.colour(x, crng, sr)
    kind = take % 4
    if kind == 1:
        x = augment.add_noise(x, float(rng.uniform(15, 30)), rng)
    elif kind == 2:
        x = augment.telephone(x, sr)
    elif kind == 3:
        x = augment.change_speed(x, float(rng.uniform(0.92, 1.08)))
    x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.3, 0.9)
    pad = lambda: np.zeros(int(sr * rng.uniform(0.05, 0.15)), np.float32)  # noqa: E731
    y = np.concatenate([pad(), x.astype(np.float32), pad()])
    # A faint noise floor: real recordings are never digitally silent.
    return (y + rng.standard_normal(len(y)).astype(np.float32) * 3e-4).astype(np.float32)


def _render_speaker(voice: Voice, labels: list[str], takes: int, seed: int, root: str, channel: str, voices: str) -> tuple[int, float]:
    # eSpeak NG keeps hidden state across utterances (a slow pitch flutter
    # whose phase carries over, even through re-initialisation), so a clip
    # depends on everything synthesised before it in the process. Each
    # speaker is therefore rendered in a fresh process, in a fixed order.
    engine = ESpeak()
    rooms = augment.room_bank(np.random.default_rng(_seed(seed, voice.speaker, "rooms"))) if channel == "room" else None
    n, seconds = 0, 0.0
    for label in labels:
        sound = next(s for s in SOUNDS if s.label == label)
        for take in range(takes):
            x = render_take(engine, sound, voice, take, seed, rooms=rooms, voices=voices)
            audio.write_audio(Path(root) / voice.speaker / sound.label / f"take{take}.flac", x, 16_000)
            n, seconds = n + 1, seconds + len(x) / 16_000
    return n, seconds


def build_demo_corpus(
    out: str | Path,
    *,
    speakers: int = len(VOICES),
    takes: int = 3,
    seed: int = 0,
    labels: list[str] | None = None,
    workers: int = 2,
    channel: str = "room",
    voices: str = "espeak",
    progress=None,
) -> dict:
    """Write `out/recordings/<speaker>/<label>/take<k>.flac` and `speakers.json`.

    `channel`: "room" (rooms and microphone colouring on top of the noise,
    telephone and speed takes) or "plain" (those three only); `voices`: see
    VOICE_MODES. Returns a
    summary dict. Deterministic for a given seed.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    out = Path(out)
    cast = VOICES[:speakers]
    known = [s.label for s in SOUNDS]
    if labels is not None and not set(labels) <= set(known):
        raise DataError(f"unknown demo labels: {', '.join(sorted(set(labels) - set(known)))}")
    chosen = [lab for lab in known if labels is None or lab in labels]
    if channel not in CHANNELS:
        raise DataError(f"unknown demo channel {channel!r} (use {' or '.join(CHANNELS)})")
    if voices not in VOICE_MODES:
        raise DataError(f"unknown demo voices {voices!r} (use {' or '.join(VOICE_MODES)})")
    root = out / "recordings"
    task = progress.add_task("synthesising demo corpus", total=len(cast)) if progress else None
    n_done, seconds = 0, 0.0
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = [pool.submit(_render_speaker, v, chosen, takes, seed, str(root), channel, voices) for v in cast]
        for f in futures:
            n, sec = f.result()
            n_done, seconds = n_done + n, seconds + sec
            if progress:
                progress.advance(task)
    write_json(out / "speakers.json", {v.speaker: {"group": v.group} for v in cast})
    return {"root": str(root), "clips": n_done, "audio_seconds": round(seconds, 1), "speakers": len(cast), "labels": len(chosen), "voices": voices}
