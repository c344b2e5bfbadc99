"""Atomic writes and hashing. Every artifact goes through here, so a kill
leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from phonemekit.errors import DataError, LockedError, OutputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, exclusive: bool = False) -> Iterator[Path]:
    """A temp file beside `path` for the block to write (by name, for writers
    such as exporters that take a path); renamed over `path` when the block
    succeeds, removed when it fails. A write that fails (read-only or full
    disk) is one `OutputError` naming the file; the old file, if any, stays.
    `exclusive`: never replace an existing file (`FileExistsError`); the
    new file appears whole, by a hard link, or not at all."""
    path = Path(path)
    try:
        ensure_folder(path.parent)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_writer()}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
    tmp = Path(name)
    try:
        yield tmp
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    except FileExistsError:
        raise
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, exclusive: bool = False) -> Iterator[IO[Any]]:
    """`atomic_path`, opened: the data is fsynced before the rename."""
    with atomic_path(path, exclusive=exclusive) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def ensure_folder(path: str | os.PathLike) -> Path:
    """`path` as an existing folder (created if need be); a file in its place is one clear error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path} is a file, not a folder; choose another output folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create folder {path}: {e.strerror or e}") from e
    return path


def inside(root: str | os.PathLike, rel: object) -> Path:
    """`root / rel` when `rel` is a relative path that stays inside `root`
    (symlinks resolved); anything else is a `DataError`."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts or "\x00" in rel:
        raise DataError(f"path {rel!r} is not a relative path inside {root}")
    path = Path(root) / rel
    try:
        path.resolve().relative_to(Path(root).resolve())
    except (ValueError, OSError, RuntimeError) as e:
        raise DataError(f"path {rel!r} leads outside {root}") from e
    return path


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold `FOLDER/.phonemekit.lock` (an flock, released when the process
    ends, however it ends) for the block: two runs into one output folder
    would mix their files. The second is told, and nothing is written. The
    lock file itself is never rewritten, so a re-run changes no file."""
    folder = ensure_folder(folder)
    lock = folder / ".phonemekit.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise OutputError(f"cannot create {lock}: {e.strerror or e}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(
                f"{folder} is in use by another phonemekit run; wait for it to finish or use another output folder (this {what} was not started)"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def walk_files(root: str | os.PathLike, max_depth: int | None = None) -> Iterator[tuple[Path, int]]:
    """(file, depth) under `root`, depth first in sorted order, without
    following symlinked folders and without recursion (a tree thousands of
    folders deep is walked, not a RecursionError). Folders deeper than
    `max_depth` are yielded as (folder, depth) once and not entered."""
    stack = [(Path(root), 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if max_depth is not None and depth + 1 > max_depth:
                    yield path, depth + 1
                else:
                    stack.append((path, depth + 1))
            else:
                yield path, depth + 1


def is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _writer() -> str:
    """host-pid of this process: temp files carry it, so the ones a killed
    writer left behind can be told from a live writer's."""
    return f"{_host()}-{os.getpid()}"


def _host() -> str:
    return socket.gethostname().replace(".", "_")  # no dots: the temp name is split on them


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_temps(root: str | os.PathLike) -> int:
    """Remove the temp files (`.NAME.HOST-PID.XXXX.tmp`) that writers on this
    host left when they were killed (kill -9 runs no clean-up); a live
    writer's and another host's are left alone. Returns how many went."""
    root, host, gone = Path(root), _host(), 0
    if not root.is_dir():
        return 0
    for path, _ in walk_files(root):
        name = path.name
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        parts = name[: -len(".tmp")].rsplit(".", 2)
        writer = parts[1] if len(parts) == 3 else ""
        who, _, pid = writer.rpartition("-")
        if who == host and pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                gone += 1
    return gone


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_json_object(path: Path, what: str, missing: type[Exception], broken: type[Exception], hint: str = "") -> dict:
    """A JSON object from `path`, or one clear error: `missing` when there is
    no file, `broken` when it is unreadable or not an object."""
    if not path.is_file():
        raise missing(f"no {what} at {path}{hint}")
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise broken(f"{what} {path} is unreadable: {e}") from e
    if not isinstance(data, dict):
        raise broken(f"{what} {path} is not a JSON object")
    return data


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
