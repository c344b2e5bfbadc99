"""Replay files (labelled clips separated by silence: the standard live
test) and the metrics of a live run against their truth."""

from __future__ import annotations

import numpy as np

from phonemekit.data.audio import load_audio
from phonemekit.live.vad import SR, dbfs


def build_replay(manifest, *, clips: int = 40, gap_s: float = 0.6, seed: int = 0, rows: list[dict] | None = None) -> tuple[np.ndarray, list[dict]]:
    """Concatenate labelled clips with silences (faint noise) between them;
    returns the waveform and the truth (start, end, label) of each clip."""
    rng = np.random.default_rng(seed)
    pool = rows if rows is not None else manifest.rows
    pick = [pool[i] for i in rng.choice(len(pool), size=min(clips, len(pool)), replace=False)]
    parts, truth, t = [], [], 0.0
    for r in pick:
        gap = rng.standard_normal(int(gap_s * SR)).astype(np.float32) * 3e-4
        x = load_audio(manifest.audio_path(r)).samples
        start, end = _sound_bounds(x)
        parts += [gap, x]
        t += gap_s
        truth.append({"start": round(t + start, 4), "end": round(t + end, 4), "label": r["label"], "sha256": r["sha256"]})
        t += len(x) / SR
    parts.append(rng.standard_normal(int(gap_s * SR)).astype(np.float32) * 3e-4)
    return np.concatenate(parts), truth


def _sound_bounds(x: np.ndarray, rel_db: float = -30.0) -> tuple[float, float]:
    """Where the sound itself starts and ends inside a clip (its padding excluded)."""
    n = len(x) // 160
    env = dbfs(x[: n * 160].reshape(n, 160), axis=1)
    on = np.flatnonzero(env > env.max() + rel_db)
    if not len(on):
        return 0.0, len(x) / SR
    return on[0] * 160 / SR, (on[-1] + 1) * 160 / SR


def replay_metrics(events: list[dict], truth: list[dict]) -> dict:
    """Accuracy of final labels, latency from sound offset (and onset) to the
    label, and flicker (segments whose shown label changed after it first
    appeared). Latency counts audio that had to arrive (hangover) plus
    compute time, so it holds for real-time streaming too."""
    finals = [e for e in events if e["type"] == "final"]
    provisional = [e for e in events if e["type"] == "provisional"]
    matched, lat_off, lat_on, correct = 0, [], [], 0
    for tr in truth:
        best, overlap = None, 0.0
        for f in finals:
            ov = min(tr["end"], f["segment_end"]) - max(tr["start"], f["segment_start"])
            if ov > overlap:
                best, overlap = f, ov
        if best is None:
            continue
        matched += 1
        correct += int(best["label"] == tr["label"])
        lat_off.append((best["t_audio"] - tr["end"]) * 1000 + best["compute_ms"])
        first = [p for p in provisional if best["segment_start"] <= p["t_audio"] <= best["t_audio"]]
        if first:
            lat_on.append((first[0]["t_audio"] - tr["start"]) * 1000 + first[0]["compute_ms"])
    seg_flicker = [f["provisional_changes"] > 0 for f in finals]
    return {
        "clips": len(truth),
        "segments": len(finals),
        "detected": matched,
        "accuracy": correct / len(truth) if truth else None,
        "latency_offset_ms_mean": float(np.mean(lat_off)) if lat_off else None,
        "latency_offset_ms_p90": float(np.percentile(lat_off, 90)) if lat_off else None,
        "latency_onset_ms_mean": float(np.mean(lat_on)) if lat_on else None,
        "flicker_rate": float(np.mean(seg_flicker)) if seg_flicker else None,
        "provisional_changes_per_segment": float(np.mean([f["provisional_changes"] for f in finals])) if finals else None,
    }
