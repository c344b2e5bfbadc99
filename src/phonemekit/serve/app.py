"""The game's server: an exported end-to-end model behind HTTP and a
WebSocket, on FastAPI/uvicorn.

    GET  /health              liveness (no token needed)
    GET  /model               labels (IPA, example word), rates, hashes, calibration, versions
    POST /classify            one clip: WAV/FLAC/OGG bytes, or raw PCM16 with ?sample_rate=;
                              ?expect=LABEL adds the calibrated verdict, ?top_k=
    POST /assess              a word's recording: a verdict for every sound (?word= or ?phones=, ?mode=; serve.assess)
    WS   /stream              PCM16 frames in (?sample_rate= at open), the events of
                              `phonemekit live` out (one engine, `live.engine`); {"word": "cat"}
                              makes a `word` event (verdicts per sound) follow every sound heard;
                              {"profile": P} adapts this stream to an enrolled child (`phonemekit enrol`)

Host names, browser origins and the token are checked before any route
(`serve.guard`). Hostile input is answered, never fatal: every malformed request gets a JSON
error with a 4xx status; a body or clip over its limit is refused while it
is read; concurrent requests and streams are capped (503 / close 1013: try
again later) so a burst queues or is turned away instead of exhausting the
machine. Inference runs in worker threads so the event loop keeps
answering. Audio is kept in memory only, unless `record_dir` is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import anyio
import numpy as np
import soxr
from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from phonemekit import __version__
from phonemekit.assess.assess import WordSession
from phonemekit.assess.lexicon import expected_sounds
from phonemekit.config import AudioConfig
from phonemekit.data.audio import REASONS, decode_bytes, decode_pcm16, pcm16_to_float, write_audio
from phonemekit.deploy import bundled
from phonemekit.deploy.runtime import Classifier, keep_profile
from phonemekit.errors import AudioValidationError, ConfigError, DataError, PhonemekitError
from phonemekit.evaluation.calibration import check_expect
from phonemekit.evaluation.enrolment import SpeakerProfile
from phonemekit.live.engine import LiveEngine, load_live_config
from phonemekit.live.vad import SR
from phonemekit.serve.assess import mount_assess
from phonemekit.serve.common import ApiError, State, labels_of, read_body
from phonemekit.serve.guard import LOOPBACK_HOSTS, SUBPROTOCOL, TOKEN_PREFIX, Guard, strip_queries_from_logs
from phonemekit.serve.web import mount_web

log = logging.getLogger(__name__)

# Status for each audio rejection reason (data.audio.REASONS).
_STATUS = {"too_large": 413, "too_long": 413, "not_audio": 415, "wrong_extension": 415}


@dataclass(frozen=True)
class ServeConfig:
    token: str | None = None  # bearer token; None: no auth
    cors_origins: tuple[str, ...] = ()  # browser origins allowed besides the server's own
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS  # Host header names answered ("*": any); refuses DNS rebinding
    max_body_bytes: int = 5_000_000
    max_clip_seconds: float = 10.0
    max_requests: int = 8  # classifications in flight; more wait up to queue_timeout_s, then 503
    queue_timeout_s: float = 2.0
    max_streams: int = 8
    workers: int = 2  # inference threads
    read_timeout_s: float = 10.0  # a request body must arrive within this
    idle_timeout_s: float = 30.0  # a stream with no frame for this long is closed
    max_stream_seconds: float = 1800.0  # audio a stream may deliver
    max_stream_wall_s: float = 1800.0  # wall-clock time a stream may stay open
    min_audio_rate: float = 0.5  # seconds of audio per wall-clock second a stream must keep up (after the grace)
    starve_grace_s: float = 5.0
    max_frame_bytes: int = 1 << 20
    max_bad_frames: int = 20  # then the stream is closed (1003)
    record_dir: Path | None = None  # audio is written only when this is set
    web_dir: Path | None = None  # serve the practice and recording page from this build (serve.web)
    collect_dir: Path | None = None  # the page's guided recordings are saved here (off when None)
    watch_s: float | None = None  # poll the model file for changes every this many seconds
    profile: Path | None = None  # a speaker profile (`phonemekit enrol`) for every request; a stream may send its own

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_requests", "max_streams", "workers", "max_frame_bytes", "max_bad_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"invalid value for {name!r}: expected >= 1")
        if not 0 < self.max_clip_seconds <= 600:
            raise ConfigError("invalid value for 'max_clip_seconds': expected (0, 600]")
        if self.token is not None and (not self.token or not all(c.isascii() and (c.isalnum() or c in "-._~") for c in self.token)):
            raise ConfigError("a token is letters, digits and -._~ (it travels in a header and a WebSocket subprotocol)")
        if not 0 <= self.min_audio_rate <= 1:
            raise ConfigError("invalid value for 'min_audio_rate': expected [0, 1]")


def model_info(clf: Classifier) -> dict:
    import onnxruntime

    m = clf.meta
    return {
        "name": clf.name,
        "labels": labels_of(clf),
        "sample_rate": clf.sample_rate,
        "form": clf.form,
        "precision": m.get("precision"),
        "encoder_spec": m.get("encoder_spec"),
        "weights": m.get("weights"),
        "hashes": {k: m.get(k) for k in ("integrity_sha256", "graph_sha256", "checkpoint_sha256")},
        "calibration": clf.calibration.to_dict() if clf.calibration else None,
        "enrollable": clf.enrollable,  # a stream may send {"profile": ...} (`phonemekit enrol`)
        "profile": {"shots": clf.profile.shots} if clf.profile else None,
        "max_seconds": m["max_frames"] / m["frame_rate"],
        "versions": {"phonemekit": __version__, "model_exported_by": m.get("phonemekit_version"), "onnxruntime": onnxruntime.__version__},
    }


def create_app(model_path: str | Path, cfg: ServeConfig | None = None, *, classifier: Classifier | None = None) -> FastAPI:
    cfg = cfg or ServeConfig()
    model_path = bundled.resolve(model_path)  # a bundled model by name: its exported file
    clf = classifier or Classifier.load(model_path)
    if clf.form != "e2e":
        raise ConfigError(f"{model_path} is a head-only model; serve the end-to-end export (NAME.e2e.onnx)")
    if cfg.profile is not None:
        clf = clf.with_profile(SpeakerProfile.load(cfg.profile))
    state = State(model_path, cfg, clf, asyncio.Semaphore(cfg.max_requests), anyio.CapacityLimiter(cfg.workers))
    audio_cfg = AudioConfig(max_seconds=cfg.max_clip_seconds, max_bytes=cfg.max_body_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(_watch(state)) if cfg.watch_s else None
        yield
        if task:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        title="phonemekit",
        version=__version__,
        lifespan=lifespan,
        description='Classify single speech sounds, and answer "did the child say it?" with a calibrated verdict.',
    )
    app.state.phonemekit = state
    strip_queries_from_logs()
    app.add_middleware(Guard, token=cfg.token, allowed_hosts=cfg.allowed_hosts, cors_origins=cfg.cors_origins)
    if cfg.cors_origins:  # outside the guard: preflights are answered here, and refusals carry CORS headers
        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return JSONResponse({"error": e.error, "detail": e.detail}, status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        detail = "; ".join(f"{'.'.join(str(x) for x in err['loc'][1:])}: {err['msg']}" for err in e.errors())
        return JSONResponse({"error": "bad_request", "detail": detail}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        return JSONResponse({"error": "http_error", "detail": str(e.detail)}, status_code=e.status_code)

    @app.get("/health", summary="Liveness")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": state.classifier.name,
            "uptime_s": round(time.time() - state.started, 1),
            "streams": len(state.engines),
            "served": state.served,
            "reloads": state.reloads,
        }

    @app.get("/model", summary="What the loaded model recognises and where it came from")
    async def model() -> dict:
        return model_info(state.classifier)

    @app.post(
        "/classify",
        summary="Classify one clip",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "audio/wav": {"schema": {"type": "string", "format": "binary"}},
                    "audio/flac": {"schema": {"type": "string", "format": "binary"}},
                    "audio/ogg": {"schema": {"type": "string", "format": "binary"}},
                    "application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"},
                        "description": "a WAV/FLAC/OGG file, or raw PCM16 (little-endian mono) with ?sample_rate=",
                    },
                },
            }
        },
    )
    async def classify(
        request: Request,
        expect: str | None = Query(None, description="the sound the game asked for: adds the verdict"),
        top_k: int = Query(3, ge=1, le=100),
        sample_rate: int | None = Query(None, description="raw PCM16 input: its sample rate"),
    ) -> dict:
        clf = state.classifier
        if expect is not None:
            _check_expect(expect, clf)
        body = await read_body(request, cfg)
        try:
            clip = decode_pcm16(body, sample_rate, audio_cfg) if sample_rate is not None else decode_bytes(body, audio_cfg)
        except AudioValidationError as e:
            raise ApiError(_STATUS.get(e.reason, 422), e.reason, e.detail or REASONS.get(e.reason, e.reason)) from None
        try:
            await asyncio.wait_for(state.requests.acquire(), cfg.queue_timeout_s)
        except TimeoutError:
            raise ApiError(503, "busy", f"{cfg.max_requests} classifications in flight; try again", {"Retry-After": "1"}) from None
        try:
            p = await anyio.to_thread.run_sync(lambda: clf.probs([clip.samples])[0], limiter=state.limiter)
        except PhonemekitError as e:
            raise ApiError(422, "unprocessable", str(e)) from None
        finally:
            state.requests.release()
        state.served += 1
        if cfg.record_dir:
            write_audio(cfg.record_dir / unique_name("clip"), clip.samples, exclusive=True)
        top = np.argsort(-p)[: min(top_k, len(p))]
        out = {
            "model": clf.name,
            "duration_s": round(clip.duration, 3),
            "warnings": clip.warnings,
            "top_k": [{"label": clf.labels[i], "probability": round(float(p[i]), 6)} for i in top],
        }
        if expect is not None:
            out["verdict"] = clf.verdict_of(p, expect)
        return out

    @app.websocket("/stream")
    async def stream(ws: WebSocket, sample_rate: str = str(SR), preset: str = "balanced", expect: str | None = None):
        # Query values arrive as text and are checked here, so that a bad one gets an error event, not a bare close.
        # A browser that sent its token as a subprotocol must be answered with one it offered.
        offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
        await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else next((p for p in offered if p.startswith(TOKEN_PREFIX)), None))
        if len(state.engines) >= cfg.max_streams:
            await _send(ws, {"type": "error", "error": "busy", "detail": f"{cfg.max_streams} streams open; try again later"})
            await ws.close(code=1013, reason="busy")
            return
        try:
            rate = int(sample_rate) if sample_rate.isdigit() else 0
            if not 8000 <= rate <= 48000:
                raise ConfigError(f"sample_rate {sample_rate[:20]!r} (expected 8000-48000 Hz)")
            word = _Word()
            engine = LiveEngine(state.classifier, load_live_config(preset), expect=expect, on_final=word.hear)
        except ConfigError as e:
            await _send(ws, {"type": "error", "error": "bad_request", "detail": str(e)})
            await ws.close(code=1003, reason="bad request")
            return
        state.engines.add(engine)
        try:
            await _run_stream(ws, engine, rate, state, word)
        finally:
            state.engines.discard(engine)

    mount_assess(app, state)
    if cfg.web_dir is not None:  # last: the page's static files sit under every route above
        mount_web(app, state, cfg.web_dir, cfg.collect_dir)
    return app


def unique_name(kind: str) -> str:
    """A recording's file name: time for the reader, a random part so that two never collide."""
    return f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:16]}.wav"


def _check_expect(expect: str, clf: Classifier) -> None:
    try:
        check_expect(expect, clf.labels)
    except ConfigError as e:
        raise ApiError(400, "unknown_label", str(e)) from None


async def _send(ws: WebSocket, event: dict) -> None:
    await ws.send_text(json.dumps(event))


class _Word:
    """The word a stream expects, if any (`{"word": "cat"}`): it hears the
    engine's labelled segments and judges its sounds after each."""

    session: WordSession | None = None

    def hear(self, start: float, end: float, probs: np.ndarray) -> None:
        if self.session is not None:
            self.session.hear(start, end, probs)

    def expect(self, clf: Classifier, cmd: dict) -> dict:
        word, phones = cmd.get("word"), cmd.get("phones")
        if not isinstance(word or phones, str) or (word is not None and phones is not None) or len(word or phones) > 400:
            raise ConfigError('a word is {"word": "cat"} or {"phones": "k a_ae t"}: text, one of the two')
        self.session = WordSession(clf, expected_sounds(clf.labels, word=word, phones=phones), word)
        return self.session.verdicts(final=False)

    def end(self) -> dict | None:
        session, self.session = self.session, None
        return session.verdicts(final=True) if session else None


async def _run_stream(ws: WebSocket, engine: LiveEngine, sample_rate: int, state: State, word: _Word) -> None:
    """Frames in, events out, until the client ends it ({"type": "end"}), goes quiet, or breaks the rules.
    With a word expected, a `word` event follows every sound heard, and a final one `{"type": "word_end"}`."""
    cfg = state.cfg
    resampler = soxr.ResampleStream(sample_rate, SR, 1, dtype="float32") if sample_rate != SR else None
    bad, received, opened = 0, 0.0, time.monotonic()
    recorded: list[np.ndarray] = []

    async def run(fn) -> None:
        for ev in await anyio.to_thread.run_sync(fn, limiter=state.limiter):
            await _send(ws, ev)
        if word.session is not None and word.session.changed:
            await _send(ws, word.session.verdicts(final=False))

    try:
        while True:
            left = cfg.max_stream_wall_s - (time.monotonic() - opened)
            try:
                msg = await asyncio.wait_for(ws.receive(), max(0.0, min(cfg.idle_timeout_s, left)))
            except TimeoutError:
                msg = None
                if left > cfg.idle_timeout_s:
                    await run(engine.flush)
                    await ws.close(code=1000, reason="idle")
                    return
            if msg is not None and msg["type"] == "websocket.disconnect":
                return
            # A stream holds a slot: one open for ever, or trickling audio slower than it could be spoken, keeps it from a real child.
            elapsed = time.monotonic() - opened
            if elapsed >= cfg.max_stream_wall_s or (elapsed > cfg.starve_grace_s and received < cfg.min_audio_rate * elapsed):
                why = (
                    f"open longer than {cfg.max_stream_wall_s:g} s"
                    if elapsed >= cfg.max_stream_wall_s
                    else f"{received:.2f} s of audio in {elapsed:.1f} s (a stream must keep up {cfg.min_audio_rate:g}x real time)"
                )
                await _send(ws, {"type": "error", "error": "starved", "detail": f"stream closed: {why}"})
                await run(engine.flush)
                await ws.close(code=1008, reason="starved")
                return
            error = None
            if msg.get("bytes") is not None:
                data = msg["bytes"]
                if len(data) > cfg.max_frame_bytes:
                    error = f"frame of {len(data)} bytes > {cfg.max_frame_bytes}"
                else:
                    try:
                        x = pcm16_to_float(data, "frame")
                    except AudioValidationError as e:
                        error = e.detail
                    else:
                        received += len(x) / sample_rate
                        if received > cfg.max_stream_seconds:
                            await _send(ws, {"type": "error", "error": "too_long", "detail": f"stream longer than {cfg.max_stream_seconds:g} s"})
                            await run(engine.flush)
                            await ws.close(code=1009, reason="too long")
                            return
                        if resampler is not None:
                            x = resampler.resample_chunk(x)
                        if cfg.record_dir:
                            recorded.append(x)
                        await run(lambda x=x: engine.feed(x))
            else:
                try:
                    cmd = json.loads(msg.get("text") or "")
                    if not isinstance(cmd, dict):
                        raise ValueError("expected a JSON object")
                except ValueError as e:
                    error = f"not a JSON command: {e}"
                else:
                    if cmd.get("type") == "end":
                        await run(engine.flush)
                        if (last := word.end()) is not None:
                            await _send(ws, last)
                        await _send(ws, {"type": "end", "t_audio": round(engine.now, 4)})
                        await ws.close(code=1000)
                        return
                    if "expect" in cmd:
                        try:
                            engine.set_expect(cmd["expect"])
                            await _send(ws, {"type": "expect", "expected": cmd["expect"], "t_audio": round(engine.now, 4)})
                        except (ConfigError, TypeError) as e:
                            error = str(e)
                    elif "profile" in cmd:
                        try:
                            # null: back to the server's own classifier (and its --profile, if any)
                            profile = SpeakerProfile.from_dict(cmd["profile"]) if cmd["profile"] is not None else None
                            engine.swap_classifier(state.classifier.with_profile(profile) if profile else state.classifier)
                            await _send(ws, {"type": "profile", "enrolled": profile is not None, "shots": profile.shots if profile else {}})
                        except DataError as e:
                            error = f"profile refused: {e}"
                    elif "word" in cmd or "phones" in cmd:
                        try:
                            await _send(ws, word.expect(engine.classifier, cmd))
                        except ConfigError as e:
                            error = str(e)
                    elif cmd.get("type") == "word_end":
                        await run(engine.flush)  # a sound still open is part of the word
                        last = word.end()
                        if last is None:
                            error = 'no word expected: send {"word": "cat"} first'
                        else:
                            await _send(ws, last)
                    else:
                        error = (
                            f'unknown command {cmd!r:.80} (known: {{"expect": LABEL}}, {{"word": W}}, {{"phones": P}}, {{"profile": P}}, '
                            '{"type": "word_end"}, {"type": "end"})'
                        )
            if error:
                bad += 1
                await _send(ws, {"type": "error", "error": "bad_frame", "detail": error})
                if bad >= cfg.max_bad_frames:
                    await ws.close(code=1003, reason="too many bad frames")
                    return
    except WebSocketDisconnect:
        return
    finally:
        if cfg.record_dir and recorded:
            write_audio(cfg.record_dir / unique_name("stream"), np.concatenate(recorded), exclusive=True)


async def _watch(state: State) -> None:
    """Reload a changed model file; open streams switch between frames, none is dropped."""
    mtime = state.path.stat().st_mtime_ns
    while True:
        await asyncio.sleep(state.cfg.watch_s)
        with suppress(OSError):
            m = state.path.stat().st_mtime_ns
            if m == mtime:
                continue
            mtime = m
            try:
                clf = await anyio.to_thread.run_sync(Classifier.load, state.path)
            except PhonemekitError as e:  # a half-copied file: keep serving the old model
                log.warning("not reloading %s: %s", state.path, e)
                continue
            state.classifier = keep_profile(clf, state.classifier.profile)
            for engine in list(state.engines):
                engine.swap_classifier(keep_profile(clf, engine.classifier.profile))
            state.reloads += 1
            log.info("reloaded %s", state.path)


def serve(model_path: str | Path, cfg: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the server until interrupted."""
    import uvicorn

    app = create_app(model_path, cfg)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=5, ws_max_size=cfg.max_frame_bytes + 1024)
