"""Privacy helpers: salted speaker pseudonyms for reports and artifacts.

The salt is created once per workspace (`.phonemekit/salt`, readable by the
owner only), so pseudonyms are stable within a workspace and cannot be
reversed by hashing a list of likely names elsewhere.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import logging
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from phonemekit.fileio import walk_files

log = logging.getLogger(__name__)

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
    """Maps speaker names to what reports, folders and files may show:
    salted pseudonyms, or the names themselves when asked (`show`)."""

    def __init__(self, show: bool = False, salt: str | None = None) -> None:
        self.show = show
        self.salt = salt if salt is not None else workspace_salt()

    @classmethod
    def of(cls, manifest, show: bool = False) -> Namer:
        """The namer of a dataset: its own salt (written by `prepare`), so every
        command, run from any folder, gives a speaker the same pseudonym."""
        if manifest.salt is None:
            log.warning(
                "%s has no pseudonym salt (prepared by an older phonemekit); using the workspace's. Run `phonemekit prepare` "
                "again to bind pseudonyms to the data",
                manifest.path,
            )
        return cls(show, manifest.salt)

    def pseudonym(self, speaker: str) -> str:
        return "spk-" + hashlib.sha256(f"{self.salt}:{speaker}".encode()).hexdigest()[:8]

    def __call__(self, speaker: str) -> str:
        return speaker if self.show else self.pseudonym(speaker)

    def keys(self, d: dict) -> dict:
        return {self(k): v for k, v in d.items()}


@contextlib.contextmanager
def private_tmpdir(prefix: str = "phonemekit-") -> Iterator[Path]:
    """A temp folder only the owner can read, removed on success, on error
    and on Ctrl-C alike."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def audit(action: str, home: Path | None = None, **details) -> dict:
    """Append one record to the workspace's audit log (`.phonemekit/audit.jsonl`):
    who, when, what. Callers pass counts and hashes, never audio or raw names."""
    home = home or WORKSPACE
    home.mkdir(parents=True, exist_ok=True)
    rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "user": getpass.getuser(), "action": action, **details}
    fd = os.open(home / "audit.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, sort_keys=True, default=str) + "\n")
    return rec


def purge(older_than_days: float, targets: dict[str, Path], *, dry_run: bool = True, now: float | None = None) -> dict:
    """Delete files older than N days (by modification time) under each
    target folder; with `dry_run` only count them. Returns per-target counts."""
    cutoff = (now or time.time()) - older_than_days * 86400
    report = {}
    for what, root in targets.items():
        files, size = [], 0
        for p, _ in walk_files(root) if root.is_dir() else ():
            st = p.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                files.append(p)
                size += st.st_size
        if not dry_run:
            for p in files:
                p.unlink(missing_ok=True)
            folders = {q for p in files for q in p.parents if root in q.parents}
            for d in sorted(folders, key=lambda d: -len(d.parts)):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only empty folders go
        report[what] = {"root": str(root), "files": len(files), "bytes": size}
    if not dry_run:
        audit("purge", older_than_days=older_than_days, **{k: v["files"] for k, v in report.items()})
    return report
