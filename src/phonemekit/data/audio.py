"""The one place audio is read: load, validate, downmix, resample to 16 kHz.

Every rejection is an `AudioValidationError` with a short reason code (the
codes are listed in `REASONS`); loudness and clipping problems are warnings.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from phonemekit.config import AudioConfig
from phonemekit.errors import AudioValidationError, DataError
from phonemekit.fileio import atomic_open

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus")

REASONS = {
    "missing": "file does not exist",
    "not_a_file": "not a regular file",
    "unreadable": "file cannot be opened (permissions?)",
    "empty": "zero-length file or no samples",
    "too_large": "file larger than the byte limit",
    "bad_extension": "extension is not .wav/.flac/.ogg/.opus",
    "wrong_extension": "content is a different audio format than the extension says",
    "not_audio": "content is not a recognised audio format",
    "corrupt": "audio header or data cannot be decoded",
    "truncated": "the file ends before the audio its header declares (cut off while copying or uploading?)",
    "bad_header": "header claims an implausible sample rate or channel count",
    "too_long": "longer than the duration limit",
    "too_short": "shorter than the minimum duration",
    "non_finite": "samples contain NaN or infinity",
    "silent": "digital silence",
}

_MAGIC = {b"RIFF": ".wav", b"RIFX": ".wav", b"fLaC": ".flac", b"OggS": ".ogg"}
# Extensions each container may carry: Opus lives in Ogg, as Vorbis does.
_CONTAINER_OF = {".wav": ".wav", ".flac": ".flac", ".ogg": ".ogg", ".opus": ".ogg"}
# Sample widths a WAV header may honestly declare (PCM, float, A-law/u-law).
_WAV_BITS = {8, 16, 24, 32, 64}


@dataclass
class Clip:
    samples: np.ndarray  # float32 mono at `sample_rate`
    sample_rate: int
    source_rate: int
    source_channels: int
    sha256: str  # of the very bytes that were validated and decoded
    warnings: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def _sniff(head: bytes) -> str | None:
    fmt = _MAGIC.get(head[:4])
    if fmt == ".wav" and head[8:12] != b"WAVE":
        return None
    return fmt


def _wav_header(data: bytes) -> tuple[int | None, tuple[int, int] | None]:
    """What a WAV's chunks declare: bits per sample (fmt) and the data chunk's
    (declared, present) byte counts; None where the first chunks lack one.
    libsndfile decodes an odd width (7 bits, say) as 8-bit noise, and reads a
    cut-off data chunk as a shorter clip without a word: both are refused here."""
    end = "<" if data[:4] == b"RIFF" else ">"
    bits = chunk = None
    pos = 12
    while pos + 8 <= min(len(data), 1 << 16):
        cid, size = data[pos : pos + 4], struct.unpack(end + "I", data[pos + 4 : pos + 8])[0]
        if cid == b"fmt " and size >= 16 and pos + 24 <= len(data):
            bits = struct.unpack(end + "H", data[pos + 22 : pos + 24])[0]
        elif cid == b"data":
            chunk = (size, len(data) - pos - 8)
            break
        pos += 8 + size + (size & 1)
    return bits, chunk


def read_bytes(path: Path, cfg: AudioConfig) -> bytes:
    """The file's bytes in one read, after the checks that need no decoding."""
    bad = lambda reason, detail="": AudioValidationError(path, reason, detail)  # noqa: E731
    if not path.exists():
        raise bad("missing")
    if not path.is_file():
        raise bad("not_a_file")
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise bad("bad_extension", path.suffix or "no extension")
    try:
        with open(path, "rb") as f:
            data = f.read(cfg.max_bytes + 1)  # bounded even if the file grows meanwhile
    except PermissionError as e:
        raise bad("unreadable", e.strerror or "permission denied") from e
    except OSError as e:
        raise bad("unreadable", e.strerror or str(e)) from e
    _check_size(data, path, cfg)
    return data


def _check_size(data: bytes, name: object, cfg: AudioConfig) -> None:
    if not data:
        raise AudioValidationError(name, "empty", "0 bytes")
    if len(data) > cfg.max_bytes:
        raise AudioValidationError(name, "too_large", f"more than {cfg.max_bytes} bytes")


def load_audio(path: str | os.PathLike, cfg: AudioConfig | None = None) -> Clip:
    """Read and validate one clip; return mono float32 at `cfg.sample_rate`.
    The file is read once: its sha256 and its samples come from the same bytes."""
    cfg = cfg or AudioConfig()
    path = Path(path)
    data = read_bytes(path, cfg)
    return decode(data, path, cfg)


def decode(data: bytes, path: Path, cfg: AudioConfig) -> Clip:
    bad = lambda reason, detail="": AudioValidationError(path, reason, detail)  # noqa: E731
    fmt = _sniff(data[:12])
    if fmt is None:
        raise bad("not_audio")
    if fmt != _CONTAINER_OF[path.suffix.lower()]:
        raise bad("wrong_extension", f"{fmt[1:]} content named {path.suffix}")
    if fmt == ".wav":
        bits, chunk = _wav_header(data)
        if bits is not None and bits not in _WAV_BITS:
            raise bad("bad_header", f"{bits} bits per sample")
        if chunk is not None and chunk[0] > chunk[1]:
            raise bad("truncated", f"the data chunk declares {chunk[0]} bytes but {chunk[1]} are present")
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:  # libsndfile raises LibsndfileError/RuntimeError
        raise bad("corrupt", _one_line(e)) from e
    if not (1000 <= info.samplerate <= cfg.max_source_rate):
        raise bad("bad_header", f"sample rate {info.samplerate} Hz")
    if not (1 <= info.channels <= cfg.max_channels):
        raise bad("bad_header", f"{info.channels} channels")
    if info.frames <= 0:
        raise bad("empty", "no samples")
    max_frames = int(cfg.max_seconds * info.samplerate)
    if info.frames > max_frames:
        raise bad("too_long", f"{info.frames / info.samplerate:.1f} s > {cfg.max_seconds:g} s")
    try:
        # frames bounds the read even if the header lies about the length.
        samples, rate = sf.read(io.BytesIO(data), frames=max_frames + 1, dtype="float32", always_2d=True)
    except Exception as e:
        raise bad("corrupt", _one_line(e)) from e
    if samples.shape[0] == 0:
        raise bad("empty", "no decodable samples")
    if samples.shape[0] > max_frames:
        raise bad("too_long", f"> {cfg.max_seconds:g} s")
    if not np.isfinite(samples).all():
        raise bad("non_finite")
    mono = samples.mean(axis=1, dtype=np.float32)
    peak = float(np.abs(mono).max())
    if peak == 0.0:
        raise bad("silent")
    if len(mono) / rate < cfg.min_seconds:
        raise bad("too_short", f"{len(mono) / rate * 1000:.0f} ms")
    warnings = []
    if peak < 0.01:
        warnings.append(f"very quiet (peak {peak:.4f})")
    clipped = float(np.mean(np.abs(samples) >= 0.999))
    if clipped > 0.001:
        warnings.append(f"clipping ({clipped:.1%} of samples at full scale)")
    if peak > 1.0:
        # Float files may exceed full scale; keep the shape, fix the level.
        mono = mono / peak
        warnings.append(f"float samples beyond full scale (peak {peak:.2f}), normalised")
    out = resample(mono, rate, cfg.sample_rate)
    return Clip(out, cfg.sample_rate, int(rate), int(info.channels), hashlib.sha256(data).hexdigest(), warnings)


def decode_bytes(data: bytes, cfg: AudioConfig, name: str = "request") -> Clip:
    """A clip received as bytes (an upload): its container is sniffed, then
    every check of `decode` applies. `name` appears in errors."""
    _check_size(data, name, cfg)
    fmt = _sniff(data[:12])
    if fmt is None:
        raise AudioValidationError(name, "not_audio")
    return decode(data, Path(name + fmt), cfg)


def pcm16_to_float(data: bytes, name: str = "request") -> np.ndarray:
    """Raw little-endian signed 16-bit mono PCM as float32 in [-1, 1)."""
    if len(data) % 2:
        raise AudioValidationError(name, "corrupt", f"{len(data)} bytes is not a whole number of 16-bit samples")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def decode_pcm16(data: bytes, sample_rate: int, cfg: AudioConfig, name: str = "request") -> Clip:
    """Raw PCM16 at `sample_rate`, wrapped as a WAV in memory so that it
    passes through exactly the checks an uploaded file does."""
    if not 8000 <= sample_rate <= 48000:
        raise AudioValidationError(name, "bad_header", f"sample rate {sample_rate} Hz (expected 8000-48000)")
    samples = pcm16_to_float(data, name)
    if not len(samples):
        raise AudioValidationError(name, "empty", "no samples")
    if len(samples) > cfg.max_seconds * sample_rate:
        raise AudioValidationError(name, "too_long", f"{len(samples) / sample_rate:.1f} s > {cfg.max_seconds:g} s")
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, subtype="PCM_16", format="WAV")
    return decode(buf.getvalue(), Path(name + ".wav"), cfg)


def resample(x: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr (high quality, maintained)."""
    x = np.asarray(x, dtype=np.float32)
    if source_rate == target_rate:
        return x
    return soxr.resample(x, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def write_audio(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = 16_000, *, exclusive: bool = False) -> None:
    """Write a clip atomically: 16-bit PCM WAV or FLAC, or Ogg Vorbis, by extension.
    `exclusive`: an existing file is never replaced (`FileExistsError`)."""
    path = Path(path)
    formats = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}
    if path.suffix.lower() not in formats:
        raise DataError(f"cannot write {path}: the extension must be one of {', '.join(formats)}")
    fmt, subtype = formats[path.suffix.lower()]
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    with atomic_open(path, "wb", exclusive=exclusive) as f:
        sf.write(f, clipped, sample_rate, subtype=subtype, format=fmt)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[-1] if text else type(e).__name__)[:200]
