"""One model's speed, size and memory, as `compare` reports them: head
latency through ONNX Runtime, end-to-end latency for 1 s of audio, and the
peak resident memory of a process that only runs inference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from phonemekit.deploy import onnx as ox
from phonemekit.deploy.export import HeadGraph, graph_io, max_frames
from phonemekit.privacy import private_tmpdir
from phonemekit.runs import Run

_RSS_PROBE = """
import json, sys, time, numpy as np, onnxruntime as ort
opts = ort.SessionOptions(); opts.intra_op_num_threads = int(sys.argv[2])
s = ort.InferenceSession(sys.argv[1], sess_options=opts, providers=["CPUExecutionProvider"])
n = int(sys.argv[3]); w = (np.random.default_rng(0).standard_normal((1, n)) * 0.1).astype(np.float32)
for _ in range(5): s.run(["probs"], {"waveform": w, "lengths": np.array([n], dtype=np.int64)})
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"peak_rss_mb": int(hwm) / 1024, "torch_imported": "torch" in sys.modules}))
"""


def inference_process_rss(path: Path, threads: int, samples: int) -> dict:
    """Peak RSS of a fresh process that only loads ONNX Runtime and classifies."""
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(path), str(threads), str(samples)], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mean_ms(fn, n: int, warmup: int = 3) -> float:
    return float(np.mean(ox.time_calls(fn, n, warmup)) * 1000)


def measure_speed(run: Run, threads: int = 2, frames: int = 100) -> dict:
    """Head latency through ONNX Runtime on (1, frames, D) features, end-to-end
    latency for 1 s of audio (the exported e2e file when there is one, else
    torch), size, and the peak RSS of an inference-only process."""
    model = run.load(with_encoder=True)
    out = {
        "params": int(sum(p.numel() for p in model.parameters())),
        "head_params": int(sum(p.numel() for p in model.head.parameters())),
        "checkpoint_mb": round(run.weights_path.stat().st_size / 1e6, 2),
    }
    shape = model.frame_shape()
    with private_tmpdir("phonemekit-cmp-") as d:
        path = d / "head.onnx"
        ox.export_torchscript(
            HeadGraph(model),
            (torch.randn(2, frames, *shape), torch.tensor([frames, frames - 5])),
            path,
            graph_io(model, "head"),
            max_frames(model),
        )
        sess = ox.session(path, threads)
        feed = {"features": np.random.default_rng(0).standard_normal((1, frames, *shape)).astype(np.float32), "lengths": np.array([frames])}
        out["head_ms"] = round(_mean_ms(lambda: sess.run(["probs"], feed), 100, 10), 3)
    wave = (np.random.default_rng(0).standard_normal((1, 16000)) * 0.1).astype(np.float32)
    e2e = run.onnx("e2e")
    if e2e.exists():
        sess = ox.session(e2e, threads)
        feed = {"waveform": wave, "lengths": np.array([16000])}
        out["e2e_ms_per_s_audio"] = round(_mean_ms(lambda: sess.run(["probs"], feed), 20), 2)
        out["e2e_engine"] = "onnxruntime"
        out["peak_rss_mb"] = inference_process_rss(e2e, threads, 16000).get("peak_rss_mb")
        out["onnx_mb"] = round(e2e.stat().st_size / 1e6, 2)
    else:
        with torch.no_grad():
            w, n = torch.from_numpy(wave), torch.tensor([16000])
            out["e2e_ms_per_s_audio"] = round(_mean_ms(lambda: model.classify_waves(w, n), 10), 2)
        out["e2e_engine"] = "torch"
        out["peak_rss_mb"] = None
    return out
