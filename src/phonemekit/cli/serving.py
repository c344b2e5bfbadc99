"""Serving commands: serve, loadtest, browser-bench."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from phonemekit.cli.base import JsonOut, command
from phonemekit.console import console

log = logging.getLogger("phonemekit")


@command()
def serve(
    model: Annotated[Path, typer.Argument(help="An end-to-end .onnx model, or a bundled model by name.")] = Path("children"),
    host: Annotated[str, typer.Option(help="Interface to bind; loopback by default.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    token: Annotated[str | None, typer.Option(envvar="PHONEMEKIT_TOKEN", help="Require this bearer token (or env PHONEMEKIT_TOKEN).")] = None,
    cors: Annotated[list[str] | None, typer.Option(help="Allow browser requests from this origin (repeatable).")] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(help="Answer this Host name too (repeatable; '*': any).")] = None,
    stream_minutes: Annotated[float, typer.Option(min=0.1, help="Close a stream open this long.")] = 30.0,
    watch: Annotated[bool, typer.Option(help="Reload the model when its file changes, keeping open streams.")] = False,
    record: Annotated[Path | None, typer.Option(help="Write received audio to this folder (off by default: audio stays in memory).")] = None,
    max_body_mb: Annotated[float, typer.Option(min=0.01, max=100)] = 5.0,
    max_clip_seconds: Annotated[float, typer.Option(min=0.1, max=600)] = 10.0,
    max_requests: Annotated[int, typer.Option(min=1, help="Classifications in flight; more wait, then get 503.")] = 8,
    max_streams: Annotated[int, typer.Option(min=1)] = 8,
    workers: Annotated[int, typer.Option(min=1, help="Inference threads.")] = 2,
    idle_timeout: Annotated[float, typer.Option(min=0.1, help="Close a stream after this many seconds without audio.")] = 30.0,
    web: Annotated[bool, typer.Option(help="Also serve the practice and recording page at / (the browser runs the model itself).")] = False,
    web_dir: Annotated[Path | None, typer.Option(help="The page's build folder (default: this checkout's web/dist, from `make web`).")] = None,
    collect: Annotated[Path | None, typer.Option(help="Save the page's guided recordings here (COLLECT/<pseudonym>/<label>/).")] = None,
    profile: Annotated[Path | None, typer.Option(help="A speaker profile (`phonemekit enrol`) for every request; a stream may send its own.")] = None,
) -> None:
    """Serve a model to games: HTTP /classify, WebSocket /stream, /model, /health (OpenAPI at /docs)."""
    from phonemekit.serve.app import ServeConfig
    from phonemekit.serve.app import serve as run_server
    from phonemekit.serve.guard import LOOPBACK_HOSTS
    from phonemekit.serve.web import DEFAULT_DIST

    if host not in LOOPBACK_HOSTS:
        log.warning("binding %s: the server is reachable from other machines%s", host, "" if token else " and has no --token")
    if record:
        record.mkdir(parents=True, exist_ok=True)
        log.warning("recording every received clip and stream to %s", record)
    hosts = (*LOOPBACK_HOSTS, *(allowed_host or ()))
    if host not in LOOPBACK_HOSTS and not allowed_host:
        log.warning("only loopback host names are answered; pass --allowed-host NAME for the name clients use to reach %s", host)
    cfg = ServeConfig(
        token=token,
        cors_origins=tuple(cors or ()),
        allowed_hosts=hosts,
        max_stream_wall_s=stream_minutes * 60,
        max_body_bytes=int(max_body_mb * 1e6),
        max_clip_seconds=max_clip_seconds,
        max_requests=max_requests,
        max_streams=max_streams,
        workers=workers,
        idle_timeout_s=idle_timeout,
        record_dir=record,
        watch_s=1.0 if watch else None,
        web_dir=(web_dir or DEFAULT_DIST) if web or web_dir else None,
        collect_dir=collect,
        profile=profile,
    )
    if cfg.web_dir:
        log.info("page at http://%s:%d/", host, port)
    run_server(model, cfg, host=host, port=port)


@command()
def loadtest(
    model: Annotated[Path, typer.Argument(help="An end-to-end .onnx model; a server for it is started on a free loopback port.")],
    file: Annotated[Path, typer.Option(help="A replay .wav (see `make-replay`): streams send it, HTTP clients post its clips.")],
    clients: Annotated[int, typer.Option(min=0, max=256)] = 4,
    streams: Annotated[int, typer.Option(min=0, max=64)] = 2,
    seconds: Annotated[float, typer.Option(min=1, max=600)] = 10.0,
    workers: Annotated[int, typer.Option(min=1)] = 2,
    json_out: JsonOut = None,
) -> None:
    """Load-test the server on loopback: requests/s, p50/p99 latency, errors, peak RSS."""
    import io
    import json as _json

    import numpy as np
    import soundfile as sf

    from phonemekit.config import AudioConfig
    from phonemekit.data.audio import load_audio
    from phonemekit.fileio import read_json, write_json
    from phonemekit.serve.loadtest import load_test_model

    x = load_audio(file, AudioConfig(max_seconds=3600, max_bytes=2_000_000_000)).samples
    labels = file.with_suffix(".labels.json")
    spans = (
        [(t["start"] - 0.1, t["end"] + 0.1) for t in read_json(labels)] if labels.exists() else [(t, t + 1.0) for t in np.arange(0, len(x) / 16000 - 1, 1.0)]
    )
    clips = []
    for a, b in spans[:64]:
        buf = io.BytesIO()
        sf.write(buf, x[max(0, int(a * 16000)) : int(b * 16000)], 16000, subtype="PCM_16", format="WAV")
        clips.append(buf.getvalue())
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    res = load_test_model(model, clips, pcm, clients=clients, streams=streams, seconds=seconds, workers=workers)
    typer.echo(_json.dumps(res, indent=2))
    if json_out:
        write_json(json_out, res)


@command("browser-bench")
def browser_bench(
    models: Annotated[list[Path], typer.Argument(help="End-to-end .onnx files (fp32 and/or int8).")],
    web_dir: Annotated[Path | None, typer.Option(help="The page's build (default: web/dist from `make web`).")] = None,
    clips: Annotated[int, typer.Option(min=1, max=100)] = 10,
    json_out: JsonOut = None,
) -> None:
    """Model size, load time and per-clip (1 s) inference time in headless Chromium (onnxruntime-web, WASM)."""
    from phonemekit.fileio import write_json
    from phonemekit.serve.browserbench import browser_timings
    from phonemekit.serve.web import DEFAULT_DIST

    rows = [browser_timings(m, web_dir or DEFAULT_DIST, clips=clips) for m in models]
    table = Table("model", "MB", "load ms", "1 s clip ms (median / max)", "RTF")
    for r in rows:
        table.add_row(r["model"], f"{r['bytes'] / 1e6:.1f}", str(r["load_ms"]), f"{r['infer_ms_median']} / {r['infer_ms_max']}", f"{r['rtf']:.4f}")
    console.print(table)
    if json_out:
        write_json(json_out, rows)
