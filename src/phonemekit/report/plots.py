"""Figures for reports: confusion matrices, training curves, embedding maps,
model comparison bars, reliability diagrams and DET curves. Every function writes one PNG and returns its path."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from phonemekit.fileio import atomic_open


def _save(fig, path: Path) -> Path:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion(cm: np.ndarray, labels: list[str], path: str | os.PathLike, title: str = "") -> Path:
    cm = np.asarray(cm, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(0.28 * n + 2.5, 0.28 * n + 2))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _save(fig, Path(path))


def curves(history: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Loss and validation top-1 per epoch; leave-one-speaker-out histories
    (records carrying a `fold`) get one line per fold."""
    folds = list(dict.fromkeys(h.get("fold") for h in history))
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    for i, fold in enumerate(folds):
        part = [h for h in history if h.get("fold") == fold]
        ep = [h["epoch"] for h in part]
        tag = "" if fold is None else f" {fold}"
        a.plot(ep, [h["train_loss"] for h in part], color="C0", alpha=1 if fold is None else 0.6, label="train" if i == 0 else None)
        a.plot(ep, [h["val_loss"] for h in part], color="C1", alpha=1 if fold is None else 0.6, label="validation" if i == 0 else None)
        b.plot(ep, [h["val_top1"] for h in part], color=f"C{2 + i % 8}", label=tag.strip() or None)
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    if len(folds) > 1:
        b.legend(fontsize=6)
    b.set_xlabel("epoch")
    b.set_ylabel("validation top-1")
    b.set_ylim(0, 1)
    fig.suptitle(title)
    return _save(fig, Path(path))


def embedding_map(emb: np.ndarray, y: np.ndarray, labels: list[str], path: str | os.PathLike, title: str = "", seed: int = 0) -> Path:
    """2-D map of pooled embeddings: UMAP when installed, else t-SNE."""
    try:
        import umap  # type: ignore

        xy = umap.UMAP(random_state=seed).fit_transform(emb)
        method = "UMAP"
    except ImportError:
        from sklearn.manifold import TSNE

        # 500 iterations (default 1000): the map of a few hundred clips has settled by then, in half the time.
        xy = TSNE(n_components=2, random_state=seed, perplexity=min(30, max(5, len(emb) // 10)), init="pca", max_iter=500).fit_transform(emb)
        method = "t-SNE"
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("nipy_spectral")
    for k in np.unique(y):
        pts = xy[y == k]
        ax.scatter(pts[:, 0], pts[:, 1], s=8, color=cmap(k / max(1, len(labels) - 1)), alpha=0.7)
        cx, cy = pts.mean(0)
        ax.annotate(labels[k], (cx, cy), fontsize=7, ha="center", weight="bold")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title} ({method} of pooled embeddings)")
    return _save(fig, Path(path))


def model_bars(
    names: list[str],
    values: list[float],
    ci: list[list[float]],
    path: str | os.PathLike,
    leaky: list[float | None] | None = None,
    ylabel: str = "test top-1 (held-out speakers)",
) -> Path:
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 3.8))
    lo = [v - c[0] for v, c in zip(values, ci)]
    hi = [c[1] - v for v, c in zip(values, ci)]
    ax.bar(x, values, yerr=[lo, hi], capsize=4, color="C0", label="speaker-disjoint (honest)")
    if leaky and any(v is not None for v in leaky):
        ax.scatter(x, [np.nan if v is None else v for v in leaky], marker="_", s=600, color="C3", label="leaky split (same speakers)", zorder=3)
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, Path(path))


def accuracy_vs_latency(names: list[str], acc: list[float], ms: list[float], path: str | os.PathLike) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(ms, acc, s=40)
    for n, x, y in zip(names, ms, acc):
        ax.annotate(n, (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("end-to-end ms per 1 s of audio (CPU)")
    ax.set_ylabel("held-out top-1")
    ax.set_ylim(0, 1)
    ax.set_xscale("log")
    return _save(fig, Path(path))


def reliability(rel: dict, path: str | os.PathLike, title: str = "") -> Path:
    """Reliability diagram: accuracy per confidence bin, before and after calibration."""
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfectly calibrated")
    for key, colour in (("before", "C3"), ("after", "C0")):
        r = rel[key]
        ax.plot(r["confidence"], r["accuracy"], marker="o", color=colour, label=key)
    ax.set_xlabel("top-1 confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, Path(path))


def det(verdicts: dict[str, dict], path: str | os.PathLike) -> Path:
    """DET curves (false accepts vs false rejects) per model, on normal-deviate axes, with each operating point."""
    from scipy.stats import norm

    ticks = [0.001, 0.01, 0.05, 0.2, 0.5]
    z = lambda v: norm.ppf(np.clip(np.asarray(v, dtype=float), 1e-4, 1 - 1e-4))  # noqa: E731
    fig, ax = plt.subplots(figsize=(5, 5))
    for i, (name, v) in enumerate(verdicts.items()):
        ax.plot(z(v["det"]["far"]), z(v["det"]["frr"]), color=f"C{i % 10}", lw=1.2, label=name)
        ax.plot(z(v["test"]["far"]), z(v["test"]["frr"]), "o", color=f"C{i % 10}")
    ax.set_xticks(z(ticks), [f"{t:g}" for t in ticks])
    ax.set_yticks(z(ticks), [f"{t:g}" for t in ticks])
    ax.set_xlabel("false-accept rate")
    ax.set_ylabel("false-reject rate")
    ax.set_title("verdicts on held-out speakers (dots: operating point)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, Path(path))


def minimal_pair_det(curves: dict[str, dict], points: dict[str, tuple[float, float]], path: str | os.PathLike) -> Path:
    """Reading verdicts on real words: missed substitutions vs right sounds
    rejected, per group, on normal-deviate axes; dots: the shipped verdicts."""
    from scipy.stats import norm

    ticks = [0.01, 0.05, 0.2, 0.5, 0.8]
    z = lambda v: norm.ppf(np.clip(np.asarray(v, dtype=float), 2e-3, 0.95))  # noqa: E731  (the ends of a curve say nothing)
    fig, ax = plt.subplots(figsize=(5, 5))
    for i, (group, c) in enumerate(curves.items()):
        ax.plot(z(c["miss"]), z(c["frr"]), color=f"C{i % 10}", lw=1.2, label=group)
        if group in points:
            ax.plot(*z(points[group]), "o", color=f"C{i % 10}")
    ax.set_xticks(z(ticks), [f"{t:g}" for t in ticks])
    ax.set_yticks(z(ticks), [f"{t:g}" for t in ticks])
    ax.set_xlim(z(2e-3), z(0.95))
    ax.set_ylim(z(2e-3), z(0.95))
    ax.set_xlabel("substitutions missed")
    ax.set_ylabel("right sounds rejected")
    ax.set_title("minimal pairs on held-out speakers (dots: shipped verdicts)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, Path(path))
