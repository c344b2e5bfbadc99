"""Reader for CTranslate2's `model.bin` (format version 6 and earlier).

ctranslate2 itself loads a model only to run it, not to hand out its
arrays, so the file is read here. It is a short list of named arrays (the
writer is `ctranslate2/specs/model_spec.py`, `_serialize`), little-endian:

    u32 version, str spec_name, u32 revision, u32 n_variables,
    n_variables x (str name, u8 rank, rank x u32 dims, u8 dtype, u32 nbytes, bytes),
    u32 n_aliases, n_aliases x (str alias, str name)

where `str` is a u16 length (including a NUL) and the bytes. Nothing is
executed; a malformed file is a `MissingWeightsError` naming it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from phonemekit.errors import MissingWeightsError

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
BFLOAT16 = 5


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = memoryview(data), 0, path

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise MissingWeightsError(f"{self.path} is truncated or not a CTranslate2 model")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def str(self) -> str:
        raw = bytes(self.take(self.u("H")))
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError as e:
            raise MissingWeightsError(f"{self.path} is not a CTranslate2 model (bad variable name)") from e


def read_ct2(path: str | Path) -> dict[str, np.ndarray]:
    """All variables as float32/int arrays. int8 weights are dequantised with
    their `weight_scale` (CTranslate2 stores round(w * scale) per row)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MissingWeightsError(f"cannot read {path}: {e.strerror}") from e
    r = _Reader(data, path)
    version = r.u("I")
    if not 1 <= version <= 6:
        raise MissingWeightsError(f"{path}: unsupported CTranslate2 model version {version} (this reader knows 1-6)")
    r.str()  # spec name
    if version >= 2:
        r.u("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.u("I")):
        name = r.str()
        rank = r.u("B")
        dims = [r.u("I") for _ in range(rank)]
        code = r.u("B") if version >= 4 else 0
        nbytes = r.u("I") if version >= 4 else int(np.prod(dims)) * 4
        raw = r.take(nbytes)
        if code == BFLOAT16:
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif code in _DTYPES:
            arr = np.frombuffer(raw, dtype=_DTYPES[code])
        else:
            raise MissingWeightsError(f"{path}: variable {name} has unknown dtype code {code}")
        if arr.size != int(np.prod(dims)):
            raise MissingWeightsError(f"{path}: variable {name} holds {arr.size} values, its shape {dims} needs {int(np.prod(dims))}")
        variables[name] = arr.reshape(dims)
    if r.pos < len(r.data):
        for _ in range(r.u("I")):
            alias, name = r.str(), r.str()
            if name in variables:
                variables[alias] = variables[name]
    for name in [n for n in variables if n.endswith("/weight_scale")]:
        base = name[: -len("_scale")]
        w = variables.get(base)
        if w is not None and w.dtype == np.int8:
            scale = variables[name].astype(np.float32)
            variables[base] = w.astype(np.float32) / scale.reshape(-1, *([1] * (w.ndim - 1)))
    return {k: (v.astype(np.float32) if v.dtype in (np.float16, np.int8, np.int16) and not k.endswith("num_heads") else v) for k, v in variables.items()}
