"""Export a trained run to ONNX, with metadata, an int8 copy, and a parity
check against torch.

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

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from phonemekit import __version__
from phonemekit.data.features import collate_waves
from phonemekit.data.manifest import load_manifest
from phonemekit.deploy import onnx as ox
from phonemekit.deploy.onnx import ExportError, GraphIO
from phonemekit.deploy.runtime import Classifier
from phonemekit.fileio import atomic_path, write_json
from phonemekit.models.model import PhonemeModel
from phonemekit.privacy import audit
from phonemekit.runs import Run

log = logging.getLogger(__name__)


class HeadGraph(nn.Module):
    """features + lengths -> probs, [frame_log_probs,] log_probs[, embedding]."""

    def __init__(self, model: PhonemeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, lengths: torch.Tensor):
        return _outputs(self.model, features, lengths)


class EndToEndGraph(nn.Module):
    """waveform + lengths -> probs, [frame_log_probs,] log_probs[, embedding]."""

    def __init__(self, model: PhonemeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor):
        feats, flen = self.model.encode(waveform, lengths)
        return _outputs(self.model, feats, flen)


class NetworkGraph(nn.Module):
    """features + lengths -> the head network's raw output (frame posteriors
    for CTC heads), without class scoring: what the benchmark times apart."""

    def __init__(self, model: PhonemeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model.head_outputs(features, lengths)


def _outputs(model: PhonemeModel, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """probs, [frame_log_probs,] log_probs[, embedding]: the order `GraphIO`
    names them. Exact class log-probs let ensembles and calibration avoid
    log(exp(x)); the embedding is what a speaker profile adapts on."""
    out, out_lengths = model.head_outputs(feats, lengths), model.out_lengths(lengths)
    log_probs = model.scores(out, out_lengths)
    main = (log_probs.exp(), out, log_probs) if model.output_kind == "ctc" else (log_probs.exp(), log_probs)
    return (*main, model.embed(feats, lengths)) if model.embeds else main


def graph_io(model: PhonemeModel, form: str) -> GraphIO:
    return GraphIO.of(form, model.output_kind == "ctc", embedding=model.embeds)


def max_frames(model: PhonemeModel) -> int:
    """Longest clip, in encoder frames, the exported graph scores exactly:
    the model's own audio limit (audio.max_seconds) at its frame rate."""
    return math.ceil(model.cfg.audio.max_seconds * model.spec.frame_rate) + 1


def _graph(model: PhonemeModel, form: str, waves: list[np.ndarray]):
    wave, lengths = collate_waves(waves[:2] if len(waves) >= 2 else waves * 2)
    if form == "head":
        with torch.no_grad():
            return HeadGraph(model), model.encode(wave, lengths)
    return EndToEndGraph(model), (wave, lengths)


def metadata(model: PhonemeModel, form: str, checkpoint_sha256: str, precision: str, calibration: dict | None = None) -> dict:
    meta = {
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
    if calibration is not None:  # verdict temperature and thresholds, fitted on validation speakers
        meta["calibration"] = calibration
    return meta


@dataclass
class Exported:
    path: Path
    parity: dict


def encode_each(model: PhonemeModel, waves: list[np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(features, lengths) of each clip alone: computed once per export, since
    the head form's parity and int8 checks all feed the same features."""
    with torch.no_grad():
        return [model.encode(*collate_waves([w])) for w in waves]


def torch_probs(model: PhonemeModel, waves: list[np.ndarray], feats: list | None = None) -> np.ndarray:
    """Class probabilities from torch, one clip at a time: the reference."""
    with torch.no_grad():
        return np.stack([model(f, n)[0].exp().numpy() for f, n in (feats or encode_each(model, waves))])


def onnx_probs(sess, form: str, waves: list[np.ndarray], model: PhonemeModel | None = None, feats: list | None = None) -> np.ndarray:
    """Run an exported file one clip at a time (batch 1, as a game does);
    the head form takes features that `model`'s encoder computes (or `feats`)."""
    if form == "head":
        feeds = [{"features": f.numpy(), "lengths": n.numpy()} for f, n in (feats or encode_each(model, waves))]
    else:
        feeds = [{"waveform": x.numpy(), "lengths": n.numpy()} for x, n in map(collate_waves, ([w] for w in waves))]
    return np.stack([sess.run(["probs"], feed)[0][0] for feed in feeds])


def export_form(model: PhonemeModel, form: str, path: Path, waves: list[np.ndarray], run: Run, feats: list | None = None) -> Exported:
    """Export one form to `path` after checking parity on `waves`."""
    io = graph_io(model, form)
    with atomic_path(path) as tmp:
        t0 = time.perf_counter()
        ox.export_torchscript(*_graph(model, form, waves), tmp, io, max_frames(model))
        ox.finish(tmp, metadata(model, form, run.sha256, "fp32", run.sidecar.get("calibration")), io)
        feats = feats or encode_each(model, waves)
        parity = ox.agreement(onnx_probs(ox.session(tmp), form, waves, model, feats), torch_probs(model, waves, feats))
        parity["export_seconds"] = round(time.perf_counter() - t0, 1)
        if parity["top1_agreement"] < 1.0:
            raise ExportError(
                f"{form} export of {model.cfg.name}: top-1 agreement with torch is {parity['top1_agreement']:.3f} < 1.0 (max |dp| {parity['max_abs_diff']:.2e})"
            )
    return Exported(path, parity)


def quantize_form(
    src: Path,
    dst: Path,
    form: str,
    waves: list[np.ndarray],
    model: PhonemeModel,
    min_agreement: float = 0.98,
    min_speedup: float = 1.05,
    feats: list | None = None,
) -> dict:
    """An int8 copy of an exported file, kept only when faster and accurate
    enough; the returned record says which and why."""
    with atomic_path(dst) as tmp:
        ox.quantize_int8(src, tmp)
        sess32, sess8 = ox.session(src), ox.session(tmp)
        feats = feats or (encode_each(model, waves) if form == "head" else None)
        p32 = onnx_probs(sess32, form, waves, model, feats)
        t0 = time.perf_counter()
        p8 = onnx_probs(sess8, form, waves, model, feats)
        t8 = time.perf_counter() - t0
        t0 = time.perf_counter()
        onnx_probs(sess32, form, waves, model, feats)
        t32 = time.perf_counter() - t0
        rec = {
            "top1_agreement_vs_fp32": float(np.mean(p8.argmax(1) == p32.argmax(1))),
            "max_abs_diff_vs_fp32": float(np.abs(p8 - p32).max()),
            "speedup_vs_fp32": round(t32 / max(t8, 1e-9), 3),
            "bytes": tmp.stat().st_size,
            "fp32_bytes": src.stat().st_size,
        }
        keep = rec["top1_agreement_vs_fp32"] >= min_agreement and rec["speedup_vs_fp32"] >= min_speedup
        rec["kept"] = keep
        rec["reason"] = (
            "faster and accurate"
            if keep
            else (
                f"dropped: speedup {rec['speedup_vs_fp32']:.2f}x < {min_speedup}x"
                if rec["top1_agreement_vs_fp32"] >= min_agreement
                else f"dropped: top-1 agreement {rec['top1_agreement_vs_fp32']:.3f} < {min_agreement}"
            )
        )
        if not keep:
            raise _Dropped(rec)
        m = onnx.load(str(tmp))
        # The fp32 file's own entries (the quantizer adds one of its own), precision changed.
        meta = ox.metadata_of(onnx.load(str(src), load_external_data=False))
        ox.set_metadata(m, {**meta, "precision": "int8"})
        onnx.save(m, str(tmp))
    return rec


class _Dropped(Exception):
    """Leaves the atomic block without keeping the int8 file."""

    def __init__(self, rec: dict) -> None:
        super().__init__(rec["reason"])
        self.rec = rec


def export_run(
    run: str | Path | Run,
    waves: list[np.ndarray],
    out_dir: str | Path | None = None,
    *,
    forms=("head", "e2e"),
    int8: bool = True,
    trusted: set[str] | None = None,
) -> dict:
    """Export a trained run. `waves` are real clips for the parity check."""
    if not waves:
        raise ExportError("export needs real clips for the parity check (none given)")
    run = run if isinstance(run, Run) else Run(run)
    if run.encoder_spec.view != "clip":
        raise ExportError(f"{run.path} reads phones in the context of their utterance (view {run.encoder_spec.view!r}); an exported graph "
                          "hears one clip alone, so only models of the clip view are exported")  # fmt: skip
    out_dir = Path(out_dir) if out_dir else run.onnx_dir
    model = run.load(with_encoder=True, trusted=trusted)
    name = model.cfg.name
    record: dict = {"model": name, "checkpoint_sha256": run.sha256, "files": {}}
    feats = encode_each(model, waves)
    for form in forms:
        path = out_dir / run.onnx(form).name
        exp = export_form(model, form, path, waves, run, feats)
        entry = {"path": str(path), "bytes": path.stat().st_size, "parity": exp.parity}
        log.info(
            "exported %s (%s form, %.1f MB): top-1 agreement %.3f, max |dp| %.1e",
            path,
            form,
            entry["bytes"] / 1e6,
            exp.parity["top1_agreement"],
            exp.parity["max_abs_diff"],
        )
        if int8:
            try:
                q = quantize_form(path, out_dir / run.onnx(form, "int8").name, form, waves, model, feats=feats)
            except _Dropped as d:
                q = d.rec
                run.onnx(form, "int8").unlink(missing_ok=True)  # an int8 file of an earlier export no longer matches
            entry["int8"] = q
            log.info("int8 %s form: %s (speed-up %.2fx, top-1 agreement %.3f)", form, q["reason"], q["speedup_vs_fp32"], q["top1_agreement_vs_fp32"])
        record["files"][form] = entry
    write_json(out_dir / run.parity_path.name, record)
    audit("export", model=name, checkpoint_sha256=run.sha256, files=[Path(f["path"]).name for f in record["files"].values()])
    return record


def parity_clips(run: str | Path | Run, data: str | Path | None, n: int) -> list[np.ndarray]:
    """Up to n real clips, evenly spread over a manifest (default: the run's training manifest)."""
    run = run if isinstance(run, Run) else Run(run)
    src = data or run.data
    if not src:
        raise ExportError("no manifest recorded in the run; pass --data for the parity clips")
    m = load_manifest(src)
    rows = m.rows[:: max(1, len(m.rows) // n)][:n]
    return [m.samples(r) for r in rows]


def evaluate_exports(run: str | Path | Run, data: str | Path | None = None) -> dict:
    """Held-out top-1 of a run's exported end-to-end files beside its torch
    checkpoint's, on the run's held-out clips, plus the recorded parity."""
    run = run if isinstance(run, Run) else Run(run)
    parity = run.parity()
    src = data or run.data
    if not src:
        raise ExportError(f"{run.path} records no manifest; pass --data")
    m = load_manifest(src)
    held = run.predictions("test")
    keep = {r["sha256"] for r in held.rows}
    rows = [r for r in m.rows if r["sha256"] in keep]
    waves = [m.samples(r) for r in rows]
    y = np.array([run.labels.index(r["label"]) for r in rows])
    files = {}
    for path in sorted(run.onnx_dir.glob("*.onnx")):
        clf = Classifier.load(path)
        if clf.form == "e2e":
            files[path.name] = {"top1": float(np.mean(clf.probs(waves).argmax(1) == y)), "clips": len(rows), "precision": clf.meta["precision"]}
    return {
        "torch": {"top1": float(np.mean(held.scores.argmax(1) == held.y)), "clips": len(held.y)},
        "files": files,
        "parity": {form: f["parity"] for form, f in parity["files"].items()},
    }
