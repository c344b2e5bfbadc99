"""Trainings in worker processes give the run that one process gives."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from phonemekit.config import ModelConfig, from_dict
from phonemekit.data.manifest import load_manifest, prepare
from phonemekit.runs import Run
from phonemekit.training.workers import Jobs

from .conftest import make_corpus


def _boom(x):
    raise ValueError(f"bad job {x}")


def test_inline_jobs_deliver_results_and_errors_like_workers():
    with Jobs(1) as jobs:
        assert jobs.submit(pow, 2, 5).result() == 32
        fut = jobs.submit(_boom, 3)
    with pytest.raises(ValueError, match="bad job 3"):
        fut.result()
    with pytest.raises(ValueError):
        Jobs(0)


def test_workers_train_the_same_models_as_one_process(tmp_path, caplog):
    from phonemekit.training.experiment import train_all

    names = ("ann", "ben", "cat", "dan")
    make_corpus(tmp_path / "rec", speakers=names, takes=2)
    (tmp_path / "rec" / "speakers.json").write_text(json.dumps({"ann": "child", "ben": "child", "cat": "adult", "dan": "adult"}))
    prepare(tmp_path / "rec", tmp_path / "data")
    m = load_manifest(tmp_path / "data")
    cfgs = [
        from_dict(
            ModelConfig,
            {
                "name": n,
                "encoder": {"family": "fbank", "source": "fbank"},
                "head": {"kind": "mlp", "options": {"hidden": [8]}},
                "train": {"epochs": 2, "batch_size": 8, "seed": s},
            },
        )
        for n, s in (("a", 0), ("b", 1))
    ]
    sections = {}
    for workers in (1, 2):
        with caplog.at_level(logging.INFO):
            caplog.clear()
            sections[workers] = train_all(
                m, cfgs, tmp_path / f"out{workers}", split_kind="loso", leaky=False, cache_root=tmp_path / "c", loso_group="child", workers=workers
            )
        # Workers' log lines reach this process's handlers.
        assert sum("a epoch 2:" in r.getMessage() for r in caplog.records) == 2, workers
    one, two = sections[1], sections[2]
    assert set(one["models"]) == set(two["models"]) == {"a", "b"}
    for name in ("a", "b"):
        p1, p2 = (Run(tmp_path / f"out{w}" / "models" / name).predictions("test") for w in (1, 2))
        assert [r["sha256"] for r in p1.rows] == [r["sha256"] for r in p2.rows]
        np.testing.assert_allclose(p1.scores, p2.scores, atol=1e-4)  # one torch thread against two: rounding only
        assert one["models"][name]["fold_top1"] == two["models"][name]["fold_top1"]
    # LOSO reports the baseline too: fitted on each fold, pooled over the held-out children's clips.
    for section in (one, two):
        (base,) = section["baselines"].values()
        assert len(base["fold_top1"]) == 2  # one per held-out child, by pseudonym
        # Both children have 6 clips: the pooled top-1 is the mean of the two folds'.
        assert abs(base["top1"] - sum(base["fold_top1"].values()) / 2) < 1e-9
        assert section["models"]["a"]["baseline"] in section["baselines"] and "diff_ci95" in section["models"]["a"]["vs_baseline"]
    assert one["baselines"] == two["baselines"]


def test_workers_fit_the_baselines_and_the_leaky_twin(tmp_path, prepared):
    from phonemekit.training.experiment import train_all

    m = prepared
    cfg = from_dict(
        ModelConfig,
        {
            "name": "t",
            "encoder": {"family": "fbank", "source": "fbank"},
            "head": {"kind": "mlp", "options": {"hidden": [8]}},
            "train": {"epochs": 1, "batch_size": 8},
        },
    )
    section = train_all(m, [cfg], tmp_path / "out", leaky=True, cache_root=tmp_path / "c", workers=2)
    assert section["models"]["t"]["leaky_top1"] is not None
    assert list(section["baselines"]) == ["logreg [fbank fbank]"] and 0 <= section["baselines"]["logreg [fbank fbank]"]["top1"] <= 1


_ORPHANS = """
import os, sys, time
from phonemekit.training.workers import Jobs
with Jobs(2) as jobs:
    pids = {jobs.submit(os.getpid).result() for _ in range(8)}
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_end_when_their_parent_is_killed():
    proc = subprocess.Popen([sys.executable, "-c", _ORPHANS], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids and all(_alive(p) for p in pids)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)
