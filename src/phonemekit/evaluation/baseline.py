"""The plain baseline every model stands beside: scikit-learn's logistic
regression on standardised mean+std pooled features of the same encoder,
trained and tested on the same split. A model that does not beat it has not
earned its complexity.

The regularisation strength is chosen on the validation speakers (never
test) from a short grid of fits on the training speakers alone, exactly as
the neural models are trained.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from phonemekit.config import EncoderConfig
from phonemekit.data.cache import FeatureCache
from phonemekit.data.features import clip_id
from phonemekit.data.manifest import Manifest
from phonemekit.errors import DataError
from phonemekit.evaluation.predict import Predictions
from phonemekit.models.encoders import EncoderSpec

log = logging.getLogger(__name__)

C_GRID = (0.01, 0.1, 1.0)


def baseline_name(enc: EncoderConfig) -> str:
    layer = "" if enc.layer == -1 else f", layer {enc.layer}"
    view = "" if enc.view == "clip" else f", {enc.view} view"
    return f"logreg [{enc.family} {enc.source}{layer}{view}]"


def pooled(cache: FeatureCache, rows: list[dict], labels: list[str]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Mean and std over frames of each cached clip ((T, D), or (T, L, D) for
    every layer, flattened); clips missing from the cache are skipped."""
    xs, ys, kept = [], [], []
    for r in rows:
        try:
            f = cache.get(r["sha256"])
        except DataError:
            log.warning("baseline skips clip %s (%s): not in the cache", clip_id(r), r["label"])
            continue
        xs.append(np.concatenate([f.mean(0).ravel(), f.std(0).ravel()]))
        ys.append(labels.index(r["label"]))
        kept.append(r)
    if not xs:
        raise DataError("no cached features for the baseline")
    return np.stack(xs), np.array(ys), kept


class Baseline:
    """A fitted baseline: standardiser + logistic regression on one encoder's pooled features."""

    def __init__(self, clf, c: float, spec: EncoderSpec, labels: list[str]) -> None:
        self.clf, self.C, self.spec, self.labels = clf, c, spec, labels

    def predict(self, cache_root: str | Path, rows: list[dict]) -> Predictions:
        x, y, kept = pooled(FeatureCache(cache_root, self.spec), rows, self.labels)
        log_probs = np.full((len(x), len(self.labels)), -30.0, dtype=np.float32)
        log_probs[:, self.clf.classes_] = self.clf.predict_log_proba(x)  # classes absent from training: ~0
        return Predictions(log_probs, y, kept, self.labels)


def fit_baseline(manifest: Manifest, spec: EncoderSpec, cache_root: str | Path, train: list[dict], val: list[dict], seed: int = 0) -> Baseline:
    """Fit on the training speakers with C chosen on the validation speakers."""
    cache = FeatureCache(cache_root, spec)
    xtr, ytr, _ = pooled(cache, train, manifest.labels)
    xva, yva, _ = pooled(cache, val, manifest.labels)

    # The regularisation path from strong to weak, each fit starting from the
    # last one's weights (as glmnet does: 15-20% fewer lbfgs iterations
    # here), on one BLAS thread: at this size (a few hundred features, ~1,000
    # clips) threads cost more than they give (a fit took 2.5-3.7 s on 2
    # threads, 0.4 s on one, on this machine).
    scaler = StandardScaler().fit(xtr)
    ztr, zva = scaler.transform(xtr), scaler.transform(xva)
    clf = LogisticRegression(max_iter=1000, random_state=seed, warm_start=True)
    fits = {}
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # lbfgs at max_iter still gives a usable fit; C is chosen on val
        for c in sorted(C_GRID):
            clf.set_params(C=c).fit(ztr, ytr)
            fits[c] = (copy.deepcopy(clf), clf.score(zva, yva))
    best_c = max(C_GRID, key=lambda c: (fits[c][1], -c))  # ties: the stronger regularisation
    return Baseline(make_pipeline(scaler, fits[best_c][0]), best_c, spec, manifest.labels)
