"""The page for parents and teachers, served beside the API (`serve --web`):
the browser package's static build (web/dist), the model file for the
browser to run itself, silero-vad's model and the live presets (the same
files `phonemekit live` uses), and guided recording into
`COLLECT/<pseudonymous speaker>/<label>/`, each clip checked as `prepare`
checks files. Nothing is recorded unless `--collect DIR` is given.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from phonemekit.config import AudioConfig
from phonemekit.data.audio import REASONS, decode_bytes, write_audio
from phonemekit.errors import AudioValidationError, ConfigError
from phonemekit.live.engine import PRESETS, load_live_config
from phonemekit.privacy import Namer
from phonemekit.serve.app import ApiError, State, labels_of, read_body

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

    @app.post("/api/recordings", summary="Save one guided recording (only with --collect DIR)")
    async def recording(request: Request, speaker: str = Query(..., min_length=1, max_length=200), label: str = Query(...),
                        consent: bool = Query(False)) -> dict:
        if collect_dir is None:
            raise ApiError(403, "collection_off", "this server does not keep recordings (start it with --collect DIR)")
        if not consent:
            raise ApiError(403, "no_consent", "recording needs the consent box ticked")
        if label not in state.classifier.labels:
            raise ApiError(400, "unknown_label", f"{label!r} is not a sound of this model")
        body = await read_body(request, state.cfg)
        try:
            clip = decode_bytes(body, AudioConfig(max_bytes=10_000_000), name="recording")
        except AudioValidationError as e:
            raise ApiError(422, e.reason, e.detail or REASONS.get(e.reason, e.reason)) from None
        rel = Path(namer.pseudonym(speaker)) / label / f"{clip.sha256[:16]}.wav"
        write_audio(collect_dir / rel, clip.samples)
        log.info("recorded %s", rel)
        return {"path": str(rel), "duration_s": round(clip.duration, 3), "warnings": clip.warnings}

    app.mount("/", StaticFiles(directory=web_dir, html=True), name="web")


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
