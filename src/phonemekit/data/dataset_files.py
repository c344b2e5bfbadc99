"""Writing a prepared dataset's files (`prepare` and the importers alike):
each rewritten only when its content changes, and the pseudonym salt once."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from phonemekit.fileio import read_json, read_jsonl, write_json, write_jsonl

SALT = "salt"


def ensure_salt(out: Path) -> None:
    """The data's pseudonym salt: random, owner-only, written once."""
    path = out / SALT
    if path.exists():
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(16))


def write_if_changed(path: Path, obj, jsonl: bool = False) -> bool:
    if path.exists():
        try:
            old = read_jsonl(path) if jsonl else read_json(path)
        except (OSError, ValueError):
            old = None
        if json.dumps(old, sort_keys=True) == json.dumps(obj, sort_keys=True):
            return False
    (write_jsonl if jsonl else write_json)(path, obj)
    return True
