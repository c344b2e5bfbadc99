"""Audio block sources for the live engine: a replayed file (testable
anywhere) or the microphone (sounddevice, imported only when used: it
needs PortAudio)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from phonemekit.config import AudioConfig
from phonemekit.data.audio import load_audio
from phonemekit.live.vad import FRAME, SR, LiveError


def file_blocks(path: str | Path, *, realtime: bool = False, block: int = FRAME) -> Iterator[np.ndarray]:
    """Replay a file as a stream: in real time, or as fast as possible."""
    x = load_audio(path, AudioConfig(max_seconds=3600, max_bytes=2_000_000_000)).samples
    return array_blocks(x, realtime=realtime, block=block)


def array_blocks(x: np.ndarray, *, realtime: bool = False, block: int = FRAME) -> Iterator[np.ndarray]:
    """A 16 kHz waveform in memory as a stream of blocks."""
    start = time.perf_counter()
    for i in range(0, len(x), block):
        if realtime:
            delay = start + i / SR - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        yield x[i : i + block]


def mic_blocks(device: str | int | None = None, block: int = FRAME) -> Iterator[np.ndarray]:
    """Microphone blocks through sounddevice (imported only here)."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise LiveError(
            "microphone input needs PortAudio and sounddevice: apt-get install libportaudio2 && pip install sounddevice (or replay a file with --file)"
        ) from e
    try:
        inputs = [d for d in sd.query_devices() if d["max_input_channels"] > 0]
    except Exception as e:  # PortAudio errors are plain Exceptions
        raise LiveError(f"cannot list audio devices: {e}") from e
    if not inputs:
        raise LiveError("no audio input device found; connect a microphone or replay a file with --file")
    q: queue.Queue = queue.Queue()
    try:
        stream = sd.InputStream(
            samplerate=SR, channels=1, dtype="float32", blocksize=block, device=device, callback=lambda data, frames, t, status: q.put(data[:, 0].copy())
        )
    except Exception as e:
        names = ", ".join(f"{i}: {d['name']}" for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0)
        raise LiveError(f"cannot open input device {device!r}: {e}. Input devices: {names}") from e
    with stream:
        while True:
            yield q.get()
