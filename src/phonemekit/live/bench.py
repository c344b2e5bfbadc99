"""The live table: a replay through each preset, clean and with background
noise mixed in, plus noise alone (false triggers). What `live --report`
prints and the demo's report shows.

Targets for the default preset (see docs/live.md): at least 98% of the
sounds detected, at most 2% false triggers, flicker under 5% of segments,
mean latency after the sound's end under 100 ms.
"""

from __future__ import annotations

import numpy as np

from phonemekit.live.engine import PRESETS, LiveEngine, load_live_config, run_stream
from phonemekit.live.replay import NOISES, make_noise, mix_noise, replay_metrics, sounds_rms
from phonemekit.live.sources import array_blocks
from phonemekit.live.vad import SR

TARGETS = {"detection_rate": (">=", 0.98), "false_trigger_rate": ("<=", 0.02), "flicker_rate": ("<", 0.05), "latency_offset_ms_mean": ("<", 100.0)}


def parse_noise(text: str) -> tuple[str, float]:
    """'pink:10' -> ('pink', 10.0)."""
    kind, _, snr = text.partition(":")
    if kind not in NOISES or not snr:
        raise ValueError(f"noise must be KIND:SNR_DB with KIND one of {', '.join(NOISES)} (e.g. pink:10), got {text!r}")
    return kind, float(snr)


def verdicts(row: dict) -> dict[str, bool]:
    out = {}
    for key, (op, target) in TARGETS.items():
        v = row.get(key)
        out[key] = v is not None and (v >= target if op == ">=" else v <= target if op == "<=" else v < target)
    return out


def live_table(
    classifier,
    wave: np.ndarray,
    truth: list[dict],
    *,
    presets=PRESETS,
    noises: list[tuple[str, float]] = (),
    noise_presets=("balanced",),
    noise_only_s: float = 30.0,
) -> dict:
    """Replay metrics of every preset on the clean replay and of `noise_presets`
    (the default one) with each noise mixed in, and segments opened by noise alone."""
    rows = []
    for kind, snr in [(None, None), *noises]:
        x = wave if kind is None else mix_noise(wave, truth, kind, snr)
        for preset in presets if kind is None else [p for p in presets if p in noise_presets]:
            events = run_stream(LiveEngine(classifier, load_live_config(preset)), array_blocks(x))
            row = {"preset": preset, "noise": kind or "none", "snr_db": snr, **replay_metrics(events, truth)}
            rows.append({**row, "meets": verdicts(row)})
    noise_only = {}
    if noise_only_s > 0:
        level = sounds_rms(wave, truth) * 10 ** (-10 / 20)  # noise 10 dB below the replay's sounds
        for i, kind in enumerate(NOISES):
            x = make_noise(kind, int(noise_only_s * SR), seed=100 + i) * level
            events = run_stream(LiveEngine(classifier, load_live_config(noise_presets[0])), array_blocks(x))
            noise_only[kind] = sum(e["type"] == "final" for e in events)
    return {
        "clips": len(truth),
        "rows": rows,
        "noise_only": noise_only,
        "noise_only_seconds": noise_only_s,
        "targets": {k: f"{op} {v:g}" for k, (op, v) in TARGETS.items()},
    }
