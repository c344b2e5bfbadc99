"""Load test on loopback: N concurrent HTTP clients classifying clips and M
concurrent streams sending audio in real time, for a bounded time.

Reports requests per second, p50/p99 latency, errors (want 0) and, when
the command started the server itself, the server's peak RSS (VmHWM).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackServer:
    """An app served by uvicorn on 127.0.0.1 and a free port, in a thread of
    this process, for as long as the `with` block lasts (tests, browser timings)."""

    def __init__(self, app, start_timeout_s: float = 30.0, log_level: str = "warning") -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level=log_level, ws_max_size=1 << 21))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(self.server.serve()), daemon=True)
        self.start_timeout_s = start_timeout_s

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + self.start_timeout_s
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def peak_rss_mb(pid: int) -> float | None:
    """High-water mark of a process's resident memory (Linux /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def _http_client(url: str, clips: list[bytes], until: float, lat: list[float], errors: list[str], headers: dict) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        i = 0
        while time.perf_counter() < until:
            body = clips[i % len(clips)]
            i += 1
            t0 = time.perf_counter()
            try:
                r = await client.post(f"{url}/classify", content=body, headers={"content-type": "audio/wav"})
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}: {r.text[:100]}")
                else:
                    lat.append(time.perf_counter() - t0)
            except httpx.HTTPError as e:
                errors.append(f"{type(e).__name__}: {e}")


async def _stream_client(url: str, pcm: bytes, until: float, finals: list[int], errors: list[str], token: str | None) -> None:
    import websockets

    ws_url = url.replace("http://", "ws://") + "/stream?sample_rate=16000"
    headers = {"Authorization": f"Bearer {token}"} if token else None
    block = 512 * 2  # 32 ms of PCM16
    n = 0
    try:
        async with websockets.connect(ws_url, max_size=1 << 22, additional_headers=headers) as ws:
            reader = asyncio.create_task(_read_events(ws, finals, errors))
            start = time.perf_counter()
            i = 0
            while time.perf_counter() < until:
                chunk = pcm[(i * block) % len(pcm) : (i * block) % len(pcm) + block]
                await ws.send(chunk)
                i += 1
                n += len(chunk) // 2
                delay = start + n / 16000 - time.perf_counter()  # real time, as a microphone sends
                if delay > 0:
                    await asyncio.sleep(delay)
            await ws.send(json.dumps({"type": "end"}))
            await asyncio.wait_for(reader, 30)
    except Exception as e:  # a load test records every failure instead of stopping at the first
        errors.append(f"stream: {type(e).__name__}: {e}")


async def _read_events(ws, finals: list[int], errors: list[str]) -> None:
    import websockets

    try:
        async for msg in ws:
            ev = json.loads(msg)
            if ev["type"] == "final":
                finals.append(1)
            elif ev["type"] == "error":
                errors.append(f"stream event: {ev}")
    except websockets.ConnectionClosed:
        pass


async def _run(url: str, clips: list[bytes], pcm: bytes, clients: int, streams: int, seconds: float, token: str | None) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    finals: list[int] = []
    headers = {"authorization": f"Bearer {token}"} if token else {}
    t0 = time.perf_counter()
    until = t0 + seconds
    await asyncio.gather(
        *[_http_client(url, clips, until, lat, errors, headers) for _ in range(clients)],
        *[_stream_client(url, pcm, until, finals, errors, token) for _ in range(streams)],
    )
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {
        "clients": clients,
        "streams": streams,
        "seconds": round(wall, 2),
        "requests": len(lat),
        "requests_per_s": round(len(lat) / wall, 1),
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "stream_finals": len(finals),
        "errors": len(errors),
        "error_examples": errors[:5],
    }


def load_test(url: str, clips: list[bytes], pcm: bytes, *, clients: int = 4, streams: int = 2, seconds: float = 10.0, token: str | None = None) -> dict:
    """Drive a running server at `url`."""
    if not 0 < seconds <= 600:
        raise ValueError("a load test runs for (0, 600] seconds")
    return asyncio.run(_run(url.rstrip("/"), clips, pcm, clients, streams, seconds, token))


def load_test_model(model: Path, clips: list[bytes], pcm: bytes, *, clients: int, streams: int, seconds: float, workers: int = 2) -> dict:
    """Start `phonemekit serve MODEL` on a free loopback port, load it, stop it; adds the server's peak RSS."""
    import httpx

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "phonemekit.cli",
        "serve",
        str(model),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--max-requests",
        str(max(8, clients)),
        "--max-streams",
        str(max(8, streams)),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the server did not start: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}")
            time.sleep(0.2)
        idle_rss = peak_rss_mb(proc.pid)
        res = load_test(url, clips, pcm, clients=clients, streams=streams, seconds=seconds)
        res["server_rss_mb_at_start"] = round(idle_rss, 1) if idle_rss else None
        res["server_peak_rss_mb"] = round(peak_rss_mb(proc.pid) or 0, 1) or None
        return res
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
