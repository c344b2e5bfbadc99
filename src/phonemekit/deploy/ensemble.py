"""The chosen ensemble as one ONNX graph: one waveform in, one probability
vector out. It is composed from the members' own end-to-end exports
(exported first where missing or stale), so no encoder is traced twice,
and checked against the same ensemble in torch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from phonemekit import __version__
from phonemekit.data.features import collate_waves
from phonemekit.data.manifest import load_manifest
from phonemekit.deploy import onnx as ox
from phonemekit.deploy.export import ExportError, export_run, parity_clips
from phonemekit.errors import DataError
from phonemekit.evaluation.ensemble import Ensemble, fit_ensembles
from phonemekit.fileio import atomic_path, write_json
from phonemekit.report.report import REPORT_JSON, Report
from phonemekit.runs import Run
from phonemekit.runs import runs as as_runs

log = logging.getLogger(__name__)


class Combiner(nn.Module):
    """The ensemble rule in torch: members' class log-probs (B, C) each in,
    probabilities out. Mirrors `Ensemble.probs`; exported on its own and
    joined to the members' exported graphs."""

    def __init__(self, ens: Ensemble) -> None:
        super().__init__()
        m = len(ens.members)
        self.method = ens.method
        self.register_buffer("weights", torch.tensor(ens.weights if ens.method == "weighted" else [1 / m] * m, dtype=torch.float32))
        if ens.method == "stacking":
            self.register_buffer("coef", torch.tensor(ens.stack_coef, dtype=torch.float32))
            self.register_buffer("bias", torch.tensor(ens.stack_bias, dtype=torch.float32))

    def forward(self, *logp: torch.Tensor) -> torch.Tensor:
        p = torch.stack([lp.exp() for lp in logp])
        if self.method in ("mean", "weighted"):
            return (self.weights[:, None, None] * p).sum(0)
        if self.method == "vote":
            votes = (p == p.max(-1, keepdim=True).values).float().sum(0)
            score = votes + 1e-3 * p.mean(0)
            return score / score.sum(-1, keepdim=True)
        z = torch.cat(logp, dim=1) @ self.coef.T + self.bias
        return torch.softmax(z, dim=-1)


class EnsembleGraph(nn.Module):
    """All members and the rule in torch: the reference the exported file must match."""

    def __init__(self, models: list[nn.Module], ens: Ensemble) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)
        self.combine = Combiner(ens)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.combine(*[m.classify_waves(waveform, lengths) for m in self.members])


def export_ensemble(runs: list[Run], ens: Ensemble, path: Path, waves: list[np.ndarray], calibration: dict | None = None) -> dict:
    """One ONNX file holding every member and the rule; parity with torch is checked."""
    models = [r.load(with_encoder=True) for r in runs]
    if len({m.spec.sample_rate for m in models}) != 1:
        raise DataError("ensemble members expect different sample rates; one waveform input cannot feed them all")
    member_files = []
    for run in runs:
        proto = _current_member(run.onnx("e2e"), run.sha256)
        if proto is None:
            log.info("exporting ensemble member %s (end-to-end form)", run.name)
            export_run(run, waves, forms=("e2e",), int8=False)
            proto = _current_member(run.onnx("e2e"), run.sha256)
        member_files.append(proto)
    graph = EnsembleGraph(models, ens).eval()
    with atomic_path(path) as tmp:
        n = len(models)
        example = tuple(torch.log_softmax(torch.randn(2, len(models[0].labels)), -1) for _ in range(n))
        names = [f"log_probs_{i}" for i in range(n)]
        # The rule has no CTC scorer, so no frame count to size one for.
        ox.export_torchscript(graph.combine, example, tmp, ox.GraphIO(names, ["probs"], {k: {0: "batch"} for k in names + ["probs"]}), frames=1)
        onnx.save(ox.compose_parallel(member_files, onnx.load(str(tmp)), ["waveform", "lengths"], "log_probs", "probs"), str(tmp))
        first = models[0]
        metas = [ox.metadata_of(f) for f in member_files]
        limit_s = min(int(mt["max_frames"]) / float(mt["frame_rate"]) for mt in metas)
        ox.finish(
            tmp,
            {
                "phonemekit_version": __version__,
                "form": "e2e",
                "precision": "fp32",
                "labels": first.labels,
                "blank": -1,
                "head_output": "ensemble",
                "sample_rate": first.spec.sample_rate,
                "frame_rate": first.spec.frame_rate,
                "max_frames": int(limit_s * first.spec.frame_rate),
                "encoder_spec": [m.spec.to_dict() for m in models],
                "weights": ",".join(sorted({m.spec.weights for m in models})),
                "checkpoint_sha256": ",".join(r.sha256 for r in runs),
                "model_name": f"ensemble-{ens.method}",
                "ensemble": ens.to_dict(),
                **({"calibration": calibration} if calibration else {}),
            },
        )
        sess = ox.session(tmp)
        got, ref = [], []
        with torch.no_grad():
            for w in waves:
                x, n_ = collate_waves([w])
                got.append(sess.run(["probs"], {"waveform": x.numpy(), "lengths": n_.numpy()})[0][0])
                ref.append(graph(x, n_)[0].numpy())
        parity = ox.agreement(np.stack(got), np.stack(ref))
        if parity["top1_agreement"] < 1.0:
            raise ExportError(f"ensemble export: top-1 agreement with torch {parity['top1_agreement']:.3f} < 1.0")
    log.info("exported ensemble (%s of %s) -> %s: top-1 agreement %.3f", ens.method, ", ".join(ens.members), path, parity["top1_agreement"])
    return {"path": str(path), "bytes": path.stat().st_size, "parity": parity}


def _current_member(path: Path, checkpoint_sha256: str) -> onnx.ModelProto | None:
    """The member's exported end-to-end graph if it is there, readable, from
    this checkpoint and new enough to output `log_probs`; else None."""
    if not path.exists():
        return None
    try:
        proto = onnx.load(str(path))
    except Exception:  # unreadable (onnx raises protobuf's own errors): export it again
        return None
    meta = ox.metadata_of(proto)
    fresh = meta.get("checkpoint_sha256") == checkpoint_sha256 and any(o.name == "log_probs" for o in proto.graph.output)
    return proto if fresh and ox.is_intact(proto) else None  # a tampered member is exported again, never embedded


def ensemble_into_report(run_dirs, out: str | Path, *, export: bool = True, clips: int = 16) -> dict:
    """Fit the ensembles, export the chosen one, write ensemble.json and set
    the report's `ensembles` section when OUT holds a report."""
    out = Path(out)
    runs = as_runs(run_dirs)
    groups = load_manifest(runs[0].data).groups if runs[0].data else None
    rec, chosen = fit_ensembles(runs, groups=groups)
    if export:
        rec["onnx"] = export_ensemble(runs, chosen, out / "ensemble.e2e.onnx", parity_clips(runs[0], None, clips), rec["calibration"])
    write_json(out / "ensemble.json", rec)
    if (out / REPORT_JSON).exists():
        Report.load(out).set("ensembles", rec).save()
    return rec
