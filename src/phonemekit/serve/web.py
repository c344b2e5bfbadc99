"""The page for parents and teachers, served beside the API (`serve --web`):
the browser package's static build (web/dist), the model file for the
browser to run itself, silero-vad's model and the live presets (the same
files `phonemekit live` uses), and guided recording into
`COLLECT/<pseudonymous speaker>/<label>/`, each clip checked as `prepare`
checks files. Nothing is recorded unless `--collect DIR` is given.

A recording is one JSON body (`{"speaker", "label", "consent", "audio":
base64 WAV}`): the child's name never sits in a URL, where access logs and
proxies keep it, and is turned into the pseudonym before anything is logged
or written. A JSON body cannot be sent across sites without a CORS
preflight, and the guard refuses foreign origins (`serve.guard`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from phonemekit.config import AudioConfig
from phonemekit.data.audio import REASONS, decode_bytes, write_audio
from phonemekit.errors import AudioValidationError, ConfigError, DataError
from phonemekit.fileio import inside
from phonemekit.live.engine import PRESETS, load_live_config
from phonemekit.privacy import Namer
from phonemekit.serve.common import ApiError, State, labels_of, read_body

log = logging.getLogger(__name__)

# The repository's build of web/ (npm run build); an installed package passes --web DIR.
DEFAULT_DIST = Path(__file__).resolve().parents[3] / "web" / "dist"


def silero_path() -> Path:
    import silero_vad

    return Path(silero_vad.__file__).parent / "data" / "silero_vad_16k_op15.onnx"


def resolved_presets() -> dict[str, dict]:
    """Every live preset with all its settings, as the browser engine reads them."""
    return {p: dataclasses.asdict(load_live_config(p)) for p in PRESETS}


def mount_web(app: FastAPI, state: State, web_dir: Path, collect_dir: Path | None) -> None:
    if not (web_dir / "index.html").is_file():
        raise ConfigError(f"no browser build at {web_dir} (run `make web`, or pass --web DIR holding index.html)")
    presets = resolved_presets()
    namer = Namer()

    @app.get("/model.onnx", include_in_schema=False)
    async def model_file():
        return FileResponse(state.path, media_type="application/octet-stream")

    @app.get("/silero_vad.onnx", include_in_schema=False)
    async def silero():
        return FileResponse(silero_path(), media_type="application/octet-stream")

    @app.get("/presets/{name}.json", include_in_schema=False)
    async def preset(name: str):
        if name not in presets:
            raise ApiError(404, "unknown_preset", f"presets: {', '.join(presets)}")
        return presets[name]

    @app.get("/api/page", summary="What the page shows: labels with IPA and example words, whether recording is on")
    async def page() -> dict:
        return {"labels": labels_of(state.classifier), "collect": collect_dir is not None}

    @app.post(
        "/api/recordings",
        summary="Save one guided recording (only with --collect DIR)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["speaker", "label", "consent", "audio"],
                            "properties": {
                                "speaker": {"type": "string"},
                                "label": {"type": "string"},
                                "consent": {"type": "boolean"},
                                "audio": {"type": "string", "format": "byte"},
                            },
                        }
                    }
                },
            }
        },
    )
    async def recording(request: Request) -> dict:
        if collect_dir is None:
            raise ApiError(403, "collection_off", "this server does not keep recordings (start it with --collect DIR)")
        if request.url.query:
            raise ApiError(400, "bad_request", "send the speaker, label and consent in the JSON body, not in the URL")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, "not_json", "a recording is a JSON body (Content-Type: application/json)")
        speaker, label, consent, audio = _recording_fields(await read_body(request, state.cfg))
        pseudonym = namer.pseudonym(speaker)  # the name goes no further than this line
        del speaker
        if consent is not True:
            raise ApiError(403, "no_consent", "recording needs the consent box ticked")
        if label not in state.classifier.labels:
            raise ApiError(400, "unknown_label", "that label is not a sound of this model")
        try:
            clip = decode_bytes(audio, AudioConfig(max_bytes=10_000_000), name="recording")
        except AudioValidationError as e:
            raise ApiError(422, e.reason, e.detail or REASONS.get(e.reason, e.reason)) from None
        rel = f"{pseudonym}/{label}/{clip.sha256[:16]}.wav"
        try:
            path = inside(collect_dir, rel)  # labels are checked when a model loads; this holds even if that check is bypassed
        except DataError:
            raise ApiError(400, "bad_label", "that label cannot be a folder name") from None
        try:
            write_audio(path, clip.samples, exclusive=True)
            log.info("recorded %s", rel)
        except FileExistsError:  # named by content: the same clip is already kept
            log.info("already recorded %s", rel)
        return {"path": rel, "duration_s": round(clip.duration, 3), "warnings": clip.warnings}

    app.mount("/", StaticFiles(directory=web_dir, html=True), name="web")


def _recording_fields(body: bytes) -> tuple[str, object, object, bytes]:
    """speaker, label, consent and the audio's bytes from a recording's JSON body."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    speaker, audio = data.get("speaker"), data.get("audio")
    if not isinstance(speaker, str) or not 1 <= len(speaker.strip()) <= 200:
        raise ApiError(400, "bad_request", "speaker: 1-200 characters naming the child (kept only as a pseudonym)")
    if not isinstance(audio, str) or not audio:
        raise ApiError(400, "bad_request", "audio: the clip as base64 WAV")
    try:
        raw = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_request", "audio is not base64") from None
    return speaker.strip(), data.get("label"), data.get("consent"), raw


def write_static_assets(dist: Path) -> None:
    """Presets and silero-vad's model into a static build, for a copy of the page served without phonemekit."""
    import json
    import shutil

    (dist / "presets").mkdir(parents=True, exist_ok=True)
    for name, cfg in resolved_presets().items():
        (dist / "presets" / f"{name}.json").write_text(json.dumps(cfg, indent=1) + "\n")
    shutil.copy(silero_path(), dist / "silero_vad.onnx")


if __name__ == "__main__":  # `make web`: python -m phonemekit.serve.web web/dist
    import sys

    write_static_assets(Path(sys.argv[1]))
