"""The registry of report sections: each named section has one markdown
renderer; `report.md` shows sections in the order they were registered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Renderer = Callable[[Any, Path], str]
_RENDERERS: dict[str, Renderer] = {}


def renderer(name: str) -> Callable[[Renderer], Renderer]:
    """Register the markdown renderer of a section; `report.md` shows the
    sections in the order their renderers were registered."""

    def deco(fn: Renderer) -> Renderer:
        if name in _RENDERERS:
            raise ValueError(f"report section {name!r} registered twice")
        _RENDERERS[name] = fn
        return fn

    return deco


def render(name: str, data: Any, out: Path | None = None) -> str:
    """One section as markdown (also what the CLI prints)."""
    return _RENDERERS[name](data, Path(out or "."))
