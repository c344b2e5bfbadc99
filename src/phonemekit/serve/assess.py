"""`POST /assess`: the verdict for every sound of a word (`phonemekit.assess`)
in one request: the recording as the body, the word (or its sounds) and the
mode as parameters. The same JSON as `phonemekit assess --json`."""

from __future__ import annotations

import anyio
from fastapi import FastAPI, Query, Request

from phonemekit.assess import assess_expected
from phonemekit.assess.assess import MODES
from phonemekit.assess.lexicon import expected_sounds
from phonemekit.config import AudioConfig
from phonemekit.data.audio import REASONS, decode_bytes
from phonemekit.errors import AudioValidationError, ConfigError, PhonemekitError
from phonemekit.serve.common import ApiError, State, read_body

MAX_WORD_SECONDS = 30.0


def mount_assess(app: FastAPI, state: State) -> None:
    @app.post("/assess", summary="A verdict for every sound of a word: correct, substituted (with the sound heard) or missing")
    async def assess_route(request: Request, word: str | None = Query(None, max_length=40, description="the word the child was asked to read"),
                           phones: str | None = Query(None, max_length=400, description='its sounds instead, e.g. "k a_ae t"'),
                           text: str | None = Query(None, max_length=400, description='a sentence instead, e.g. "the cat sat"'),
                           mode: str = Query("segment", description=" | ".join(MODES))) -> dict:  # fmt: skip
        clf = state.classifier
        if sum(x is not None for x in (word, phones, text)) != 1:
            raise ApiError(400, "bad_request", "give word, text or phones, one of the three")
        if mode not in MODES:
            raise ApiError(400, "bad_request", f"mode: {' | '.join(MODES)}")
        try:
            expected_sounds(clf.labels, word=word, phones=phones, text=text)  # checked before the body is read
        except ConfigError as e:
            raise ApiError(400, "unknown_word", str(e)) from None
        body = await read_body(request, state.cfg)
        try:
            clip = decode_bytes(body, AudioConfig(max_seconds=MAX_WORD_SECONDS, max_bytes=state.cfg.max_body_bytes))
        except AudioValidationError as e:
            raise ApiError(413 if e.reason in ("too_large", "too_long") else 422, e.reason, e.detail or REASONS.get(e.reason, e.reason)) from None
        try:
            return await anyio.to_thread.run_sync(
                lambda: assess_expected(clf, clip.samples, word=word, phones=phones, text=text, mode=mode), limiter=state.limiter
            )
        except PhonemekitError as e:
            raise ApiError(422, "unprocessable", str(e)) from None
