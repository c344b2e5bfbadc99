from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from phonemekit.config import AudioConfig
from phonemekit.data.audio import load_audio, write_audio
from phonemekit.errors import AudioValidationError

from .conftest import tone


def reason_of(path, cfg=None) -> str:
    with pytest.raises(AudioValidationError) as e:
        load_audio(path, cfg)
    return e.value.reason


def test_loads_and_resamples_to_16k(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, np.stack([tone(440, 0.5, sr=44100)] * 2, axis=1), 44100)
    clip = load_audio(p)
    assert clip.sample_rate == 16000 and clip.source_rate == 44100 and clip.source_channels == 2
    assert clip.samples.dtype == np.float32 and abs(len(clip.samples) - 8000) <= 2
    # The resampler keeps the tone: the spectral peak stays at 440 Hz.
    spec = np.abs(np.fft.rfft(clip.samples))
    assert abs(np.argmax(spec) * 16000 / len(clip.samples) - 440) < 5


@pytest.mark.parametrize("fmt", ["flac", "ogg"])
def test_other_formats(tmp_path, fmt):
    p = tmp_path / f"a.{fmt}"
    sf.write(p, tone(300, 0.5), 16000, format=fmt.upper())
    assert load_audio(p).duration == pytest.approx(0.5, abs=0.01)


def test_rejects_zero_bytes(tmp_path):
    (tmp_path / "z.wav").write_bytes(b"")
    assert reason_of(tmp_path / "z.wav") == "empty"


def test_rejects_random_bytes(tmp_path):
    (tmp_path / "r.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    assert reason_of(tmp_path / "r.wav") == "not_audio"


def test_rejects_text_with_audio_extension(tmp_path):
    (tmp_path / "t.flac").write_text("hello, not audio")
    assert reason_of(tmp_path / "t.flac") == "not_audio"


def test_rejects_wrong_extension(tmp_path):
    p = tmp_path / "x.wav"
    sf.write(p, tone(300), 16000, format="FLAC")
    assert reason_of(p) == "wrong_extension"


def test_rejects_unknown_extension(tmp_path):
    p = tmp_path / "x.mp3"
    p.write_bytes(b"ID3....")
    assert reason_of(p) == "bad_extension"


def test_rejects_wav_with_header_but_no_samples(tmp_path):
    p = tmp_path / "h.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    assert reason_of(p) == "empty"


def test_a_truncated_wav_is_refused_not_read_as_a_shorter_clip(tmp_path):
    # A header that claims more data than the file holds: cut off while copied or uploaded.
    p = tmp_path / "trunc.wav"
    write_audio(p, tone(300, 0.5))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioValidationError) as e:
        load_audio(p)
    assert e.value.reason == "truncated" and f"declares {len(data) - 44} bytes" in str(e.value)
    p.write_bytes(data + b"LIST\x04\x00\x00\x00abcd")  # a chunk after the data: whole, and read
    assert abs(load_audio(p).duration - 0.5) < 1e-3


def _wav_header(rate: int, channels: int, nbytes: int = 32) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return (
        b"RIFF" + struct.pack("<I", 36 + nbytes) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", nbytes) + b"\x01\x00" * (nbytes // 2)
    )


@pytest.mark.parametrize("rate,channels", [(4_000_000, 1), (16000, 200)])
def test_rejects_absurd_header(tmp_path, rate, channels):
    p = tmp_path / "absurd.wav"
    p.write_bytes(_wav_header(rate, channels))
    assert reason_of(p) in ("bad_header", "corrupt")


def test_rejects_too_long(tmp_path):
    p = tmp_path / "long.wav"
    write_audio(p, tone(300, 3.0))
    assert reason_of(p, AudioConfig(max_seconds=2.0)) == "too_long"


def test_rejects_too_large(tmp_path):
    p = tmp_path / "big.wav"
    write_audio(p, tone(300, 1.0))
    assert reason_of(p, AudioConfig(max_bytes=1000)) == "too_large"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_rejects_non_finite(tmp_path, bad):
    x = tone(300)
    x[100] = bad
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    assert reason_of(p) == "non_finite"


def test_rejects_digital_silence(tmp_path):
    p = tmp_path / "s.wav"
    sf.write(p, np.zeros(8000, np.float32), 16000)
    assert reason_of(p) == "silent"


def test_quiet_and_clipped_are_warnings(tmp_path):
    q, c = tmp_path / "q.wav", tmp_path / "c.wav"
    write_audio(q, tone(300) * 0.005)
    write_audio(c, np.clip(tone(300) * 10, -1, 1))
    assert any("quiet" in w for w in load_audio(q).warnings)
    assert any("clipping" in w for w in load_audio(c).warnings)


def test_missing_and_unreadable(tmp_path):
    assert reason_of(tmp_path / "nope.wav") == "missing"
    p = tmp_path / "locked.wav"
    write_audio(p, tone(300))
    p.chmod(0)
    try:
        if open(p, "rb"):  # root ignores permissions; nothing to test then
            pytest.skip("running as root: permissions are not enforced")
    except PermissionError:
        assert reason_of(p) == "unreadable"
    finally:
        p.chmod(0o644)
