"""Replay files (labelled clips separated by silence: the standard live
test), background noise to mix into them (generated from a seed, so nothing
is shipped), and the metrics of a live run against their truth."""

from __future__ import annotations

import numpy as np

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
        x = manifest.samples(r)
        start, end = _sound_bounds(x)
        parts += [gap, x]
        t += gap_s
        truth.append({"start": round(t + start, 4), "end": round(t + end, 4), "label": r["label"], "sha256": r["sha256"]})
        t += len(x) / SR
    parts.append(rng.standard_normal(int(gap_s * SR)).astype(np.float32) * 3e-4)
    return np.concatenate(parts), truth


NOISES = ("pink", "hum", "clicks")


def make_noise(kind: str, n: int, seed: int = 0) -> np.ndarray:
    """Unit-RMS non-speech noise: `pink` (1/f, fans and traffic), `hum`
    (50 Hz mains and harmonics over faint pink), `clicks` (pink with short
    decaying knocks, a few per second: the transients a gate fires on)."""
    rng = np.random.default_rng(seed)
    if kind not in NOISES:
        raise ValueError(f"unknown noise {kind!r} (choose from {', '.join(NOISES)})")
    spec = np.fft.rfft(rng.standard_normal(n))
    spec /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0))  # 1/f power below 20 Hz held flat
    x = np.fft.irfft(spec, n)
    x /= np.sqrt(np.mean(x**2)) + 1e-12
    if kind == "hum":
        t = np.arange(n) / SR
        x = 0.2 * x + sum(np.sin(2 * np.pi * 50 * h * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3, 5))
    elif kind == "clicks":
        knock = np.exp(-np.arange(int(0.03 * SR)) / (0.005 * SR)) * np.sin(2 * np.pi * 180 * np.arange(int(0.03 * SR)) / SR)
        for at in rng.choice(max(1, n - len(knock)), size=max(1, int(3 * n / SR)), replace=False):
            x[at : at + len(knock)] += 8 * knock * rng.uniform(0.5, 1)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def sounds_rms(wave: np.ndarray, truth: list[dict]) -> float:
    """RMS level of a replay's sounds (the truth's spans; the whole wave without truth)."""
    spans = np.concatenate([wave[int(t["start"] * SR) : int(t["end"] * SR)] for t in truth]) if truth else wave
    return float(np.sqrt(np.mean(spans**2)))


def mix_noise(wave: np.ndarray, truth: list[dict], kind: str, snr_db: float, seed: int = 0) -> np.ndarray:
    """`wave` with noise added at `snr_db` below the level of its sounds (RMS over the truth's spans)."""
    out = wave + make_noise(kind, len(wave), seed) * sounds_rms(wave, truth) * 10 ** (-snr_db / 20)
    return np.clip(out, -1, 1).astype(np.float32)


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
    # A segment overlapping no sound is a false trigger (noise, a click, an echo).
    false = sum(1 for f in finals if not any(min(t["end"], f["segment_end"]) > max(t["start"], f["segment_start"]) for t in truth))
    return {
        "clips": len(truth),
        "segments": len(finals),
        "detected": matched,
        "detection_rate": matched / len(truth) if truth else None,
        "false_triggers": false,
        "false_trigger_rate": false / len(truth) if truth else None,
        "accuracy": correct / len(truth) if truth else None,
        "latency_offset_ms_mean": float(np.mean(lat_off)) if lat_off else None,
        "latency_offset_ms_p90": float(np.percentile(lat_off, 90)) if lat_off else None,
        "latency_onset_ms_mean": float(np.mean(lat_on)) if lat_on else None,
        "flicker_rate": float(np.mean(seg_flicker)) if seg_flicker else None,
        "provisional_changes_per_segment": float(np.mean([f["provisional_changes"] for f in finals])) if finals else None,
    }
