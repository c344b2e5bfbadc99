"""A trained run looked at again: its metrics on any manifest (by default
its own held-out speakers), and its most-confused pairs with example files."""

from __future__ import annotations

from pathlib import Path

from phonemekit.data.manifest import load_manifest
from phonemekit.data.splits import speaker_disjoint
from phonemekit.errors import DataError
from phonemekit.evaluation.metrics import confused_pairs, confusion_matrix, metrics
from phonemekit.evaluation.predict import predict
from phonemekit.runs import Run


def evaluate_run(run: Run, data: str | Path | None = None, *, cache_root: str | Path = "cache", device: str = "cpu") -> dict:
    """Metrics of `run` on every clip of `data`, or on the held-out speakers
    of the manifest it was trained on."""
    if data is None:
        if not run.data:
            raise DataError(f"{run.path} does not record its training manifest; pass --data")
        m = load_manifest(run.data)
        rows = m.rows_of(speaker_disjoint(m.speakers, m.groups).test)
    else:
        m = load_manifest(data)
        rows = m.rows
    return metrics(predict(run.load(), m, rows, cache_root=cache_root, device=device), m.groups)


def confusion_examples(run: Run, data: str | Path | None = None, *, top: int = 10, examples: int = 3, cache_root: str | Path = "cache") -> list[dict]:
    """The most-confused (true, predicted) pairs with counts and up to
    `examples` files each: from the run's held-out predictions, or from a
    fresh prediction on `data`."""
    labels = run.labels
    if data is not None:
        m = load_manifest(data)
        p = predict(run.load(), m, m.rows, cache_root=cache_root)
        names = [r["path"] for r in p.rows]
    else:
        p = run.predictions("test")
        # File names live in the manifest, not in run artifacts.
        by_sha = {r["sha256"]: r["path"] for r in load_manifest(run.data).rows} if run.data else {}
        names = [by_sha.get(r["sha256"], r["sha256"][:12]) for r in p.rows]
    pred = p.scores.argmax(1)
    out = []
    for c in confused_pairs(confusion_matrix(p.y, pred, len(labels)), labels, top):
        ti, pi = labels.index(c["true"]), labels.index(c["predicted"])
        c["examples"] = [n for n, yy, pp in zip(names, p.y, pred) if yy == ti and pp == pi][:examples]
        out.append(c)
    return out
