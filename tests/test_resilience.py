"""Hostile input, fuzzing, kill-and-resume, temp cleanup, audit and purge."""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phonemekit.data.audio import load_audio, write_audio
from phonemekit.errors import AudioValidationError
from phonemekit.fileio import read_jsonl
from phonemekit.runs import _parse_checkpoint

from .conftest import make_corpus, tone

MARKUP = "<script>alert(1)</script> $(rm -rf ~) `reboot`"


def _wav_header(rate: int, channels: int, data_bytes: int, actual: int = 64) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
        + np.random.default_rng(0).integers(-3000, 3000, actual // 2, dtype=np.int16).tobytes()
    )


def build_hostile(root: Path, outside: Path) -> dict[str, str]:
    """Bad files inside a good corpus; returns {relative path: expected reason}."""
    d = root / "s1" / "aa"
    expect = {}

    def put(name: str, data: bytes, reason: str, folder: Path = d) -> None:
        (folder / name).write_bytes(data)
        expect[str((folder / name).relative_to(root))] = reason

    put("zero.wav", b"", "empty")
    put("random.wav", np.random.default_rng(1).bytes(4000), "not_audio")
    put("text.ogg", b"just some text, not audio at all\n", "not_audio")
    put("absurd_rate.wav", _wav_header(50_000_000, 1, 64), "bad_header")
    put("absurd_channels.wav", _wav_header(16000, 40, 64 * 40, 64 * 40), "bad_header")
    x = tone(300)
    x[10], x[20] = np.nan, np.inf
    sf.write(d / "nan.wav", x, 16000, subtype="FLOAT")
    expect["s1/aa/nan.wav"] = "non_finite"
    with sf.SoundFile(d / "hour.flac", "w", 8000, 1, subtype="PCM_16", format="FLAC") as f:
        block = (np.sin(np.arange(8000 * 60) / 8) * 0.01).astype(np.float32)
        for _ in range(60):  # one hour, compresses to little
            f.write(block)
    expect["s1/aa/hour.flac"] = "too_long"
    with open(d / "huge.wav", "wb") as f:  # sparse: over the byte limit without using the disk
        f.write(_wav_header(16000, 1, 60_000_000))
        f.truncate(60_000_100)
    expect["s1/aa/huge.wav"] = "too_large"
    # A header that claims far more data than the file holds: cut off, refused.
    (d / "short_data.wav").write_bytes(_wav_header(16000, 1, 10_000_000, 16000))
    expect["s1/aa/short_data.wav"] = "truncated"
    # Metadata with markup and shell text in a perfectly good file.
    with sf.SoundFile(d / "tagged.wav", "w", 16000, 1, subtype="PCM_16") as f:
        f.title, f.comment, f.artist = MARKUP, MARKUP, MARKUP
        f.write(tone(220))
    with sf.SoundFile(d / "tagged.flac", "w", 16000, 1, format="FLAC") as f:
        f.title, f.comment = MARKUP, MARKUP
        f.write(tone(220))
    write_audio(outside / "secret.wav", tone(440))
    (d / "escape.wav").symlink_to(outside / "secret.wav")
    expect["s1/aa/escape.wav"] = "symlink_escape"
    bad_dir = root / "s2" / "bad\nlabel"
    bad_dir.mkdir(parents=True)
    write_audio(bad_dir / "x.wav", tone(220))
    expect["s2/bad\nlabel"] = "bad_name"
    put("ctrl\x07bell.wav", (d / "t0.wav").read_bytes(), "bad_name")
    write_audio(d / "dots..wav", tone(230, seed=7))  # two dots in a name are not traversal: kept
    expect["s1/aa/dots..wav"] = ""
    del expect["s1/aa/dots..wav"]
    (root / "stray.wav").write_bytes((d / "t0.wav").read_bytes())
    expect["stray.wav"] = "bad_layout"
    return expect


def test_hostile_corpus_prepare_and_train_all(tmp_path):
    from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig, TrainConfig
    from phonemekit.data.manifest import load_manifest, prepare
    from phonemekit.training.experiment import train_all

    root = make_corpus(tmp_path / "rec")
    good = sorted(str(p.relative_to(root)) for p in root.rglob("*.wav"))
    (tmp_path / "outside").mkdir()
    expect = build_hostile(root, tmp_path / "outside")
    s = prepare(root, tmp_path / "data")
    rejected = {r["path"]: r["reason"] for r in read_jsonl(tmp_path / "data" / "rejected.jsonl")}
    assert rejected == expect
    kept = {r["path"] for r in read_jsonl(tmp_path / "data" / "manifest.jsonl")}
    assert set(good) | {"s1/aa/tagged.wav", "s1/aa/tagged.flac", "s1/aa/dots..wav"} == kept
    assert s["clips"] == len(kept) and s["rejected"] == len(expect)

    cfg = ModelConfig(
        name="hostile",
        encoder=EncoderConfig(family="fbank", source="fbank"),
        head=HeadConfig("mlp", {"hidden": [16]}),
        train=TrainConfig(epochs=2, batch_size=8),
    )
    train_all(load_manifest(tmp_path / "data"), [cfg], tmp_path / "out", leaky=False, cache_root=tmp_path / "cache")
    # Every kept clip of the held-out speakers was scored, the hostile ones' neighbours included.
    from phonemekit.training.experiment import make_split

    m = load_manifest(tmp_path / "data")
    held = make_split(m, "speaker-disjoint").test
    z = np.load(tmp_path / "out" / "models" / "hostile" / "predictions.npz")
    assert len(z["test_y"]) == sum(r["speaker"] in held for r in m.rows) > 0
    # Metadata text is never copied anywhere: not into manifests, caches or reports.
    for p in list((tmp_path / "data").rglob("*")) + list((tmp_path / "out").rglob("*")) + list((tmp_path / "cache").rglob("*")):
        if p.is_file():
            assert b"<script>" not in p.read_bytes() and b"rm -rf" not in p.read_bytes(), p


valid_wav = None


def _valid_bytes() -> bytes:
    global valid_wav
    if valid_wav is None:
        import io

        buf = io.BytesIO()
        sf.write(buf, tone(300, 0.2), 16000, format="WAV", subtype="PCM_16")
        valid_wav = buf.getvalue()
    return valid_wav


def _check_loader(tmp_path: Path, data: bytes, suffix: str) -> None:
    p = tmp_path / f"fuzz{suffix}"
    p.write_bytes(data)
    try:
        clip = load_audio(p)
    except AudioValidationError:
        return
    assert clip.samples.dtype == np.float32 and np.isfinite(clip.samples).all() and len(clip.samples) > 0


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3000), suffix=st.sampled_from([".wav", ".flac", ".ogg"]))
def test_fuzz_random_bytes(tmp_path, data, suffix):
    _check_loader(tmp_path, data, suffix)


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=12), st.integers(0, 7000))
def test_fuzz_mutated_valid_wav(tmp_path, flips, cut):
    data = bytearray(_valid_bytes())
    for pos, val in flips:  # the header lives in the first bytes
        data[pos % len(data)] = val
    _check_loader(tmp_path, bytes(data[: max(1, len(data) - cut)]), ".wav")


def _demo_cmd(out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "phonemekit.cli",
        "demo",
        "--out",
        str(out),
        "--speakers",
        "4",
        "--takes",
        "1",
        "--models",
        "fbank-mlp,fbank-ctc",
        "--epochs",
        "4",
    ]


def _artifacts(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())["sections"]["train"]
    return {
        # The tensors' bytes: the checkpoint's header also records where its run lives, which differs.
        "weights": {m: _parse_checkpoint((out / "models" / m / "model.safetensors").read_bytes(), Path(m))[1] for m in ("fbank-mlp", "fbank-ctc")},
        "top1": {m: v["top1"] for m, v in report["models"].items()},
        "ensemble": json.loads((out / "ensemble.json").read_text())["methods"]["mean"]["top1"],
        "clips": sorted((r["path"], r["sha256"]) for r in read_jsonl(out / "data" / "manifest.jsonl")),
    }


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_artifacts(tmp_path):
    env = {**os.environ, "PHONEMEKIT_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    subprocess.run(_demo_cmd(tmp_path / "clean"), env=env, check=True, capture_output=True, timeout=600)
    clean_seconds = time.perf_counter() - t0
    proc = subprocess.Popen(_demo_cmd(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill it mid-training: after the first model's first checkpoint appears.
    marker = tmp_path / "killed" / "models" / "fbank-ctc" / "train_state.pt"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "report.json").exists()
    t0 = time.perf_counter()
    subprocess.run(_demo_cmd(tmp_path / "killed"), env=env, check=True, capture_output=True, timeout=600)
    resume_seconds = time.perf_counter() - t0
    assert _artifacts(tmp_path / "killed") == _artifacts(tmp_path / "clean")
    steps = [json.loads(x) for x in (tmp_path / "killed" / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps].count("corpus") == 1  # the finished step was not redone
    print(f"clean run {clean_seconds:.1f} s, resume after kill {resume_seconds:.1f} s")


def test_private_tmpdir_is_removed_on_success_error_and_ctrl_c():
    from phonemekit.privacy import private_tmpdir

    seen = []
    with private_tmpdir() as d:
        seen.append(d)
        assert oct(d.stat().st_mode & 0o777) == "0o700"
        (d / "x").write_text("x")
    with pytest.raises(ValueError), private_tmpdir() as d:
        seen.append(d)
        raise ValueError
    with pytest.raises(KeyboardInterrupt), private_tmpdir() as d:
        seen.append(d)
        raise KeyboardInterrupt
    assert not any(p.exists() for p in seen)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    from phonemekit.fileio import atomic_open, write_text

    write_text(tmp_path / "a.txt", "old")
    with pytest.raises(KeyboardInterrupt), atomic_open(tmp_path / "a.txt") as f:
        f.write("half of the new")
        raise KeyboardInterrupt
    assert (tmp_path / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_pipeline_stops_on_failure_and_retries_only_transient(tmp_path):
    from phonemekit.recipes.pipeline import Pipeline, Step

    calls = {"flaky": 0, "bad": 0}

    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] < 2:
            raise OSError(errno.EAGAIN, "resource temporarily unavailable")
        (tmp_path / "a.json").write_text("{}")

    def bad():
        calls["bad"] += 1
        raise ValueError("bad data")

    after = Step("after", lambda: (tmp_path / "c.json").write_text("{}"), outputs=[tmp_path / "c.json"])
    with pytest.raises(ValueError, match="bad data"):
        Pipeline(tmp_path, backoff=0.01).run([Step("flaky", flaky, outputs=[tmp_path / "a.json"]), Step("bad", bad, outputs=[tmp_path / "b.json"]), after])
    assert calls == {"flaky": 2, "bad": 1} and not (tmp_path / "c.json").exists()
    log = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [(r["step"], r["status"]) for r in log] == [("flaky", "done"), ("bad", "failed")]
    assert all(r["peak_rss_mb"] > 0 for r in log)


def test_pipeline_skips_done_steps_and_force_redoes(tmp_path):
    from phonemekit.recipes.pipeline import Pipeline, Step, StepError

    n = {"a": 0}

    def a():
        n["a"] += 1
        (tmp_path / "a.json").write_text(json.dumps(n))

    step = Step("a", a, outputs=[tmp_path / "a.json"], config={"k": 1})
    Pipeline(tmp_path).run([step])
    Pipeline(tmp_path).run([step])
    assert n["a"] == 1
    Pipeline(tmp_path, force={"a"}).run([step])
    assert n["a"] == 2
    (tmp_path / "a.json").write_text("")  # an output that no longer passes its check is redone
    Pipeline(tmp_path).run([step])
    assert n["a"] == 3
    with pytest.raises(StepError, match="did not produce"):
        Pipeline(tmp_path, force={"b"} - {"b"}).run([Step("b", lambda: None, outputs=[tmp_path / "never.json"])])


def test_step_times_keep_the_latest_run_of_each_step_and_render(tmp_path):
    from phonemekit.recipes.pipeline import Pipeline, Step
    from phonemekit.report.report import render

    def write(name: str) -> dict:
        (tmp_path / f"{name}.json").write_text("{}")
        return {}

    steps = [Step(name, lambda n=name: write(n), outputs=[tmp_path / f"{name}.json"]) for name in ("a", "b")]
    Pipeline(tmp_path).run(steps)
    Pipeline(tmp_path, force={"b"}).run(steps)
    with open(tmp_path / "steps.jsonl", "a") as f:
        f.write('{"step": "a", "status": "do')  # a line cut short by a crash is passed over
    times = Pipeline(tmp_path).step_times(list(reversed(steps)))
    log = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()[:3]]
    assert [t["step"] for t in times] == ["b", "a"] and times[0] == log[2] and times[1] == log[0]  # pipeline order, latest record
    rows = [
        {"step": t["step"], "seconds": t["seconds"], "peak_rss_mb": t["peak_rss_mb"], "finished": t["finished"], "this_run": t["step"] == "b"} for t in times
    ]
    md = render("pipeline", {"steps": rows, "total_seconds": 90.0})
    assert "| b |" in md and "| yes |" in md and "| no |" in md and "(1.5 min)" in md


def test_audit_log_and_purge(tmp_path, monkeypatch):
    from phonemekit import privacy
    from phonemekit.data.manifest import prepare

    monkeypatch.setattr(privacy, "WORKSPACE", tmp_path / "home")
    root = make_corpus(tmp_path / "rec", speakers=("alice", "bob", "carol"))
    prepare(root, tmp_path / "data")
    old = tmp_path / "cache" / "x" / "old.npy"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"0" * 100)
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    (tmp_path / "cache" / "new.npy").write_bytes(b"1")
    dry = privacy.purge(30, {"cache": tmp_path / "cache"})
    assert dry["cache"]["files"] == 1 and old.exists()
    privacy.purge(30, {"cache": tmp_path / "cache"}, dry_run=False)
    assert not old.exists() and (tmp_path / "cache" / "new.npy").exists()
    log = (tmp_path / "home" / "audit.jsonl").read_text()
    records = [json.loads(x) for x in log.splitlines()]
    assert [r["action"] for r in records] == ["ingest", "purge"] and records[0]["clips"] == 27
    assert "alice" not in log and "bob" not in log  # counts and hashes, never raw names


def test_reports_use_pseudonyms_unless_asked(tmp_path, monkeypatch):
    from phonemekit import privacy
    from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig, TrainConfig
    from phonemekit.data.manifest import load_manifest, prepare
    from phonemekit.training.experiment import train_all

    monkeypatch.setattr(privacy, "WORKSPACE", tmp_path / "home")
    names = ("alice", "bobby", "carol", "dave1", "erin1")
    root = make_corpus(tmp_path / "rec", speakers=names)
    prepare(root, tmp_path / "data")
    cfg = ModelConfig(
        name="p", encoder=EncoderConfig(family="fbank", source="fbank"), head=HeadConfig("mlp", {"hidden": [8]}), train=TrainConfig(epochs=1, batch_size=8)
    )
    train_all(load_manifest(tmp_path / "data"), [cfg], tmp_path / "out", leaky=False, cache_root=tmp_path / "cache")
    for f in ("report.json", "report.md", "models/p/predictions.npz", "models/p/metrics.json"):
        blob = (tmp_path / "out" / f).read_bytes()
        assert not any(n.encode() in blob for n in names), f
    shown = train_all(load_manifest(tmp_path / "data"), [cfg], tmp_path / "out2", leaky=False, cache_root=tmp_path / "cache", show_speakers=True)
    assert set(shown["split"]["test_speakers"]) <= set(names)
