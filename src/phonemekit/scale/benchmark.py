"""`phonemekit benchmark-extract`: feature extraction throughput with the
local engine and with Ray (1 and 2 workers) on this machine, whether the
cache bytes agree, Ray's overhead, and the arithmetic for a large corpus.

Clips are generated (1 s tones with noise, so every encoder sees audio of
a known length); wav2vec2/WavLM run their base architecture with random
weights (speed does not depend on weights) and say so.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from phonemekit.config import EncoderConfig
from phonemekit.data.audio import write_audio
from phonemekit.data.cache import extract
from phonemekit.data.manifest import load_manifest, prepare
from phonemekit.fileio import write_json, write_text
from phonemekit.models.encoders import build_encoder
from phonemekit.privacy import private_tmpdir
from phonemekit.scale.engines import RayEngine, _ray

log = logging.getLogger(__name__)

SOURCES = {"wav2vec2": "random:base", "wavlm": "random:base", "whisper": "whisper:tiny.en", "fbank": "fbank"}
MYST_HOURS = 470.0  # the corpus the estimate is for


def _corpus(root: Path, clips: int, seconds: float) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * seconds)) / 16000
    for i in range(clips):
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 2000) * t) + 0.02 * rng.standard_normal(len(t))
        write_audio(root / f"spk{i % 4}" / f"lab{i % 3}" / f"c{i:04d}.wav", x.astype(np.float32))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.npy"))}


def run_extract_benchmark(
    *, encoders: tuple[str, ...] = ("fbank", "whisper", "wavlm"), clips: int = 48, seconds: float = 1.0, workers: tuple[int, ...] = (1, 2), batch_size: int = 8
) -> dict:
    ray = _ray()
    threads = torch.get_num_threads()
    res: dict = {"clips": clips, "clip_seconds": seconds, "threads": threads, "encoders": {}}
    with private_tmpdir("phonemekit-xbench-") as tmp:
        _corpus(tmp / "rec", clips, seconds)
        prepare(tmp / "rec", tmp / "data")
        m = load_manifest(tmp / "data")
        audio = sum(r["duration"] for r in m.rows)
        t0 = time.perf_counter()
        ray.init(num_cpus=max(workers), include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        res["ray_init_seconds"] = round(time.perf_counter() - t0, 2)
        try:
            for spec in encoders:
                family, _, source = spec.partition("=")
                source = source or SOURCES.get(family, family)
                enc = build_encoder(EncoderConfig(family=family, source=source))
                log.info("extraction benchmark: %s (%s)", family, source)
                entry: dict = {"source": source, "weights": "random (speed does not depend on weights)" if enc.weights == "random" else enc.weights}
                t0 = time.perf_counter()
                extract(m, enc, tmp / f"{family}-local", batch_size=batch_size)
                local = time.perf_counter() - t0
                entry["local"] = {"seconds": round(local, 2), "clips_per_s": clips / local, "seconds_per_audio_second": local / audio}
                reference = _files(tmp / f"{family}-local")
                for w in workers:
                    t0 = time.perf_counter()
                    r = RayEngine(workers=w, shard_batches=1).extract(m, enc, str(tmp / f"{family}-ray{w}"), batch_size=batch_size)
                    took = time.perf_counter() - t0
                    entry[f"ray_{w}"] = {
                        "seconds": round(took, 2),
                        "clips_per_s": clips / took,
                        "seconds_per_audio_second": took / audio,
                        "overhead_vs_local": took / local - 1,
                        "identical_bytes": _files(tmp / f"{family}-ray{w}") == reference,
                        "per_worker_clips_per_s": {k: v["clips_per_s"] for k, v in r.workers.items()},
                        # Encoding alone (the workers' own clocks): what a long job converges to once
                        # the actors have started and loaded their encoder.
                        "steady_clips_per_s": sum(v["clips_per_s"] or 0 for v in r.workers.values()),
                        "startup_seconds": took - max(v["seconds"] for v in r.workers.values()),
                    }
                # Hours of compute for the large corpus at the measured cost per second of audio (this machine, all its cores).
                entry["estimate_hours_one_machine"] = MYST_HOURS * entry["local"]["seconds_per_audio_second"]
                res["encoders"][family] = entry
        finally:
            ray.shutdown()
    return res


def markdown(res: dict) -> str:
    lines = [
        f"Feature extraction, {res['clips']} clips of {res['clip_seconds']:g} s, {res['threads']} threads per worker; Ray started in "
        f"{res['ray_init_seconds']:.1f} s (once, not counted below; actor start and model loads are). Ray cells: clips/s of the whole "
        "job (overhead vs local), then the workers' steady encoding rate and the job's fixed start-up.",
        "",
        "| encoder | weights | local clips/s | Ray 1 worker: job (overhead); steady; start-up | Ray 2 workers: job (overhead); steady; start-up | "
        f"bytes equal to local | s per s of audio (local) | hours for {MYST_HOURS:.0f} h on one such machine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fam, e in res["encoders"].items():
        rays = [e[k] for k in sorted(e) if k.startswith("ray_")]
        cells = [f"{r['clips_per_s']:.1f} ({100 * r['overhead_vs_local']:+.0f}%); {r['steady_clips_per_s']:.1f}; {r['startup_seconds']:.1f} s" for r in rays]
        lines.append(
            f"| {fam} `{e['source']}` | {e['weights'].split(' ')[0]} | {e['local']['clips_per_s']:.1f} | "
            + " | ".join(cells)
            + f" | {'yes' if all(r['identical_bytes'] for r in rays) else 'NO'} | {e['local']['seconds_per_audio_second']:.4f} | "
            f"{e['estimate_hours_one_machine']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def write_results(res: dict, json_path: Path) -> Path:
    write_json(json_path, res)
    md = json_path.with_suffix(".md")
    write_text(md, markdown(res))
    return md
