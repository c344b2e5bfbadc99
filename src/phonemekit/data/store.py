"""Where the feature cache lives: a local (or shared, NFS-like) folder, or
any fsspec URL (`s3://...`, `gs://...`, `file://...`, `memory://...`), so
workers on many machines write into one content-addressed cache.

Writes are atomic everywhere: a local file is written to a temp file and
renamed; a URL is written under a temporary key and moved (a rename on a
file system, one PUT on an object store), so a killed worker never leaves
half a file under the real name.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import fsspec

from phonemekit.errors import OutputError
from phonemekit.fileio import read_json, write_bytes, write_json


class Store:
    """A root (folder or URL) and the few operations the cache needs."""

    def __init__(self, root: str | Path) -> None:
        self.url = str(root)
        self.is_local = "://" not in self.url
        if self.is_local:
            self.root = Path(self.url)
        else:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __truediv__(self, part: str) -> Store:
        return Store(self.join(part))

    def join(self, *parts: str) -> str:
        if self.is_local:
            return str(self.root.joinpath(*parts))
        return self.url.rstrip("/") + "/" + "/".join(parts)

    def _path(self, key: str) -> str:
        return str(self.root.joinpath(key)) if self.is_local else f"{str(self.root).rstrip('/')}/{key}"

    def exists(self, key: str) -> bool:
        return Path(self._path(key)).is_file() if self.is_local else self.fs.isfile(self._path(key))

    def read(self, key: str) -> bytes:
        if self.is_local:
            return Path(self._path(key)).read_bytes()
        return self.fs.cat_file(self._path(key))

    def write(self, key: str, data: bytes) -> None:
        if self.is_local:
            write_bytes(self._path(key), data)
            return
        path = self._path(key)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        except OSError as e:
            raise OutputError(f"cannot write {self.join(key)}: {e}") from e

    def read_json(self, key: str) -> Any:
        return read_json(self._path(key)) if self.is_local else json.loads(self.read(key))

    def write_json(self, key: str, obj: Any) -> None:
        if self.is_local:
            write_json(self._path(key), obj)
        else:
            self.write(key, (json.dumps(obj, indent=2) + "\n").encode())
