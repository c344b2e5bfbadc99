"""What the API's routes (`serve.app`) and the page's (`serve.web`) share:
the error they answer with, the server's state, labels as shown, and
reading a bounded body."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from fastapi import Request

from phonemekit.data.inventory import SOUNDS
from phonemekit.deploy.runtime import Classifier

if TYPE_CHECKING:
    from phonemekit.serve.app import ServeConfig


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str = "", headers: dict | None = None) -> None:
        super().__init__(detail or error)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers or {}


@dataclass
class State:
    path: Path
    cfg: ServeConfig
    classifier: Classifier
    requests: asyncio.Semaphore
    limiter: anyio.CapacityLimiter
    engines: set = field(default_factory=set)
    started: float = field(default_factory=time.time)
    served: int = 0
    reloads: int = 0


def labels_of(clf: Classifier) -> list[dict]:
    known = {s.label: s for s in SOUNDS}
    return [{"label": lab, **({"ipa": known[lab].ipa, "example": known[lab].example} if lab in known else {})} for lab in clf.labels]


async def read_body(request: Request, cfg: ServeConfig) -> bytes:
    """The body, refused as soon as it passes the limit or stalls."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "malformed Content-Length")
        if int(declared) > cfg.max_body_bytes:
            raise ApiError(413, "too_large", f"body of {declared} bytes > {cfg.max_body_bytes}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(cfg.read_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > cfg.max_body_bytes:
                    raise ApiError(413, "too_large", f"body larger than {cfg.max_body_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "timeout", f"the body did not arrive within {cfg.read_timeout_s:g} s") from None
    return b"".join(chunks)
