"""CTC decoding: greedy, prefix beam search, and single-sound class scores.

A single-sound clip is classified by the CTC likelihood of each one-label
sequence, softmaxed over classes. Log-probabilities are never averaged over
time: that would score a class by how often it beats the blank, not by how
likely the clip is to say it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

_IMPOSSIBLE = -1e30  # log of "no alignment": finite, so masked frames never produce NaN


def greedy(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int) -> list[list[int]]:
    """Argmax per frame, collapse repeats, drop blanks."""
    best = log_probs.argmax(-1).tolist()
    out = []
    for seq, n in zip(best, lengths.tolist()):
        tokens, prev = [], None
        for tok in seq[:n]:
            if tok != prev and tok != blank:
                tokens.append(tok)
            prev = tok
        out.append(tokens)
    return out


def prefix_beam_search(log_probs: np.ndarray, blank: int, beam: int = 8) -> list[tuple[tuple[int, ...], float]]:
    """CTC prefix beam search over one sequence (T, K) of log-probs.
    Returns (prefix, log score) pairs, best first."""
    lp = np.asarray(log_probs, dtype=np.float64)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}  # prefix -> (p_blank, p_nonblank)
    for t in range(lp.shape[0]):
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (pb, pnb) in beams.items():
            total = np.logaddexp(pb, pnb)
            e = nxt[prefix]
            e[0] = np.logaddexp(e[0], total + lp[t, blank])
            for k in range(lp.shape[1]):
                if k == blank:
                    continue
                p = lp[t, k]
                if prefix and prefix[-1] == k:
                    e[1] = np.logaddexp(e[1], pnb + p)  # repeat collapses
                    ext = nxt[prefix + (k,)]
                    ext[1] = np.logaddexp(ext[1], pb + p)  # a blank separated the repeat
                else:
                    ext = nxt[prefix + (k,)]
                    ext[1] = np.logaddexp(ext[1], total + p)
        ranked = sorted(nxt.items(), key=lambda kv: -np.logaddexp(*kv[1]))[:beam]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    return [(k, float(np.logaddexp(*v))) for k, v in sorted(beams.items(), key=lambda kv: -np.logaddexp(*kv[1]))]


_export_frames = 512  # frames an exported scorer handles exactly; set per export by `exact_up_to`


@contextmanager
def exact_up_to(frames: int):
    """While exporting, build CTC scorers that are exact for clips of up to
    `frames` frames (the graph cannot size its scan from a symbolic length)."""
    global _export_frames
    old, _export_frames = _export_frames, int(frames)
    try:
        yield
    finally:
        _export_frames = old


def _scan_steps(t: int) -> int:
    """Doubling steps for a log-cumsum-exp over t frames: exactly what t needs
    when run eagerly, enough for `_export_frames` when traced for export."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        t = _export_frames
    return max(int(t) - 1, 0).bit_length()


def log_cumsumexp(x: torch.Tensor, steps: int) -> torch.Tensor:
    """Inclusive log-cumsum-exp along the last axis by Hillis-Steele doubling:
    `steps` rounds of pairwise logaddexp cover 2**steps frames. Stable for any
    range of values (every round shifts by its own max), O(T log T), and built
    from elementwise ops that ONNX Runtime runs well, unlike a time loop."""
    t = x.shape[-1]
    for i in range(steps):
        shifted = F.pad(x, (1 << i, 0), value=_IMPOSSIBLE)[..., :t]
        hi = torch.maximum(x, shifted)  # logaddexp; ONNX Runtime's Softplus is several times slower
        x = hi + torch.log1p(torch.exp(torch.minimum(x, shifted) - hi))
    return x


def ctc_single_label_log_likelihood(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int) -> torch.Tensor:
    """log p(label sequence = [c] | x) for every class c, shape (B, C).

    Every alignment of a one-label sequence is blanks, then c on frames
    s..e-1, then blanks. With d_t = log p_c(t) - log p_blank(t) and D its
    prefix sum (D[0] = 0), log p = sum_t log p_blank(t) + logsumexp_{s < e} (D[e] - D[s]),
    and the sum over s < e is D[e] + logcumsumexp(-D)[e-1]: exact, O(T C log T),
    no loop over time, exportable. Frames past a clip's length are masked out
    of e, and every s < e then lies inside the clip.
    """
    b, t, k = log_probs.shape
    valid = torch.arange(t, device=log_probs.device)[None, :] < lengths[:, None]  # (B, T)
    lp_blank = log_probs[..., blank]  # (B, T)
    lp_cls = torch.cat([log_probs[..., :blank], log_probs[..., blank + 1 :]], dim=-1)  # (B, T, C)
    base = (lp_blank * valid.to(lp_blank.dtype)).sum(1, keepdim=True)  # (B, 1)
    d = torch.where(valid[..., None], lp_cls - lp_blank[..., None], torch.zeros_like(lp_cls))
    cum = torch.cumsum(d, dim=1).transpose(1, 2)  # (B, C, T): D[1..T]
    before = torch.cat([torch.zeros_like(cum[..., :1]), cum[..., :-1]], dim=-1)  # D[0..T-1]
    terms = cum + log_cumsumexp(-before, _scan_steps(t))  # e = 1..T
    terms = torch.where(valid[:, None, :], terms, torch.full_like(terms, _IMPOSSIBLE))
    return base + torch.logsumexp(terms, dim=-1)


def class_log_probs(outputs: torch.Tensor, lengths: torch.Tensor, kind: str, blank: int | None = None) -> torch.Tensor:
    """Normalised class log-probabilities (B, C) from any head's output."""
    if kind == "logits":
        return torch.log_softmax(outputs, dim=-1)
    if kind == "ctc":
        assert blank is not None, "a CTC head needs its stored blank index"
        return torch.log_softmax(ctc_single_label_log_likelihood(outputs, lengths, blank), dim=-1)
    raise ValueError(f"unknown head output kind {kind!r}")


def forced_align(log_probs: np.ndarray, targets: list[int], blank: int) -> list[tuple[int, int, float]]:
    """CTC forced alignment (Viterbi over the blank-interleaved target
    sequence): for each target, (first frame, end frame, mean log-prob of
    its frames). Written here because the one library implementation
    (torchaudio's `forced_align`) is deprecated and not a dependency.
    Raises ValueError when the frames are too few for the targets."""
    lp = np.asarray(log_probs, dtype=np.float64)
    t_len, ext = lp.shape[0], [blank]
    for tok in targets:
        ext += [tok, blank]
    s_len = len(ext)
    repeats = sum(a == b for a, b in zip(targets, targets[1:]))
    if not targets or t_len < len(targets) + repeats:
        raise ValueError(f"{t_len} frames cannot hold {len(targets)} phones")
    score = np.full((t_len, s_len), -np.inf)
    back = np.zeros((t_len, s_len), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    score[0, 0], score[0, 1] = lp[0, ext[0]], lp[0, ext[1]]
    ext_arr = np.array(ext)
    skip = np.zeros(s_len, bool)  # a label may follow the previous label directly unless it repeats it
    skip[2:] = (ext_arr[2:] != blank) & (ext_arr[2:] != ext_arr[:-2])
    for t in range(1, t_len):
        prev = score[t - 1]
        cand = np.stack([prev, np.r_[-np.inf, prev[:-1]], np.where(skip, np.r_[-np.inf, -np.inf, prev[:-2]], -np.inf)])
        back[t] = cand.argmax(0)
        score[t] = cand.max(0) + lp[t, ext_arr]
    s = s_len - 1 if score[-1, -1] >= score[-1, -2] else s_len - 2
    if not np.isfinite(score[-1, s]):
        raise ValueError("no alignment of these phones fits these frames")
    path = np.zeros(t_len, dtype=np.int64)
    for t in range(t_len - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])
    out = []
    for k in range(len(targets)):
        frames = np.flatnonzero(path == 2 * k + 1)
        out.append((int(frames[0]), int(frames[-1]) + 1, float(lp[frames, targets[k]].mean())))
    return out
