"""Ensembles of trained models: probability averaging, weighted averaging,
majority vote with probability tie-break, and stacking.

Everything that is fit (weights, the stacking model, the choice of method)
is fit on the validation part only; the test part is touched once, to
report. `phonemekit.deploy.ensemble` exports the chosen one as one ONNX
graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from phonemekit.errors import DataError
from phonemekit.evaluation.calibration import calibrate, ece, fit_calibration, verdict_rates_of
from phonemekit.evaluation.metrics import align, metrics
from phonemekit.evaluation.predict import Predictions
from phonemekit.runs import Run

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
        x = np.concatenate(val_log_probs, axis=1)
        with threadpool_limits(1):  # a small problem: BLAS threads cost more than they give (see evaluation.baseline)
            clf = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(x, val_y)
        num_classes = val_log_probs[0].shape[1]
        coef = np.zeros((num_classes, x.shape[1]))
        bias = np.full(num_classes, -1e4)  # classes unseen in validation are never predicted
        coef[clf.classes_] = clf.coef_ if len(clf.classes_) > 2 else np.vstack([-clf.coef_, clf.coef_])
        bias[clf.classes_] = clf.intercept_ if len(clf.classes_) > 2 else np.array([-clf.intercept_[0], clf.intercept_[0]])
        return Ensemble(method, members, [1.0 / m] * m, coef, bias)
    return Ensemble(method, members, [1.0 / m] * m)


def select(members: list[str], val: list[np.ndarray], val_y: np.ndarray) -> tuple[str, dict[str, Ensemble], dict[str, float]]:
    """Fit every method once on validation and pick the best by validation
    top-1. Stacking is judged by 5-fold cross-validation on validation (it
    would otherwise be scored on its own training data)."""
    fitted = {method: fit(method, members, val, val_y) for method in METHODS}
    scores = {
        method: _cv_stacking(members, val, val_y) if method == "stacking" else float(np.mean(e.probs(val).argmax(1) == val_y)) for method, e in fitted.items()
    }
    return max(scores, key=scores.get), fitted, scores


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


def _aligned(runs: list[Run], part: str) -> list[Predictions]:
    labels = runs[0].labels
    if any(r.labels != labels for r in runs):
        raise DataError("ensemble members were trained on different label tables")
    return align([r.predictions(part) for r in runs])


def fit_ensembles(runs: list[Run], *, groups: dict | None = None) -> tuple[dict, Ensemble]:
    """Fit every method on validation, report each on test; the record and
    the ensemble validation chose."""
    names = [r.name for r in runs]
    val, test = _aligned(runs, "val"), _aligned(runs, "test")
    val_lp, val_y = [v.scores for v in val], val[0].y
    chosen, fitted, val_scores = select(names, val_lp, val_y)
    results = {}
    for method, e in fitted.items():
        p = e.probs([t.scores for t in test])
        m = metrics(Predictions(np.log(p + 1e-12), test[0].y, test[0].rows, test[0].labels), groups)
        results[method] = {
            "val_top1": val_scores[method],
            "top1": m["top1"],
            "top3": m["top3"],
            "macro_f1": m["macro_f1"],
            "top1_ci95": m["top1_ci95"],
            "per_group": m["per_group"],
            **e.to_dict(),
        }
    record = {"members": names, "chosen": chosen, "chosen_by": "validation top-1", "methods": results, "test_clips": len(test[0].y)}
    # The chosen ensemble's verdicts are calibrated like a single model's, on validation only.
    val_p = np.log(fitted[chosen].probs(val_lp) + 1e-12)
    cal = fit_calibration(val_p, val_y, val[0].labels)
    test_p = np.log(fitted[chosen].probs([t.scores for t in test]) + 1e-12)
    test_cal = calibrate(test_p, cal.temperature)
    rates = verdict_rates_of(cal, test_cal, test[0].y, test[0].labels)
    record["calibration"] = cal.to_dict()
    record["verdict"] = {
        "far": rates["far"],
        "frr": rates["frr"],
        "ece_test_before": ece(calibrate(test_p, 1.0), test[0].y),
        "ece_test_after": ece(test_cal, test[0].y),
    }
    return record, fitted[chosen]
