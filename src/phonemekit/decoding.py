"""CTC decoding: greedy, prefix beam search, and single-sound class scores.

A single-sound clip is classified by the CTC likelihood of each one-label
sequence, softmaxed over classes. Log-probabilities are never averaged over
time: that would score a class by how often it beats the blank, not by how
likely the clip is to say it.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

_NEG = -1e4  # "impossible" that stays finite, so padded frames never produce NaN


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


def ctc_single_label_log_likelihood(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int) -> torch.Tensor:
    """log p(label sequence = [c] | x) for every class c, shape (B, C).

    Every alignment of a one-label sequence is blanks, then c on frames
    s..e, then blanks. With d_t = log p_c(t) - log p_blank(t) and D its
    prefix sum, log p = sum_t log p_blank(t) + logsumexp_{s < e'} (D[e'] - D[s]).
    That is exact, needs no loop over time, and exports to ONNX. Padded
    frames get d = -1e4, which removes every alignment that touches them.
    """
    b, t, k = log_probs.shape
    valid = torch.arange(t, device=log_probs.device)[None, :] < lengths[:, None]  # (B, T)
    lp_blank = log_probs[..., blank]  # (B, T)
    lp_cls = torch.cat([log_probs[..., :blank], log_probs[..., blank + 1 :]], dim=-1)  # (B, T, C)
    base = (lp_blank * valid.to(lp_blank.dtype)).sum(1, keepdim=True)  # (B, 1)
    d = torch.where(valid[..., None], lp_cls - lp_blank[..., None], torch.full_like(lp_cls, _NEG))
    cum = torch.cumsum(d, dim=1)
    cum = torch.cat([torch.zeros_like(cum[:, :1]), cum], dim=1).transpose(1, 2)  # (B, C, T+1)
    pairs = cum[:, :, None, :] - cum[:, :, :, None]  # [s, e'] = D[e'] - D[s]
    idx = torch.arange(t + 1, device=log_probs.device)
    upper = idx[None, :] > idx[:, None]  # s < e'
    pairs = torch.where(upper, pairs, torch.full_like(pairs, _NEG * 10))
    return base + torch.logsumexp(pairs.flatten(2), dim=-1)


def class_log_probs(outputs: torch.Tensor, lengths: torch.Tensor, kind: str, blank: int | None = None) -> torch.Tensor:
    """Normalised class log-probabilities (B, C) from any head's output."""
    if kind == "logits":
        return torch.log_softmax(outputs, dim=-1)
    if kind == "ctc":
        assert blank is not None, "a CTC head needs its stored blank index"
        return torch.log_softmax(ctc_single_label_log_likelihood(outputs, lengths, blank), dim=-1)
    raise ValueError(f"unknown head output kind {kind!r}")
