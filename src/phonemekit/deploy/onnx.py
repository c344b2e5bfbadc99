"""ONNX plumbing, in one place: the exporter, finishing a file
(metadata, graph hash, checks), the session options every
caller uses, dynamic int8 quantisation, parity figures, timing, and
composing graphs. `export`, `benchmark`, `compare` and the ensemble export
build on these; nothing else touches onnx or onnxruntime internals.

Every exported file carries a sha256 of its graph in its metadata, which
the runtime verifies on load. The runtime (`Classifier`) uses this module
and ships without torch, so torch is imported inside the exporters only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import compose, helper

from phonemekit.errors import PhonemekitError

log = logging.getLogger(__name__)

OPSET = 18  # both exporters write this opset, so exported graphs can be composed


class ExportError(PhonemekitError):
    """An export failed its checks; no file was left behind."""


EMBEDDING = "embedding"


@dataclass(frozen=True)
class GraphIO:
    """Input and output names of an exported form, with their dynamic axes."""

    inputs: list[str]
    outputs: list[str]
    dynamic: dict[str, dict[int, str]]

    @classmethod
    def of(cls, form: str, ctc: bool, embedding: bool = False) -> GraphIO:
        """head: features (B, T, D) + lengths; e2e: waveform (B, S) + lengths.
        Outputs probs and log_probs (B, C); CTC models add frame_log_probs,
        MLP heads their last hidden layer as `embedding` (B, H), which a
        speaker profile adapts on."""
        first = "features" if form == "head" else "waveform"
        outputs = ["probs", "frame_log_probs", "log_probs"] if ctc else ["probs", "log_probs"]
        dynamic = {first: {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "probs": {0: "batch"}, "log_probs": {0: "batch"}}
        if ctc:
            dynamic["frame_log_probs"] = {0: "batch", 1: "frames"}
        if embedding:
            outputs.append(EMBEDDING)
            dynamic[EMBEDDING] = {0: "batch"}
        return cls([first, "lengths"], outputs, dynamic)

    def only(self, outputs: list[str]) -> GraphIO:
        keep = set(self.inputs) | set(outputs)
        return GraphIO(self.inputs, outputs, {k: v for k, v in self.dynamic.items() if k in keep})


# -- exporters ---------------------------------------------------------------------------


def export_torchscript(module, example: tuple, path: Path, io: GraphIO, frames: int) -> None:
    """The TorchScript exporter, for every graph: heads (LSTM included),
    the encoders written here, and transformers' wav2vec2/WavLM (time stays
    dynamic; each export's parity check at other lengths guards it). The
    dynamo exporter took 40-120 s per transformer here, against 1-8 s."""
    import torch

    from phonemekit.models.decoding import exact_up_to

    with torch.no_grad(), warnings.catch_warnings(), exact_up_to(frames):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), example, str(path), dynamo=False, input_names=io.inputs, output_names=io.outputs, dynamic_axes=io.dynamic, opset_version=OPSET
        )


# -- files -------------------------------------------------------------------------------


def graph_sha256(proto: onnx.ModelProto) -> str:
    return hashlib.sha256(proto.graph.SerializeToString()).hexdigest()


def metadata_of(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def integrity_sha256(meta: dict[str, str]) -> str:
    """sha256 over every metadata entry but itself; with `graph_sha256` among
    them it binds labels, blank, sample rate, max frames and calibration to
    the graph, so an edit of any of them is refused on load."""
    fields = {k: v for k, v in meta.items() if k != "integrity_sha256"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def is_intact(proto: onnx.ModelProto) -> bool:
    """The graph and every metadata entry are what the export recorded."""
    meta = metadata_of(proto)
    return meta.get("graph_sha256") == graph_sha256(proto) and meta.get("integrity_sha256") == integrity_sha256(meta)


def set_metadata(proto: onnx.ModelProto, meta: dict) -> None:
    """Replace the metadata; non-string values are stored as JSON. The
    graph's sha256 and the integrity digest over it and every entry are
    added, which the runtime verifies."""
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items() if k not in ("graph_sha256", "integrity_sha256")}
    text["graph_sha256"] = graph_sha256(proto)
    text["integrity_sha256"] = integrity_sha256(text)
    del proto.metadata_props[:]
    for k, v in text.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def finish(path: Path, meta: dict, io: GraphIO | None = None) -> None:
    """Name the dynamic output axes, drop intermediate shape annotations,
    check the model and write its metadata, in place."""
    m = onnx.load(str(path))
    # An exporter can declare an output axis that follows no input
    # axis (CTC frames) with the example's size; name it, so ONNX Runtime
    # does not warn on every call that the real size differs.
    for out in m.graph.output:
        for axis, label in (io.dynamic if io else {}).get(out.name, {}).items():
            dim = out.type.tensor_type.shape.dim[axis]
            dim.ClearField("dim_value")
            dim.dim_param = label
    # Intermediate shape annotations are optional; an exporter can
    # give two different frame axes (e.g. fbank and wav2vec2 members of an
    # ensemble) one symbolic name, which ONNX Runtime then trusts when it
    # plans buffers. Without them it infers shapes itself.
    del m.graph.value_info[:]
    onnx.checker.check_model(m)
    set_metadata(m, meta)
    onnx.save(m, str(path))


# -- running -----------------------------------------------------------------------------


def session(model: Path | bytes, threads: int | None = None, profile_dir: Path | None = None, quiet: bool = False) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with every graph optimisation on; `threads`
    pins the intra-op pool (inter-op stays at one: the graphs are sequential);
    `quiet` keeps ONNX Runtime's warnings about a graph it did not write out
    of the log."""
    opts = ort.SessionOptions()
    if quiet:
        opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_dir is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_dir / "ort-profile")
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=opts, providers=["CPUExecutionProvider"])


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of MatMul/Gemm weights (ONNX Runtime's).
    Convolutions stay fp32: quantised (ConvInteger) they ran slower here."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # the quantiser pulls in sympy: only when used

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the quantiser logs every skipped tensor at INFO on the root logger
    try:
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def agreement(got: np.ndarray, ref: np.ndarray) -> dict:
    """Parity of two (N, C) probability arrays."""
    return {"clips": len(got), "max_abs_diff": float(np.abs(got - ref).max()), "top1_agreement": float(np.mean(got.argmax(1) == ref.argmax(1)))}


def time_calls(fn: Callable[[], object], n: int, warmup: int) -> list[float]:
    """Seconds per call of `n` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def op_time_shares(path: Path, feed: dict, threads: int, tmp: Path, runs: int = 5) -> dict[str, float]:
    """Share of kernel time per ONNX op type, from ONNX Runtime's profiler:
    where a graph's time goes, and how much of it is matrix work."""
    sess = session(path, threads, profile_dir=tmp)
    for _ in range(runs):
        sess.run(None, feed)
    trace = Path(sess.end_profiling())
    totals: dict[str, float] = {}
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + event["dur"]
    trace.unlink()
    whole = sum(totals.values()) or 1.0
    return {op: t / whole for op, t in sorted(totals.items(), key=lambda kv: -kv[1])}


# -- composing ---------------------------------------------------------------------------


def compose_parallel(members: list[onnx.ModelProto], combiner: onnx.ModelProto, shared_inputs: list[str], member_output: str, output: str) -> onnx.ModelProto:
    """One graph from exported files: every member reads the shared inputs,
    each member's `member_output` feeds the combiner's inputs in order, and
    the combiner's first output becomes `output`. Names are prefixed per
    member; Identity nodes join the parts (ONNX Runtime removes them), so no
    member graph is edited beyond the prefix. Metadata is not carried over."""
    prefixed = [compose.add_prefix(m, f"m{i}/") for i, m in enumerate(members)]
    combine = compose.add_prefix(combiner, "combine/")
    parts = prefixed + [combine]
    opsets: dict[str, int] = {}
    for part in parts:
        for op in part.opset_import:
            opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
    nodes = []  # in topological order: each member's inputs, nodes and output, then the rule
    for i, part in enumerate(prefixed):
        nodes += [helper.make_node("Identity", [name], [f"m{i}/{name}"]) for name in shared_inputs]
        nodes += part.graph.node
        nodes.append(helper.make_node("Identity", [f"m{i}/{member_output}"], [combine.graph.input[i].name]))
    nodes += combine.graph.node
    nodes.append(helper.make_node("Identity", [combine.graph.output[0].name], [output]))
    inits = [t for part in parts for t in part.graph.initializer]
    functions = [f for part in parts for f in part.functions]
    inputs = []
    for name in shared_inputs:
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(next(x for x in members[0].graph.input if x.name == name))
        inputs.append(vi)
    out_vi = onnx.ValueInfoProto()
    out_vi.CopyFrom(combiner.graph.output[0])
    out_vi.name = output
    graph = helper.make_graph(nodes, "ensemble", inputs, [out_vi], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()], functions=functions)
    model.ir_version = max(m.ir_version for m in members + [combiner])
    return model
