"""Extraction past one machine: Ray and fsspec caches write the same bytes
as a local run, survive a killed worker, record bad clips as a local run
does, and say what to install when Ray is missing."""

from __future__ import annotations

import builtins
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from phonemekit.config import EncoderConfig
from phonemekit.data.cache import FeatureCache, extract
from phonemekit.data.manifest import load_manifest, prepare
from phonemekit.models.encoders import build_encoder
from phonemekit.scale.engines import EngineError, RayEngine, make_engine

from .conftest import make_corpus


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.npy"))}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("scale")
    make_corpus(base / "rec", takes=3)
    prepare(base / "rec", base / "data")
    return base, load_manifest(base / "data")


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


ENCODERS = [("fbank", "fbank", -1), ("wavlm", "random:tiny", -1), ("whisper", "random:tiny", "weighted")]


@pytest.mark.slow
@pytest.mark.parametrize("family,source,layer", ENCODERS)
def test_ray_writes_the_bytes_a_local_run_writes(data, ray_runtime, tmp_path, family, source, layer):
    base, m = data
    enc = build_encoder(EncoderConfig(family=family, source=source, layer=layer))
    extract(m, enc, tmp_path / "local", batch_size=4)
    reference = _files(tmp_path / "local")
    assert len(reference) == len(m.rows)
    for workers in (1, 2):
        r = RayEngine(workers=workers, shard_batches=1).extract(m, enc, str(tmp_path / f"ray{workers}"), batch_size=4)
        assert _files(tmp_path / f"ray{workers}") == reference, workers
        assert r.computed == len(m.rows) and not r.failed
        assert sum(w["clips"] for w in r.workers.values()) == len(m.rows) and len(r.workers) == workers
    again = RayEngine(workers=2).extract(m, enc, str(tmp_path / "ray2"), batch_size=4)  # resumable: all cached
    assert again.computed == 0 and again.cached == len(m.rows)


def _shard_workers() -> list[int]:
    """Pids of the Ray actor processes running a ShardWorker (Ray names them in their title)."""
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and b"ShardWorker" in (p / "cmdline").read_bytes():
                out.append(int(p.name))
        except OSError:
            pass
    return out


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_leaves_no_partial_file(data, ray_runtime, tmp_path):
    base, m = data
    enc = build_encoder(EncoderConfig(family="wavlm", source="random:tiny"))
    extract(m, enc, tmp_path / "local", batch_size=2)
    out: dict = {}
    job = threading.Thread(target=lambda: out.update(r=RayEngine(workers=2, shard_batches=1).extract(m, enc, str(tmp_path / "ray"), batch_size=2)))
    job.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and job.is_alive():
        if list((tmp_path / "ray").rglob("*.npy")):
            alive = _shard_workers()
            if alive:
                killed = alive[0]
                os.kill(killed, signal.SIGKILL)  # mid-shard, as a preempted cluster node would
        time.sleep(0.05)
    job.join(timeout=300)
    assert killed is not None, "no worker was alive to kill"
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")
    assert not list((tmp_path / "ray").rglob("*.tmp*"))
    assert out["r"].computed + out["r"].cached >= len(m.rows) and not out["r"].failed


@pytest.mark.slow
def test_a_bad_clip_is_rejected_as_in_a_local_run(data, ray_runtime, tmp_path):
    base, m = data
    rec = tmp_path / "rec"
    shutil.copytree(base / "rec", rec)
    prepare(rec, tmp_path / "data")
    (rec / "s2" / "ee" / "t1.wav").write_bytes(b"RIFF0000WAVEjunk")  # broke after prepare
    m2 = load_manifest(tmp_path / "data")
    enc = build_encoder(EncoderConfig(family="fbank", source="fbank"))
    local = extract(m2, enc, tmp_path / "local", batch_size=4)
    ray = RayEngine(workers=2).extract(m2, enc, str(tmp_path / "ray"), batch_size=4)
    assert [f["path"] for f in local.failed] == [f["path"] for f in ray.failed] == ["s2/ee/t1.wav"]
    assert [f["reason"] for f in ray.failed] == ["corrupt"]
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")


@pytest.mark.slow
def test_a_second_process_joins_a_running_cluster(data, tmp_path):
    pytest.importorskip("ray")
    base, m = data
    ray_bin = Path(sys.executable).parent / "ray"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Ray 2.5x starts clusters with token authentication; a client joins with RAY_AUTH_MODE=token (older Rays ignore it).
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    subprocess.run(
        [
            str(ray_bin),
            "start",
            "--head",
            "--num-cpus=2",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "phonemekit.cli",
                "extract",
                "--manifest",
                str(base / "data"),
                "--encoder",
                "fbank",
                "--out",
                str(tmp_path / "cluster"),
                "--engine",
                "ray",
                "--address",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-2000:]
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, env=env, timeout=120)
    extract(m, build_encoder(EncoderConfig(family="fbank", source="fbank")), tmp_path / "local")
    assert _files(tmp_path / "cluster") == _files(tmp_path / "local")


@pytest.mark.parametrize("url", ["memory://phonemekit-test/cache", "file://{tmp}/fs"])
def test_an_fsspec_cache_holds_the_same_features(data, tmp_path, url):
    import fsspec
    import numpy as np

    base, m = data
    enc = build_encoder(EncoderConfig(family="fbank", source="fbank"))
    extract(m, enc, tmp_path / "plain")
    url = url.format(tmp=tmp_path)
    r = extract(m, enc, url)
    assert r.computed == len(m.rows) and r.cache_dir.startswith(url)
    cache, plain = FeatureCache(url, enc.spec), FeatureCache(tmp_path / "plain", enc.spec)
    for row in m.rows:
        assert np.array_equal(cache.get(row["sha256"]), plain.get(row["sha256"]))
    fs, root = fsspec.core.url_to_fs(url)
    assert not [p for p in fs.find(root) if ".tmp-" in p]  # every write was moved into place
    assert extract(m, enc, url).cached == len(m.rows)


def test_without_ray_the_engine_says_what_to_install(monkeypatch, tmp_path, data):
    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(EngineError, match=r"pip install 'phonemekit\[ray\]'"):
        make_engine("ray")
    from typer.testing import CliRunner

    from phonemekit.cli import app

    base, _ = data
    r = CliRunner().invoke(app, ["extract", "--manifest", str(base / "data"), "--encoder", "fbank", "--out", str(tmp_path / "c"), "--engine", "ray"])
    assert r.exit_code == 2 and "phonemekit[ray]" in r.output and "Traceback" not in r.output
    assert make_engine("local").name == "local"
