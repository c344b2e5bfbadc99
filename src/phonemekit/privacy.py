"""Privacy helpers: salted speaker pseudonyms for reports and artifacts.

The salt is created once per workspace (`.phonemekit/salt`, readable by the
owner only), so pseudonyms are stable within a workspace and cannot be
reversed by hashing a list of likely names elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

WORKSPACE = Path(os.environ.get("PHONEMEKIT_HOME", ".phonemekit"))


def workspace_salt(home: Path | None = None) -> str:
    home = home or WORKSPACE
    path = home / "salt"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(16))
    return path.read_text().strip()


class Namer:
    """Maps speaker names to what reports may show."""

    def __init__(self, show: bool = False, salt: str | None = None) -> None:
        self.show = show
        self.salt = salt if salt is not None else ("" if show else workspace_salt())

    def __call__(self, speaker: str) -> str:
        if self.show:
            return speaker
        return "spk-" + hashlib.sha256(f"{self.salt}:{speaker}".encode()).hexdigest()[:8]

    def keys(self, d: dict) -> dict:
        return {self(k): v for k, v in d.items()}
