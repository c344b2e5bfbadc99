"""`phonemekit benchmark`: latency, throughput, real-time factor and memory
against the targets, measured in one run on this machine's CPU.

Speed does not depend on weights, so wav2vec2/WavLM (no weights reachable
offline) run their published base architecture with random weights
(`random:base`); every figure says which weights it used. Whisper tiny.en
runs with its bundled pretrained weights. Warm-up runs are excluded. Results go to JSON and a markdown table
with a pass/fail verdict per target.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig
from phonemekit.deploy import onnx as ox
from phonemekit.deploy.export import EndToEndGraph, HeadGraph, NetworkGraph, graph_io, max_frames
from phonemekit.deploy.speed import inference_process_rss
from phonemekit.errors import ConfigError
from phonemekit.models.encoders import EncoderSpec, build_encoder, default_source
from phonemekit.models.heads.conv import SelfAttention
from phonemekit.models.model import PhonemeModel
from phonemekit.models.presets import HEADS
from phonemekit.privacy import private_tmpdir

log = logging.getLogger(__name__)

TARGETS = {"head_mean_ms": 1.0, "head_max_ms": 2.0, "head_batch64_seq_per_s": 2000.0, "peak_rss_mb": 2048.0}
GOALS = {"head_mean_ms": 0.5, "head_max_ms": 1.0, "head_batch64_seq_per_s": 4000.0}  # twice better than the targets
BENCH_HEADS = ("ctc", "ctc-thin", "conv-ctc", "conv-ctc-64", "conv-ctc-s2", "conv-pool")  # the first is the seed's head, the reference for the targets
MATRIX_OPS = ("MatMul", "FusedMatMul", "Gemm", "Conv", "LSTM")


def _stats(times_s: list[float]) -> dict:
    ms = np.array(times_s) * 1000
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def _spec_for(dim: int) -> EncoderSpec:
    return EncoderSpec("bench", "random", None, -1, 16000, 50.0, dim, 1, "random", "")


def _throughput(fn, batch: int, n: int) -> float:
    return batch / float(np.median(ox.time_calls(fn, max(5, n // 20), 2)))


def bench_head(name: str, head: HeadConfig, tmp: Path, *, frames: int, dim: int, classes: int, threads: int, n: int, batch: int) -> dict:
    labels = [f"c{i}" for i in range(classes)]
    model = PhonemeModel(ModelConfig(name=name, head=head), labels, _spec_for(dim)).eval()
    params = sum(p.numel() for p in model.parameters())
    graph = HeadGraph(model)
    x1, l1 = torch.randn(1, frames, dim), torch.tensor([frames])
    xb, lb = torch.randn(batch, frames, dim), torch.full((batch,), frames)
    example = (torch.randn(2, frames, dim), torch.tensor([frames, frames - 10]))
    res: dict = {"params": params, "head": head.kind, "options": head.options}
    with torch.no_grad():
        res["torch"] = {f"batch1_{k}": v for k, v in _stats(ox.time_calls(lambda: graph(x1, l1), n, 10)).items()}
        res["torch"]["batch64_seq_per_s"] = _throughput(lambda: graph(xb, lb), batch, n)
    path = tmp / f"{name}.onnx"
    io = graph_io(model, "head")
    ox.export_torchscript(graph, example, path, io, max_frames(model))
    sess = ox.session(path, threads)
    f1 = {"features": x1.numpy(), "lengths": l1.numpy()}
    fb = {"features": xb.numpy(), "lengths": lb.numpy()}
    res["onnx"] = {f"batch1_{k}": v for k, v in _stats(ox.time_calls(lambda: sess.run(["probs"], f1), n, 20)).items()}
    res["onnx"]["batch64_seq_per_s"] = _throughput(lambda: sess.run(["probs"], fb), batch, n)
    profiled = path
    if model.output_kind == "ctc":
        # The network alone (frame posteriors) in a graph of its own, to
        # separate it from the exact CTC class scoring.
        profiled = tmp / f"{name}.net.onnx"
        ox.export_torchscript(NetworkGraph(model), example, profiled, io.only(["frame_log_probs"]), max_frames(model))
        net_sess = ox.session(profiled, threads)
        res["onnx_network_only"] = {f"batch1_{k}": v for k, v in _stats(ox.time_calls(lambda: net_sess.run(None, f1), n, 20)).items()}
        res["onnx_network_only"]["batch64_seq_per_s"] = _throughput(lambda: net_sess.run(None, fb), batch, n)
    res["gflop_per_call"] = _head_flops(model, frames, dim) / 1e9
    # Achieved rate of the matrix work at batch 64: its FLOPs over the time
    # the matrix kernels took, to set beside the CPU's roof.
    shares = ox.op_time_shares(profiled, fb, threads, tmp)
    net = res.get("onnx_network_only", res["onnx"])
    matrix_share = sum(v for k, v in shares.items() if k in MATRIX_OPS)
    res["batch64_op_shares"] = shares
    res["batch64_network_gflops"] = res["gflop_per_call"] * net["batch64_seq_per_s"]
    res["batch64_matrix_gflops"] = res["batch64_network_gflops"] / matrix_share if matrix_share else None
    return res


def measure_roof(threads: int, size: int = 1024, n: int = 20) -> dict:
    """This CPU's measured roof on `threads`: the GFLOP/s (GOP/s for int8)
    ONNX Runtime reaches on one large square fp32 MatMul and on one int8
    MatMulInteger (uint8 x int8 -> int32, the kernel dynamic quantisation
    runs). Achieved rates of the real graphs are read against these."""
    from onnx import TensorProto, helper

    def graph(op: str, a: int, b: int, out: int):
        node = helper.make_node(op, ["A", "B"], ["Y"])
        g = helper.make_graph(
            [node],
            "roof",
            [helper.make_tensor_value_info("A", a, [size, size]), helper.make_tensor_value_info("B", b, [size, size])],
            [helper.make_tensor_value_info("Y", out, [size, size])],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

    rng = np.random.default_rng(0)
    cases = {
        "fp32": (
            graph("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT),
            {"A": rng.standard_normal((size, size), dtype=np.float32), "B": rng.standard_normal((size, size), dtype=np.float32)},
        ),
        "int8": (
            graph("MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32),
            {"A": rng.integers(0, 255, (size, size), dtype=np.uint8), "B": rng.integers(-127, 127, (size, size), dtype=np.int8)},
        ),
    }
    out = {"size": size, "threads": threads}
    for name, (model, feed) in cases.items():
        sess = ox.session(model, threads)
        t = float(np.min(ox.time_calls(lambda s=sess, f=feed: s.run(None, f), n, 3)))  # a roof is the best the kernel reaches
        out[f"{name}_gflops"] = round(2.0 * size**3 / t / 1e9, 1)
    return out


def _graph_flops(fn) -> tuple[float, float]:
    """(all, convolution) FLOPs of one call, counted by torch's FlopCounterMode
    (matrix products and convolutions). Dynamic int8 quantisation covers the
    matrix products only, so the split sets the int8 graph's floor."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    conv = sum(v for op, v in counter.get_flop_counts().get("Global", {}).items() if "convolution" in str(op))
    return float(counter.get_total_flops()), float(conv)


def _head_flops(model: PhonemeModel, frames: int, dim: int) -> float:
    """Multiply-adds x 2 of the matrix work (projection, LSTM/conv/attention, output)."""
    macs = 0
    stride = getattr(model.head.opts, "stride", 1)
    for name, mod in model.named_modules():
        # A strided head runs everything after its projection on every `stride`-th frame;
        # a pooled read-out (logits heads) runs once per clip.
        frames_here = frames if stride == 1 or name.startswith("head.proj") else -(-frames // stride)
        if model.output_kind == "logits" and name.startswith(("head.out", "head.net")):
            frames_here = 1
        if isinstance(mod, torch.nn.Linear):
            macs += frames_here * mod.in_features * mod.out_features
        elif isinstance(mod, torch.nn.LSTM):
            macs += frames_here * 4 * mod.hidden_size * (mod.input_size + mod.hidden_size)
        elif isinstance(mod, SelfAttention):  # q.k and attention.v; its projections count as Linear
            macs += 2 * frames_here * frames_here * mod.qkv.in_features
        elif isinstance(mod, torch.nn.Conv1d):
            macs += frames_here * mod.in_channels * mod.out_channels * mod.kernel_size[0] // mod.groups
    return 2.0 * macs


# End-to-end figures: family -> source. wav2vec2/WavLM weights are not
# reachable offline, so their base architecture runs with random weights
# (speed does not depend on weights); Whisper tiny.en is the bundled model.
E2E_SOURCES = {"wav2vec2": "random:base", "wavlm": "random:base", "whisper": "whisper:tiny.en"}


def bench_e2e(family: str, tmp: Path, *, threads: int, n: int, seconds: float = 1.0, head: HeadConfig = HEADS["ctc-thin"], source: str | None = None) -> dict:
    source = source or E2E_SOURCES.get(family) or default_source(family)
    samples = int(16000 * seconds)
    graph, example = _build_e2e(family, source, head, samples)  # built once; the TorchScript export reuses it
    model, enc = graph.model, graph.model.encoder
    # A fixed input, so that runs compare (the int8 difference of a random head on noise depends on it).
    wave, lengths = torch.randn(1, samples, generator=torch.Generator().manual_seed(0)) * 0.1, torch.tensor([samples])
    res: dict = {
        "source": source,
        "weights": "random (speed does not depend on weights)" if enc.weights == "random" else enc.weights,
        "audio_seconds": seconds,
        "encoder_params": sum(p.numel() for p in enc.parameters()),
    }
    with torch.no_grad():
        t = ox.time_calls(lambda: graph(wave, lengths), n, 2)
    res["torch_fp32"] = {"mean_ms": float(np.mean(t) * 1000), "rtf": float(np.mean(t) / seconds)}
    flops, conv = _graph_flops(lambda: graph(wave, lengths))
    res["gflop_per_call"], res["conv_gflop_per_call"] = flops / 1e9, conv / 1e9
    path = tmp / f"{family}.onnx"
    io = graph_io(model, "e2e")
    t0 = time.perf_counter()
    ox.export_torchscript(graph, example, path, io, max_frames(model))
    res["export_seconds"] = round(time.perf_counter() - t0, 1)
    feed = {"waveform": wave.numpy(), "lengths": lengths.numpy()}
    sess = ox.session(path, threads)
    t = ox.time_calls(lambda: sess.run(["probs"], feed), n, 2)
    res["onnx_fp32"] = {"mean_ms": float(np.mean(t) * 1000), "rtf": float(np.mean(t) / seconds), "mb": path.stat().st_size / 1e6}
    p32 = sess.run(["probs"], feed)[0]
    del sess
    q = tmp / f"{family}.int8.onnx"
    ox.quantize_int8(path, q)
    sess = ox.session(q, threads)
    t = ox.time_calls(lambda: sess.run(["probs"], feed), n, 2)
    p8 = sess.run(["probs"], feed)[0]
    res["onnx_int8"] = {
        "mean_ms": float(np.mean(t) * 1000),
        "rtf": float(np.mean(t) / seconds),
        "mb": q.stat().st_size / 1e6,
        "max_abs_diff_vs_fp32": float(np.abs(p8 - p32).max()),
    }
    for k in ("onnx_fp32", "onnx_int8"):
        res[k]["speedup_vs_torch_fp32"] = res["torch_fp32"]["rtf"] / res[k]["rtf"]
        res[k]["achieved_gflops"] = res["gflop_per_call"] / (res[k]["mean_ms"] / 1000)
    res["inference_process"] = inference_process_rss(q, threads, samples)
    res["inference_process_fp32"] = inference_process_rss(path, threads, samples)
    return res


def _build_e2e(family: str, source: str, head: HeadConfig, samples: int):
    torch.manual_seed(0)  # the same random weights in every run
    enc = build_encoder(EncoderConfig(family=family, source=source))
    cfg = ModelConfig(name=f"{family}-bench", encoder=EncoderConfig(family=family, source=source), head=head)
    model = PhonemeModel(cfg, [f"c{i}" for i in range(39)], enc.spec, enc).eval()
    return EndToEndGraph(model), (torch.randn(2, samples) * 0.1, torch.tensor([samples, samples - 1600]))


# Plain ONNX Runtime in a fresh process (no phonemekit, no torch): the memory floor of running the graph.
def run_benchmark(
    *,
    threads: int | None = None,
    n: int = 300,
    frames: int = 100,
    dim: int = 768,
    classes: int = 39,
    batch: int = 64,
    encoders: tuple[str, ...] = tuple(E2E_SOURCES),
    heads: tuple[str, ...] = BENCH_HEADS,
    e2e_runs: int = 10,
) -> dict:
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    res: dict = {
        "threads": threads,
        "cpu": _cpu_name(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "input": [1, frames, dim],
        "classes": classes,
        "heads": {},
        "e2e": {},
    }
    log.info("measuring the roof (fp32 MatMul, int8 MatMulInteger) on %d threads", threads)
    first = measure_roof(threads)
    with private_tmpdir("phonemekit-bench-") as tmp:
        unknown = [h for h in heads if h not in HEADS]
        if unknown:
            raise ConfigError(f"unknown head(s) {', '.join(unknown)} (available: {', '.join(HEADS)})")
        for name in heads:
            log.info("benchmarking head %s", name)
            res["heads"][name] = bench_head(name, HEADS[name], tmp, frames=frames, dim=dim, classes=classes, threads=threads, n=n, batch=batch)
        for fam in encoders:
            family, _, source = fam.partition("=")  # "whisper" or "whisper=whisper:tiny.en"
            log.info("benchmarking %s %s end to end", family, source or E2E_SOURCES.get(family, ""))
            res["e2e"][family] = bench_e2e(family, tmp, threads=threads, n=e2e_runs, source=source or None)
    # The seed's head is the reference for the head targets; the others are offered alternatives.
    res["head"] = res["heads"][heads[0]]
    rss = [v["inference_process"].get("peak_rss_mb") for v in res["e2e"].values() if "inference_process" in v]
    rss = [r for r in rss if r is not None]
    res["peak_rss_mb"] = max(rss) if rss else None
    # Measured before and after the graphs (this machine is shared; its speed drifts); the higher is the roof.
    last = measure_roof(threads)
    res["roof"] = {
        **first,
        **{k: max(first[k], last[k]) for k in ("fp32_gflops", "int8_gflops")},
        "measured": [{k: r[k] for k in ("fp32_gflops", "int8_gflops")} for r in (first, last)],
    }
    _against_roof(res)
    res["verdicts"] = verdicts(res)
    return res


def _against_roof(res: dict) -> None:
    """achieved / roof for every graph: heads' matrix kernels and whole e2e graphs against fp32, int8 graphs against int8."""
    roof = res["roof"]
    for h in res["heads"].values():
        if h.get("batch64_matrix_gflops"):
            h["matrix_roof_fraction"] = h["batch64_matrix_gflops"] / roof["fp32_gflops"]
    for e in res["e2e"].values():
        e["onnx_fp32"]["roof_fraction"] = e["onnx_fp32"]["achieved_gflops"] / roof["fp32_gflops"]
        e["onnx_int8"]["roof_fraction"] = e["onnx_int8"]["achieved_gflops"] / roof["int8_gflops"]
        # The fastest a graph could run here: every FLOP at its kernel's roof
        # (int8: the matrix products at the int8 roof, the convolutions, which
        # dynamic quantisation leaves in fp32, at the fp32 roof).
        secs = e["audio_seconds"]
        conv = e.get("conv_gflop_per_call", 0.0)
        e["onnx_fp32"]["rtf_at_roof"] = e["gflop_per_call"] / roof["fp32_gflops"] / secs
        e["onnx_int8"]["rtf_at_roof"] = ((e["gflop_per_call"] - conv) / roof["int8_gflops"] + conv / roof["fp32_gflops"]) / secs
        e["onnx_int8"]["rtf_all_int8_at_roof"] = e["gflop_per_call"] / roof["int8_gflops"] / secs


def verdicts(res: dict) -> dict:
    """Targets judged on full classification through ONNX Runtime: the head
    network plus exact CTC class scoring, which is what a game pays per call.
    The network-only figures are reported beside them."""
    out = {}
    for name, h in res["heads"].items():
        o = h["onnx"]
        out[name] = {
            "mean < 1 ms": o["batch1_mean_ms"] < TARGETS["head_mean_ms"],
            "max < 2 ms": o["batch1_max_ms"] < TARGETS["head_max_ms"],
            "batch-64 > 2000 seq/s": o["batch64_seq_per_s"] > TARGETS["head_batch64_seq_per_s"],
            "2x goal": (
                o["batch1_mean_ms"] < GOALS["head_mean_ms"]
                and o["batch1_max_ms"] < GOALS["head_max_ms"]
                and o["batch64_seq_per_s"] > GOALS["head_batch64_seq_per_s"]
            ),
        }
    if res.get("peak_rss_mb") is not None:
        out["memory"] = {"peak RSS < 2 GB": res["peak_rss_mb"] < TARGETS["peak_rss_mb"]}
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
