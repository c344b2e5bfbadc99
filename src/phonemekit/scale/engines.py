"""Engines for feature extraction: this machine, or a Ray cluster.

Both run the same planned batches (`data.cache.plan`) through the same
`encode_batch` into the same content-addressed cache, so a local run and a
Ray run write byte-identical files whatever the number of workers or the
order they finish in. (torch's CPU kernels round differently with another
intra-op thread count, ~1e-6 for a transformer, so every Ray worker uses
the driver's thread count unless told otherwise.) On Ray the batches are cut into shards; a pool of
actors (one encoder load each, one GPU each when the cluster has GPUs)
encodes them. Clips already cached are skipped, a worker killed mid-shard
is restarted and its shard retried (writes are atomic, so nothing half
written stays), and a bad clip is recorded as rejected exactly as locally.

    engine = make_engine("ray", address="auto")
    result = engine.extract(manifest, encoder, "s3://bucket/cache")
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

import torch

from phonemekit.config import AudioConfig, EncoderConfig
from phonemekit.data.cache import ExtractResult, FeatureCache, encode_batches, extract, plan
from phonemekit.data.manifest import Manifest
from phonemekit.errors import ConfigError, PhonemekitError
from phonemekit.models.encoders import Encoder, build_encoder

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


class EngineError(PhonemekitError):
    """The extraction engine cannot run as asked (Ray missing, cluster unreachable)."""


@dataclass(frozen=True)
class LocalEngine:
    """Extraction in this process (the default)."""

    name = "local"

    def extract(self, manifest: Manifest, encoder: Encoder, cache_root, **kw) -> ExtractResult:
        return extract(manifest, encoder, cache_root, **kw)


@dataclass(frozen=True)
class RayEngine:
    """Extraction on a Ray cluster. `address`: None starts a local Ray
    runtime, "auto" joins the one this machine belongs to, `ray://host:10001`
    a remote one. `workers`: actors in the pool (default: one per CPU, or
    per GPU when the cluster has GPUs). `shard_batches`: planned batches per
    task."""

    address: str | None = None
    workers: int | None = None
    shard_batches: int = 4
    max_retries: int = 3
    threads: int | None = None  # intra-op threads per worker; default: the driver's, for bytes equal to a local run
    name = "ray"

    def extract(
        self,
        manifest: Manifest,
        encoder: Encoder,
        cache_root,
        *,
        audio_cfg: AudioConfig | None = None,
        batch_size: int = 16,
        max_batch_seconds: float = 40.0,
        progress=None,
        device: str = "cpu",
    ) -> ExtractResult:
        if encoder.spec.view != "clip":  # each utterance is one job; shards of clips would encode it many times
            raise ConfigError(f"features of the {encoder.spec.view} view are extracted locally (--engine local)")
        ray = _ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as e:
                hint = (
                    ""
                    if os.environ.get("RAY_AUTH_MODE")
                    else " (a cluster with token authentication, Ray's default since 2.5x, needs RAY_AUTH_MODE=token here too)"
                )
                raise EngineError(f"cannot reach the Ray cluster at {self.address or 'a new local runtime'}: {e}{hint}") from e
        cache = FeatureCache(cache_root, encoder.spec)  # the driver checks the spec once and plans
        batches = plan(manifest, batch_size=batch_size, max_batch_seconds=max_batch_seconds)
        todo = [b for b in batches if not all(cache.has(r["sha256"]) for r in b)]
        cached = sum(len(b) for b in batches) - sum(len(b) for b in todo)
        shards = [todo[i : i + self.shard_batches] for i in range(0, len(todo), self.shard_batches)]
        if not shards:  # everything is cached: no worker needs to start
            log.info("extract on Ray: %d cached, nothing to compute -> %s", cached, cache.dir)
            return ExtractResult(0, cached, [], cache.dir)
        gpus = ray.cluster_resources().get("GPU", 0)
        n = max(1, min(self.workers or int(gpus or ray.cluster_resources().get("CPU", 1)), len(shards)))
        worker_cls = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_restarts=self.max_retries, max_task_retries=self.max_retries)(ShardWorker)
        threads = self.threads or torch.get_num_threads()
        actors = [worker_cls.remote(encoder.cfg, cache_root, encoder.spec.weights_sha256, audio_cfg, "cuda" if gpus else "cpu", threads) for _ in range(n)]
        pool = ray.util.ActorPool(actors)
        task = progress.add_task(f"extracting {encoder.family} on Ray ({n} workers)", total=sum(map(len, batches))) if progress else None
        if progress:
            progress.advance(task, cached)
        computed, failed, workers = 0, [], {}
        t0 = time.perf_counter()
        try:
            for res in pool.map_unordered(lambda a, shard: a.run.remote(manifest.root, shard), shards):
                computed += res["computed"]
                cached += res["cached"]
                failed += res["failed"]
                w = workers.setdefault(res["worker"], {"clips": 0, "audio_seconds": 0.0, "seconds": 0.0})
                for k in ("clips", "audio_seconds", "seconds"):
                    w[k] += res[k]
                if progress:
                    progress.advance(task, res["clips"])
        except ray.exceptions.RayError as e:
            raise EngineError(f"a Ray worker failed after {self.max_retries} retries: {str(e).splitlines()[0]}") from e
        finally:
            for a in actors:
                ray.kill(a)
        cache.sweep()  # temp files of workers on this host killed after their last restart
        for w in workers.values():
            w["clips_per_s"] = w["clips"] / w["seconds"] if w["seconds"] else None
        log.info(
            "extract on Ray (%d workers): %d computed, %d cached, %d failed in %.1f s -> %s",
            n,
            computed,
            cached,
            len(failed),
            time.perf_counter() - t0,
            cache.dir,
        )
        return ExtractResult(computed, cached, failed, cache.dir, workers)


class ShardWorker:
    """A Ray actor: one encoder load, then shard after shard of planned
    batches. Plain class; `RayEngine` wraps it with `ray.remote`."""

    def __init__(self, encoder_cfg: EncoderConfig, cache_root, weights_sha256: str, audio_cfg: AudioConfig | None, device: str, threads: int) -> None:
        torch.set_num_threads(threads)
        self.encoder = build_encoder(encoder_cfg).eval().to(device)
        if self.encoder.spec.weights_sha256 != weights_sha256:
            raise EngineError(f"the encoder weights at {encoder_cfg.source} on {socket.gethostname()} differ from the driver's")
        self.cache = FeatureCache(cache_root, self.encoder.spec)
        self.cache.sweep()  # a restarted actor clears what its killed predecessor on this host left
        self.audio_cfg, self.device = audio_cfg, device
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, root, shard: list[list[dict]]) -> dict:
        t0 = time.perf_counter()
        manifest = Manifest(root, [r for b in shard for r in b], [])
        computed, cached, failed = encode_batches(shard, manifest, self.encoder, self.cache, audio_cfg=self.audio_cfg, device=self.device)
        return {
            "worker": self.name,
            "computed": computed,
            "cached": cached,
            "failed": failed,
            "clips": sum(map(len, shard)),
            "audio_seconds": sum(r["duration"] for b in shard for r in b),
            "seconds": time.perf_counter() - t0,
        }


def _ray():
    try:
        import ray  # an optional dependency: imported only when asked for
        import ray.util
    except ImportError as e:
        raise EngineError("--engine ray needs Ray: pip install 'phonemekit[ray]'") from e
    return ray


def make_engine(name: str = "local", *, address: str | None = None, workers: int | None = None, threads: int | None = None):
    if name == "local":
        if address:
            raise ConfigError("--address is for --engine ray")
        return LocalEngine()
    if name == "ray":
        _ray()  # fail now, with what to install, not after the data is read
        return RayEngine(address=address, workers=workers, threads=threads)
    raise ConfigError(f"invalid value for '--engine': {name!r} ({'|'.join(ENGINES)})")
