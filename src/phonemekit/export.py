"""ONNX export with metadata, an int8 copy, and a parity check against torch.

Two forms for every model:
  head  features (B, T, D) + lengths (B,)  -> probs (B, C)
  e2e   waveform (B, S) 16 kHz + lengths (B,) -> probs (B, C)
Both also output `log_probs` (B, C), the exact class log-probabilities;
CTC models add `frame_log_probs` (B, T, C + 1) for streaming use.

Every file is checked with `onnx.checker`, written atomically (a failed
export leaves nothing behind), and compared with torch on real clips;
fp32 must agree on every top-1. Metadata carries labels, blank index,
sample rate, encoder spec, versions, the longest clip the graph scores
exactly (`max_frames`), the source checkpoint's sha256 and a sha256 of the
graph itself, which the runtime verifies on load.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .cache import collate_waves
from .decoding import exact_up_to
from .errors import PhonemekitError
from .fileio import write_json
from .model import PhonemeModel

log = logging.getLogger(__name__)

OPSET = 18  # both exporters write this opset, so exported graphs can be composed


class ExportError(PhonemekitError):
    """An export failed its checks; no file was left behind."""


class HeadGraph(nn.Module):
    def __init__(self, model: PhonemeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, lengths: torch.Tensor):
        return _outputs(self.model, self.model.head_outputs(features, lengths), lengths)


class EndToEndGraph(nn.Module):
    def __init__(self, model: PhonemeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor):
        feats, flen = self.model.encode(waveform, lengths)
        return _outputs(self.model, self.model.head_outputs(feats, flen), flen)


def _outputs(model: PhonemeModel, out: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """probs, [frame_log_probs,] log_probs: the order `_io` names them. Exact
    class log-probs let ensembles and calibration avoid log(exp(x))."""
    log_probs = model.scores(out, lengths)
    return (log_probs.exp(), out, log_probs) if model.output_kind == "ctc" else (log_probs.exp(), log_probs)


def graph_sha256(model_proto) -> str:
    import hashlib

    return hashlib.sha256(model_proto.graph.SerializeToString()).hexdigest()


def max_frames(model: PhonemeModel) -> int:
    """Longest clip, in encoder frames, the exported graph scores exactly:
    the model's own audio limit (audio.max_seconds) at its frame rate."""
    return math.ceil(model.cfg.audio.max_seconds * model.spec.frame_rate) + 1


def _export(module: nn.Module, example: tuple, path: Path, input_names: list[str], output_names: list[str], dynamic: dict,
            frames: int) -> None:
    """The TorchScript exporter: fast and exact for the heads (LSTM included)."""
    import warnings

    with torch.no_grad(), warnings.catch_warnings(), exact_up_to(frames):
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), example, str(path), dynamo=False, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic, opset_version=OPSET)


def _export_dynamo(builder, args: tuple, path: Path, input_names: list[str], output_names: list[str], dynamic: dict, frames: int) -> None:
    """The dynamo exporter, which transformers' encoders need to keep time
    dynamic. An earlier dynamo export in the same process can pin a dynamic
    axis to an old example's size (seen with WavLM; torch._dynamo.reset()
    does not cure it), so each export runs in a fresh process that rebuilds
    the module with `builder(*args) -> (module, example)`."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # The executor shuts its worker down cleanly (a Pool's exit terminates it,
    # which leaves a semaphore behind for the resource tracker to complain of).
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        pool.submit(_dynamo_child, builder, args, str(path), input_names, output_names, dynamic, frames).result()


def _dynamo_child(builder, args, path: str, input_names, output_names, dynamic, frames: int) -> None:
    import warnings

    warnings.simplefilter("ignore")  # the exporter's deprecation chatter would bury the run's log
    module, example = builder(*args)
    dims: dict[str, torch.export.Dim] = {}
    for axes in dynamic.values():
        for label in axes.values():
            dims.setdefault(label, torch.export.Dim(label, min=1, max=1 << 22))
    shapes = {name: {ax: dims[label] for ax, label in axes.items()} for name, axes in dynamic.items() if name in input_names}
    with torch.no_grad(), exact_up_to(frames):  # the exporter wants a batch of at least 2 and one self-contained file
        torch.onnx.export(module.eval(), example, path, dynamo=True, external_data=False, input_names=input_names,
                          output_names=output_names, dynamic_shapes=shapes, optimize=True, opset_version=OPSET, verbose=False)


def _build_form(run_dir: str, form: str, waves: list[np.ndarray]):
    from .model import load_checkpoint

    model = load_checkpoint(run_dir, with_encoder=True).eval()
    return _graph(model, form, waves)


def _graph(model: PhonemeModel, form: str, waves: list[np.ndarray]):
    wave, lengths = collate_waves(waves[:2] if len(waves) >= 2 else waves * 2)
    if form == "head":
        with torch.no_grad():
            return HeadGraph(model), model.encode(wave, lengths)
    return EndToEndGraph(model), (wave, lengths)


def _finish(path: Path, meta: dict, dynamic: dict | None = None) -> None:
    import onnx

    m = onnx.load(str(path))
    # The dynamo exporter can declare an output axis that follows no input
    # axis (CTC frames) with the example's size; name it, so ONNX Runtime
    # does not warn on every call that the real size differs.
    for out in m.graph.output:
        for axis, label in (dynamic or {}).get(out.name, {}).items():
            dim = out.type.tensor_type.shape.dim[axis]
            dim.ClearField("dim_value")
            dim.dim_param = label
    # Intermediate shape annotations are optional; the dynamo exporter can
    # give two different frame axes (e.g. fbank and wav2vec2 members of an
    # ensemble) one symbolic name, which ONNX Runtime then trusts when it
    # plans buffers. Without them it infers shapes itself.
    del m.graph.value_info[:]
    onnx.checker.check_model(m)
    meta = {**meta, "graph_sha256": graph_sha256(m)}
    del m.metadata_props[:]
    for k, v in meta.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v if isinstance(v, str) else json.dumps(v)
    onnx.save(m, str(path))


def metadata(model: PhonemeModel, form: str, checkpoint_sha256: str, precision: str) -> dict:
    return {
        "phonemekit_version": __version__,
        "form": form,
        "precision": precision,
        "labels": model.labels,
        "blank": -1 if model.blank is None else model.blank,
        "head_output": model.output_kind,
        "sample_rate": model.spec.sample_rate,
        "frame_rate": model.spec.frame_rate,
        "max_frames": max_frames(model),
        "encoder_spec": model.spec.to_dict(),
        "weights": model.spec.weights,
        "checkpoint_sha256": checkpoint_sha256,
        "model_name": model.cfg.name,
    }


@dataclass
class Exported:
    path: Path
    parity: dict


def _io(form: str, ctc: bool) -> tuple[list[str], list[str], dict]:
    first = "features" if form == "head" else "waveform"
    outputs = ["probs", "frame_log_probs", "log_probs"] if ctc else ["probs", "log_probs"]
    dynamic = {first: {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "probs": {0: "batch"}, "log_probs": {0: "batch"}}
    if ctc:
        dynamic["frame_log_probs"] = {0: "batch", 1: "frames"}
    return [first, "lengths"], outputs, dynamic


def export_form(model: PhonemeModel, form: str, path: Path, waves: list[np.ndarray], checkpoint_sha256: str, run_dir: Path) -> Exported:
    """Export one form to `path` after checking parity on `waves`."""
    ctc = model.output_kind == "ctc"
    inputs, outputs, dynamic = _io(form, ctc)
    use_dynamo = form == "e2e" and model.encoder is not None and model.encoder.exporter == "dynamo"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        t0 = time.perf_counter()
        if use_dynamo:
            _export_dynamo(_build_form, (str(run_dir), form, waves[:2]), tmp_path, inputs, outputs, dynamic, max_frames(model))
        else:
            _export(*_graph(model, form, waves), tmp_path, inputs, outputs, dynamic, max_frames(model))
        _finish(tmp_path, metadata(model, form, checkpoint_sha256, "fp32"), dynamic)
        parity = check_parity(model, tmp_path, form, waves)
        parity["export_seconds"] = round(time.perf_counter() - t0, 1)
        if parity["top1_agreement"] < 1.0:
            raise ExportError(f"{form} export of {model.cfg.name}: top-1 agreement with torch is {parity['top1_agreement']:.3f} < 1.0 (max |dp| {parity['max_abs_diff']:.2e})")
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return Exported(path, parity)


def onnx_probs(session, form: str, waves: list[np.ndarray], model: PhonemeModel | None = None) -> np.ndarray:
    """Run an exported file one clip at a time (batch 1, as a game does)."""
    out = []
    for w in waves:
        wave, lengths = collate_waves([w])
        if form == "head":
            with torch.no_grad():
                feats, flen = model.encode(wave, lengths)
            feed = {"features": feats.numpy(), "lengths": flen.numpy()}
        else:
            feed = {"waveform": wave.numpy(), "lengths": lengths.numpy()}
        out.append(session.run(["probs"], feed)[0][0])
    return np.stack(out)


def check_parity(model: PhonemeModel, path: Path, form: str, waves: list[np.ndarray]) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = onnx_probs(sess, form, waves, model)
    with torch.no_grad():
        ref = np.stack([model.classify_waves(*collate_waves([w]))[0].exp().numpy() for w in waves])
    return {
        "clips": len(waves),
        "max_abs_diff": float(np.abs(got - ref).max()),
        "top1_agreement": float(np.mean(got.argmax(1) == ref.argmax(1))),
    }


def quantize_int8(src: Path, dst: Path, form: str, waves: list[np.ndarray], model: PhonemeModel, fp32_parity: dict,
                  min_agreement: float = 0.98, min_speedup: float = 1.05) -> dict:
    """Dynamic int8 quantisation of MatMul/Gemm. Kept only when faster and
    accurate enough; the returned record says which and why."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.WARNING)  # the quantiser logs every skipped tensor at INFO on the root logger
        try:
            quantize_dynamic(str(src), str(tmp_path), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        sess32 = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
        sess8 = ort.InferenceSession(str(tmp_path), providers=["CPUExecutionProvider"])
        p32 = onnx_probs(sess32, form, waves, model)
        t0 = time.perf_counter()
        p8 = onnx_probs(sess8, form, waves, model)
        t8 = time.perf_counter() - t0
        t0 = time.perf_counter()
        onnx_probs(sess32, form, waves, model)
        t32 = time.perf_counter() - t0
        rec = {
            "top1_agreement_vs_fp32": float(np.mean(p8.argmax(1) == p32.argmax(1))),
            "max_abs_diff_vs_fp32": float(np.abs(p8 - p32).max()),
            "speedup_vs_fp32": round(t32 / max(t8, 1e-9), 3),
            "bytes": tmp_path.stat().st_size,
            "fp32_bytes": src.stat().st_size,
        }
        keep = rec["top1_agreement_vs_fp32"] >= min_agreement and rec["speedup_vs_fp32"] >= min_speedup
        rec["kept"] = keep
        rec["reason"] = "faster and accurate" if keep else (
            f"dropped: speedup {rec['speedup_vs_fp32']:.2f}x < {min_speedup}x" if rec["top1_agreement_vs_fp32"] >= min_agreement
            else f"dropped: top-1 agreement {rec['top1_agreement_vs_fp32']:.3f} < {min_agreement}")
        if keep:
            import onnx

            m = onnx.load(str(tmp_path))
            meta = {p.key: p.value for p in m.metadata_props}
            meta["precision"] = "int8"
            del m.metadata_props[:]
            onnx.save(m, str(tmp_path))
            _finish(tmp_path, meta)
            os.replace(tmp_path, dst)
        return rec
    finally:
        tmp_path.unlink(missing_ok=True)


def export_run(run_dir: str | Path, waves: list[np.ndarray], out_dir: str | Path | None = None, *, forms=("head", "e2e"),
               int8: bool = True, trusted: set[str] | None = None) -> dict:
    """Export a trained run. `waves` are real clips for the parity check."""
    from .model import load_checkpoint, read_sidecar

    if not waves:
        raise ExportError("export needs real clips for the parity check (none given)")
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / "onnx"
    sha = read_sidecar(run_dir)["sha256"]
    model = load_checkpoint(run_dir, with_encoder=True, trusted=trusted).eval()
    name = model.cfg.name
    record: dict = {"model": name, "checkpoint_sha256": sha, "files": {}}
    for form in forms:
        path = out_dir / f"{name}.{form}.onnx"
        exp = export_form(model, form, path, waves, sha, run_dir)
        entry = {"path": str(path), "bytes": path.stat().st_size, "parity": exp.parity}
        log.info("exported %s (%s form, %.1f MB): top-1 agreement %.3f, max |dp| %.1e", path, form, entry["bytes"] / 1e6,
                 exp.parity["top1_agreement"], exp.parity["max_abs_diff"])
        if int8:
            q = quantize_int8(path, out_dir / f"{name}.{form}.int8.onnx", form, waves, model, exp.parity)
            entry["int8"] = q
            log.info("int8 %s form: %s (speed-up %.2fx, top-1 agreement %.3f)", form, q["reason"], q["speedup_vs_fp32"], q["top1_agreement_vs_fp32"])
        record["files"][form] = entry
    write_json(out_dir / f"{name}.parity.json", record)
    from .privacy import audit

    audit("export", model=name, checkpoint_sha256=sha, files=[Path(f["path"]).name for f in record["files"].values()])
    return record


def compose_parallel(members: list, combiner, shared_inputs: list[str], member_output: str, output: str):
    """One graph from exported files: every member reads the shared inputs,
    each member's `member_output` feeds the combiner's inputs in order, and
    the combiner's first output becomes `output`. Names are prefixed per
    member; Identity nodes join the parts (ONNX Runtime removes them), so no
    member graph is edited beyond the prefix. Metadata is not carried over."""
    import onnx
    from onnx import compose, helper

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


def parity_clips(run: str | Path, data: str | Path | None, n: int) -> list[np.ndarray]:
    """Up to n real clips, evenly spread over a manifest (default: the run's training manifest)."""
    from .audio import load_audio
    from .data.manifest import load_manifest
    from .model import read_sidecar

    src = data or read_sidecar(run).get("data")
    if not src:
        raise ExportError("no manifest recorded in the run; pass --data for the parity clips")
    m = load_manifest(src)
    rows = m.rows[:: max(1, len(m.rows) // n)][:n]
    return [load_audio(m.audio_path(r)).samples for r in rows]
