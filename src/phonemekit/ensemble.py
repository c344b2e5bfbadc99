"""Ensembles of trained models: probability averaging, weighted averaging,
majority vote with probability tie-break, and stacking.

Everything that is fit (weights, the stacking model, the choice of method)
is fit on the validation part only; the test part is touched once, to
report. The chosen ensemble exports as one ONNX graph: one waveform in,
one probability vector out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .errors import DataError

log = logging.getLogger(__name__)

METHODS = ("mean", "weighted", "vote", "stacking")


@dataclass
class Ensemble:
    method: str
    members: list[str]
    weights: list[float] = field(default_factory=list)
    stack_coef: np.ndarray | None = None  # (C, M*C)
    stack_bias: np.ndarray | None = None  # (C,)

    def probs(self, member_log_probs: list[np.ndarray]) -> np.ndarray:
        """Combine members' class log-probs (each (N, C)) into probabilities."""
        p = np.stack([np.exp(lp) for lp in member_log_probs])  # (M, N, C)
        if self.method in ("mean", "weighted"):
            w = np.asarray(self.weights if self.method == "weighted" else np.full(len(p), 1 / len(p)))
            return np.tensordot(w, p, axes=1)
        if self.method == "vote":
            votes = (p == p.max(-1, keepdims=True)).astype(float).sum(0)
            score = votes + 1e-3 * p.mean(0)  # ties go to the higher mean probability
            return score / score.sum(-1, keepdims=True)
        if self.method == "stacking":
            x = np.concatenate(member_log_probs, axis=1)
            z = x @ self.stack_coef.T + self.stack_bias
            z = np.exp(z - z.max(1, keepdims=True))
            return z / z.sum(1, keepdims=True)
        raise ValueError(self.method)

    def to_dict(self) -> dict:
        return {"method": self.method, "members": self.members, "weights": list(map(float, self.weights))}


def fit(method: str, members: list[str], val_log_probs: list[np.ndarray], val_y: np.ndarray, seed: int = 0) -> Ensemble:
    """Fit an ensemble on validation outputs only."""
    if method not in METHODS:
        raise DataError(f"unknown ensemble method {method!r} (choose from {', '.join(METHODS)})")
    if len({lp.shape for lp in val_log_probs}) != 1:
        raise DataError("ensemble members disagree on the validation clips or labels")
    m = len(members)
    if method == "weighted":
        from scipy.optimize import minimize

        p = np.stack([np.exp(lp) for lp in val_log_probs])
        y = np.asarray(val_y)

        def nll(theta: np.ndarray) -> float:
            w = np.exp(theta - theta.max())
            w /= w.sum()
            q = np.tensordot(w, p, axes=1)[np.arange(len(y)), y]
            return -float(np.log(q + 1e-9).mean())

        theta = minimize(nll, np.zeros(m), method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 2000}).x
        w = np.exp(theta - theta.max())
        return Ensemble(method, members, list(w / w.sum()))
    if method == "stacking":
        from sklearn.linear_model import LogisticRegression

        x = np.concatenate(val_log_probs, axis=1)
        clf = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(x, val_y)
        num_classes = val_log_probs[0].shape[1]
        coef = np.zeros((num_classes, x.shape[1]))
        bias = np.full(num_classes, -1e4)  # classes unseen in validation are never predicted
        coef[clf.classes_] = clf.coef_ if len(clf.classes_) > 2 else np.vstack([-clf.coef_, clf.coef_])
        bias[clf.classes_] = clf.intercept_ if len(clf.classes_) > 2 else np.array([-clf.intercept_[0], clf.intercept_[0]])
        return Ensemble(method, members, [1.0 / m] * m, coef, bias)
    return Ensemble(method, members, [1.0 / m] * m)


def select(members: list[str], val: list[np.ndarray], val_y: np.ndarray) -> tuple[Ensemble, dict[str, float]]:
    """Fit every method on validation and pick the best by validation top-1.
    Stacking is judged by 5-fold cross-validation on validation (it would
    otherwise be scored on its own training data)."""
    scores, fitted = {}, {}
    for method in METHODS:
        if method == "stacking":
            scores[method] = _cv_stacking(members, val, val_y)
        else:
            e = fit(method, members, val, val_y)
            scores[method] = float(np.mean(e.probs(val).argmax(1) == val_y))
        fitted[method] = fit(method, members, val, val_y)
    best = max(scores, key=scores.get)
    return fitted[best], scores


def _cv_stacking(members, val, val_y, folds: int = 5) -> float:
    n = len(val_y)
    idx = np.random.default_rng(0).permutation(n)
    hits = 0
    for k in range(folds):
        test = idx[k::folds]
        train = np.setdiff1d(idx, test)
        e = fit("stacking", members, [v[train] for v in val], val_y[train])
        hits += int((e.probs([v[test] for v in val]).argmax(1) == val_y[test]).sum())
    return hits / n


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


def _aligned(run_dirs, part: str):
    from .experiment import load_predictions
    from .model import read_sidecar

    sides = [read_sidecar(d) for d in run_dirs]
    labels = sides[0]["labels"]
    if any(s["labels"] != labels for s in sides):
        raise DataError("ensemble members were trained on different label tables")
    preds = [load_predictions(d / "predictions.npz", part, labels) for d in run_dirs]
    common = sorted(set.intersection(*({r["sha256"] for r in p.rows} for p in preds)))
    out = []
    for p in preds:
        pos = {r["sha256"]: i for i, r in enumerate(p.rows)}
        idx = np.array([pos[s] for s in common])
        out.append((p.scores[idx], p.y[idx], [p.rows[i] for i in idx]))
    return [s["config"]["name"] for s in sides], labels, out


def run_ensemble(run_dirs, out_dir, *, waves: list[np.ndarray] | None = None, groups: dict | None = None, export: bool = True) -> dict:
    """Fit every method on validation, report each on test, export the one
    validation picked as a single ONNX file with a parity check."""
    from pathlib import Path

    from .evaluate import Predictions, metrics

    run_dirs = [Path(d) for d in run_dirs]
    names, labels, val = _aligned(run_dirs, "val")
    _, _, test = _aligned(run_dirs, "test")
    val_lp, val_y = [v[0] for v in val], val[0][1]
    test_lp, test_y, test_rows = [t[0] for t in test], test[0][1], test[0][2]
    chosen, val_scores = select(names, val_lp, val_y)
    results = {}
    for method in METHODS:
        e = chosen if method == chosen.method else fit(method, names, val_lp, val_y)
        p = e.probs(test_lp)
        m = metrics(Predictions(np.log(p + 1e-12), test_y, test_rows, labels), groups)
        results[method] = {"val_top1": val_scores[method], "top1": m["top1"], "top3": m["top3"], "macro_f1": m["macro_f1"],
                           "top1_ci95": m["top1_ci95"], "per_group": m["per_group"], **e.to_dict()}
    record = {"members": names, "chosen": chosen.method, "chosen_by": "validation top-1", "methods": results,
              "test_clips": len(test_y)}
    if export:
        if not waves:
            raise DataError("exporting an ensemble needs real clips for the parity check")
        record["onnx"] = export_ensemble(run_dirs, chosen, Path(out_dir) / "ensemble.e2e.onnx", waves)
    return record


def export_ensemble(run_dirs, ens: Ensemble, path, waves: list[np.ndarray]) -> dict:
    """One ONNX file holding every member and the rule, composed from the
    members' own end-to-end exports (exported first where missing or stale),
    so no encoder is traced twice. Parity is checked against torch."""
    import os
    import tempfile
    from pathlib import Path

    import onnx
    import onnxruntime as ort

    from . import __version__
    from .cache import collate_waves
    from .export import ExportError, _export, _finish, compose_parallel, export_run
    from .model import load_checkpoint, read_sidecar

    path = Path(path)
    run_dirs = [Path(d) for d in run_dirs]
    models = [load_checkpoint(d, with_encoder=True).eval() for d in run_dirs]
    if len({m.spec.sample_rate for m in models}) != 1:
        raise DataError("ensemble members expect different sample rates; one waveform input cannot feed them all")
    shas = [read_sidecar(d)["sha256"] for d in run_dirs]
    member_files = []
    for d, m, sha in zip(run_dirs, models, shas):
        f = d / "onnx" / f"{m.cfg.name}.e2e.onnx"
        proto = _current_member(f, sha)
        if proto is None:
            log.info("exporting ensemble member %s (end-to-end form)", m.cfg.name)
            export_run(d, waves, forms=("e2e",), int8=False)
            proto = _current_member(f, sha)
        member_files.append(proto)
    graph = EnsembleGraph(models, ens).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        n = len(models)
        example = tuple(torch.log_softmax(torch.randn(2, len(models[0].labels)), -1) for _ in range(n))
        names = [f"log_probs_{i}" for i in range(n)]
        # The rule has no CTC scorer, so no frame count to size one for.
        _export(graph.combine, example, tmp_path, names, ["probs"], {k: {0: "batch"} for k in names + ["probs"]}, frames=1)
        onnx.save(compose_parallel(member_files, onnx.load(str(tmp_path)), ["waveform", "lengths"], "log_probs", "probs"), str(tmp_path))
        first = models[0]
        metas = [{p.key: p.value for p in f.metadata_props} for f in member_files]
        limit_s = min(int(mt["max_frames"]) / float(mt["frame_rate"]) for mt in metas)
        _finish(tmp_path, {
            "phonemekit_version": __version__, "form": "e2e", "precision": "fp32", "labels": first.labels, "blank": -1,
            "head_output": "ensemble", "sample_rate": first.spec.sample_rate, "frame_rate": first.spec.frame_rate,
            "max_frames": int(limit_s * first.spec.frame_rate),
            "encoder_spec": [m.spec.to_dict() for m in models], "weights": ",".join(sorted({m.spec.weights for m in models})),
            "checkpoint_sha256": ",".join(shas), "model_name": f"ensemble-{ens.method}",
            "ensemble": ens.to_dict(),
        })
        sess = ort.InferenceSession(str(tmp_path), providers=["CPUExecutionProvider"])
        got, ref = [], []
        with torch.no_grad():
            for w in waves:
                x, n_ = collate_waves([w])
                got.append(sess.run(["probs"], {"waveform": x.numpy(), "lengths": n_.numpy()})[0][0])
                ref.append(graph(x, n_)[0].numpy())
        got, ref = np.stack(got), np.stack(ref)
        parity = {"clips": len(waves), "max_abs_diff": float(np.abs(got - ref).max()), "top1_agreement": float(np.mean(got.argmax(1) == ref.argmax(1)))}
        if parity["top1_agreement"] < 1.0:
            raise ExportError(f"ensemble export: top-1 agreement with torch {parity['top1_agreement']:.3f} < 1.0")
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    log.info("exported ensemble (%s of %s) -> %s: top-1 agreement %.3f", ens.method, ", ".join(ens.members), path, parity["top1_agreement"])
    return {"path": str(path), "bytes": path.stat().st_size, "parity": parity}


def _current_member(path, checkpoint_sha256: str):
    """The member's exported end-to-end graph if it is there, readable, from
    this checkpoint and new enough to output `log_probs`; else None."""
    import onnx

    if not path.exists():
        return None
    try:
        proto = onnx.load(str(path))
    except Exception:  # unreadable: export it again
        return None
    from .export import graph_sha256

    meta = {p.key: p.value for p in proto.metadata_props}
    fresh = meta.get("checkpoint_sha256") == checkpoint_sha256 and any(o.name == "log_probs" for o in proto.graph.output)
    intact = meta.get("graph_sha256") == graph_sha256(proto)  # a tampered member is exported again, never embedded
    return proto if fresh and intact else None


def ensemble_into_report(runs, out, *, export: bool = True, clips: int = 16) -> dict:
    """Run the ensembles, write ensemble.json and add them to OUT/report.json if there is one."""
    from pathlib import Path

    out = Path(out)
    from .data.manifest import load_manifest
    from .experiment import update_report
    from .fileio import write_json
    from .export import parity_clips
    from .model import read_sidecar

    data = read_sidecar(runs[0]).get("data")
    groups = load_manifest(data).groups if data else None
    waves = parity_clips(runs[0], None, clips) if export else None
    rec = run_ensemble(runs, out, waves=waves, groups=groups, export=export)
    write_json(out / "ensemble.json", rec)
    if (out / "report.json").exists():
        lines = ["## Ensembles (fit on validation, reported on test)", "", f"Members: {', '.join(rec['members'])}. Chosen on validation: **{rec['chosen']}**.", "",
                 "| method | validation top-1 | test top-1 (95% CI) | top-3 |", "|---|---|---|---|"]
        for method, r in rec["methods"].items():
            lines.append(f"| {method} | {r['val_top1']:.3f} | {r['top1']:.3f} ({r['top1_ci95'][0]:.3f}-{r['top1_ci95'][1]:.3f}) | {r['top3']:.3f} |")
        if "onnx" in rec:
            lines += ["", f"Exported as one file: `{rec['onnx']['path']}` ({rec['onnx']['bytes'] / 1e6:.1f} MB), top-1 agreement with torch "
                      f"{rec['onnx']['parity']['top1_agreement']:.3f} on {rec['onnx']['parity']['clips']} clips."]
        update_report(out, section="\n".join(lines) + "\n", ensembles=rec)
    return rec
