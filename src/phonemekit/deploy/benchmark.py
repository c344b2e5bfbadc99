"""`phonemekit benchmark`: latency, throughput, real-time factor and memory
against the targets, measured in one run on this machine's CPU.

Speed does not depend on weights, so wav2vec2/WavLM (no weights reachable
offline) run their published base architecture with random weights
(`random:base`); every figure says which weights it used. Whisper tiny.en
runs with its bundled pretrained weights. Warm-up runs are excluded. Results go to JSON and a markdown table
with a pass/fail verdict per target.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig
from phonemekit.deploy import onnx as ox
from phonemekit.deploy.export import EndToEndGraph, HeadGraph, NetworkGraph, max_frames
from phonemekit.errors import ConfigError
from phonemekit.fileio import write_json, write_text
from phonemekit.models.encoders import EncoderSpec, build_encoder, default_source
from phonemekit.models.heads.conv import SelfAttention
from phonemekit.models.model import PhonemeModel
from phonemekit.models.presets import HEADS
from phonemekit.privacy import private_tmpdir
from phonemekit.runs import Run

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
    io = ox.GraphIO.of("head", model.output_kind == "ctc")
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
        g = helper.make_graph([node], "roof", [helper.make_tensor_value_info("A", a, [size, size]), helper.make_tensor_value_info("B", b, [size, size])],
                              [helper.make_tensor_value_info("Y", out, [size, size])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

    rng = np.random.default_rng(0)
    cases = {
        "fp32": (graph("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT),
                 {"A": rng.standard_normal((size, size), dtype=np.float32), "B": rng.standard_normal((size, size), dtype=np.float32)}),
        "int8": (graph("MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32),
                 {"A": rng.integers(0, 255, (size, size), dtype=np.uint8), "B": rng.integers(-127, 127, (size, size), dtype=np.int8)}),
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


def bench_e2e(family: str, tmp: Path, *, threads: int, n: int, seconds: float = 1.0, head: HeadConfig = HEADS["ctc-thin"],
              source: str | None = None) -> dict:
    source = source or E2E_SOURCES.get(family) or default_source(family)
    samples = int(16000 * seconds)
    graph, example = _build_e2e(family, source, head, samples)  # built once; the TorchScript export reuses it
    model, enc = graph.model, graph.model.encoder
    # A fixed input, so that runs compare (the int8 difference of a random head on noise depends on it).
    wave, lengths = torch.randn(1, samples, generator=torch.Generator().manual_seed(0)) * 0.1, torch.tensor([samples])
    res: dict = {"source": source, "weights": "random (speed does not depend on weights)" if enc.weights == "random" else enc.weights,
                 "audio_seconds": seconds, "encoder_params": sum(p.numel() for p in enc.parameters())}
    with torch.no_grad():
        t = ox.time_calls(lambda: graph(wave, lengths), n, 2)
    res["torch_fp32"] = {"mean_ms": float(np.mean(t) * 1000), "rtf": float(np.mean(t) / seconds)}
    flops, conv = _graph_flops(lambda: graph(wave, lengths))
    res["gflop_per_call"], res["conv_gflop_per_call"] = flops / 1e9, conv / 1e9
    path = tmp / f"{family}.onnx"
    io = ox.GraphIO.of("e2e", True)
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
    res["onnx_int8"] = {"mean_ms": float(np.mean(t) * 1000), "rtf": float(np.mean(t) / seconds), "mb": q.stat().st_size / 1e6,
                        "max_abs_diff_vs_fp32": float(np.abs(p8 - p32).max())}
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


def run_benchmark(*, threads: int | None = None, n: int = 300, frames: int = 100, dim: int = 768, classes: int = 39, batch: int = 64,
                  encoders: tuple[str, ...] = tuple(E2E_SOURCES), heads: tuple[str, ...] = BENCH_HEADS,
                  e2e_runs: int = 10) -> dict:
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    res: dict = {"threads": threads, "cpu": _cpu_name(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                 "input": [1, frames, dim], "classes": classes, "heads": {}, "e2e": {}}
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
    res["roof"] = {**first, **{k: max(first[k], last[k]) for k in ("fp32_gflops", "int8_gflops")},
                   "measured": [{k: r[k] for k in ("fp32_gflops", "int8_gflops")} for r in (first, last)]}
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
            "2x goal": (o["batch1_mean_ms"] < GOALS["head_mean_ms"] and o["batch1_max_ms"] < GOALS["head_max_ms"]
                        and o["batch64_seq_per_s"] > GOALS["head_batch64_seq_per_s"]),
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


def flatten(res: dict) -> dict:
    """Dotted keys for the documented names: head.onnx.batch1_mean_ms, e2e.wavlm.onnx_int8.rtf, ..."""
    flat: dict = {}

    def walk(prefix: str, obj) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = obj

    walk("", res)
    return flat


def markdown(res: dict) -> str:
    ok = lambda b: "PASS" if b else "FAIL"  # noqa: E731
    lines = [f"Benchmark on {res['cpu']}, {res['threads']} threads, torch {res['torch']}, onnxruntime {res['onnxruntime']}. "
             f"Head input {tuple(res['input'])}, {res['classes']} classes; warm-up excluded.", "",
             "Classification = network + exact CTC class scoring (what a game pays); network only = frame posteriors. "
             "`conv-pool` reads out by pooling (class logits): it has no CTC scoring to pay. "
             "2x goal: mean < 0.5 ms, max < 1 ms and > 4000 seq/s together.", "",
             "| head | params | GFLOP/call | torch mean ms | ONNX mean / p99 / max ms | ONNX batch-64 seq/s | network only: ONNX mean / max ms | network only: batch-64 seq/s | mean < 1 ms | max < 2 ms | > 2000 seq/s | 2x goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, h in res["heads"].items():
        o, v = h["onnx"], res["verdicts"][name]
        net = h.get("onnx_network_only")
        net_s = "-" if net is None else f"{net['batch1_mean_ms']:.2f} / {net['batch1_max_ms']:.2f}"
        net_b = "-" if net is None else f"{net['batch64_seq_per_s']:.0f}"
        lines.append(f"| {name} | {h['params'] / 1e3:.0f}k | {h['gflop_per_call']:.3f} | {h['torch']['batch1_mean_ms']:.2f} | "
                     f"{o['batch1_mean_ms']:.2f} / {o['batch1_p99_ms']:.2f} / {o['batch1_max_ms']:.2f} | {o['batch64_seq_per_s']:.0f} | {net_s} | {net_b} | "
                     f"{ok(v['mean < 1 ms'])} | {ok(v['max < 2 ms'])} | {ok(v['batch-64 > 2000 seq/s'])} | {ok(v['2x goal'])} |")
    roof = res.get("roof")
    if roof:
        lines += ["", f"The roof, measured here on {roof['threads']} threads: one {roof['size']}x{roof['size']} fp32 MatMul "
                  f"{roof['fp32_gflops']:.0f} GFLOP/s, one int8 MatMulInteger {roof['int8_gflops']:.0f} GOP/s (ONNX Runtime, best of 20, "
                  "the higher of a measurement before and one after the graphs)."]
    lines += ["", "Where the network's batch-64 time goes (ONNX Runtime profiler): achieved GFLOP/s of the whole network, of its "
              f"matrix kernels ({', '.join(MATRIX_OPS)}) alone and that as a share of the fp32 roof, and the largest shares of kernel time:", "",
              "| head | network GFLOP/s | matrix kernels GFLOP/s | of roof | kernel time by op |", "|---|---|---|---|---|"]
    for name, h in res["heads"].items():
        mx, fr = h.get("batch64_matrix_gflops"), h.get("matrix_roof_fraction")
        shares = ", ".join(f"{op} {v:.0%}" for op, v in list(h["batch64_op_shares"].items())[:5])
        lines.append(f"| {name} | {h['batch64_network_gflops']:.0f} | {'-' if mx is None else f'{mx:.0f}'} | {'-' if fr is None else f'{fr:.0%}'} | {shares} |")
    if res["e2e"]:
        lines += ["", "End to end, 1 s of audio, thin CTC head (random weights where marked: speed does not depend on weights):", "",
                  "| encoder | source | weights | torch fp32 RTF | ONNX fp32 RTF (x torch) | ONNX int8 RTF (x torch) | int8 max abs diff | inference process peak RSS (int8 / fp32) |",
                  "|---|---|---|---|---|---|---|---|"]
        for fam, e in res["e2e"].items():
            lines.append(f"| {fam} | `{e['source']}` | {e['weights'].split(' ')[0]} | {e['torch_fp32']['rtf']:.3f} | {e['onnx_fp32']['rtf']:.3f} ({e['onnx_fp32']['speedup_vs_torch_fp32']:.2f}x) | "
                         f"{e['onnx_int8']['rtf']:.3f} ({e['onnx_int8']['speedup_vs_torch_fp32']:.2f}x) | {e['onnx_int8']['max_abs_diff_vs_fp32']:.2e} | "
                         f"{e['inference_process'].get('peak_rss_mb', float('nan')):.0f} / {e['inference_process_fp32'].get('peak_rss_mb', float('nan')):.0f} MB |")
        if roof and all("roof_fraction" in res["e2e"][f]["onnx_fp32"] for f in res["e2e"]):
            lines += ["", "Against the roof (GFLOP per call counted by torch's FlopCounterMode; int8 graphs against the int8 roof). "
                      "RTF at the roof is the floor: every FLOP at its kernel's roof (int8: matrix products at the int8 roof, "
                      "convolutions, which dynamic quantisation leaves in fp32, at the fp32 roof; and if every FLOP ran int8):", "",
                      "| encoder | GFLOP per 1 s (convolutions) | ONNX fp32 GFLOP/s (of roof) | ONNX int8 GOP/s (of int8 roof) | "
                      "RTF at the roof: fp32 / int8 / all int8 |", "|---|---|---|---|---|"]
            for fam, e in res["e2e"].items():
                a, b = e["onnx_fp32"], e["onnx_int8"]
                lines.append(f"| {fam} | {e['gflop_per_call']:.2f} ({e.get('conv_gflop_per_call', 0.0):.2f}) | {a['achieved_gflops']:.0f} ({a['roof_fraction']:.0%}) | "
                             f"{b['achieved_gflops']:.0f} ({b['roof_fraction']:.0%}) | {a['rtf_at_roof']:.3f} / {b['rtf_at_roof']:.3f} / "
                             f"{b['rtf_all_int8_at_roof']:.3f} |")
    if res.get("peak_rss_mb") is not None:
        lines += ["", f"Peak RSS of the inference process: {res['peak_rss_mb']:.0f} MB ({ok(res['peak_rss_mb'] < TARGETS['peak_rss_mb'])} < 2 GB)."]
    return "\n".join(lines) + "\n"


def write_results(res: dict, json_path: Path) -> Path:
    write_json(json_path, {**res, "flat": flatten({k: v for k, v in res.items() if k != "verdicts"})})
    md = json_path.with_suffix(".md")
    write_text(md, markdown(res))
    return md


def _mean_ms(fn, n: int, warmup: int = 3) -> float:
    return float(np.mean(ox.time_calls(fn, n, warmup)) * 1000)


def measure_speed(run: Run, threads: int = 2, frames: int = 100) -> dict:
    """Head latency through ONNX Runtime on (1, frames, D) features, end-to-end
    latency for 1 s of audio (the exported e2e file when there is one, else
    torch), size, and the peak RSS of an inference-only process."""
    model = run.load(with_encoder=True)
    out = {"params": int(sum(p.numel() for p in model.parameters())),
           "head_params": int(sum(p.numel() for p in model.head.parameters())),
           "checkpoint_mb": round(run.weights_path.stat().st_size / 1e6, 2)}
    shape = model.frame_shape()
    with private_tmpdir("phonemekit-cmp-") as d:
        path = d / "head.onnx"
        ox.export_torchscript(HeadGraph(model), (torch.randn(2, frames, *shape), torch.tensor([frames, frames - 5])), path,
                              ox.GraphIO.of("head", model.output_kind == "ctc"), max_frames(model))
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
