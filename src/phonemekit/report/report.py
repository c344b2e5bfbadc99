"""The report of an output folder: the one owner of `report.json` and
`report.md`.

A report is a set of named sections; each is plain data (JSON) that a step
adds or replaces, and a renderer registered under the same name turns it
into markdown. Steps never edit each other's sections, so re-running one
step (training, say) keeps what the others wrote (LOSO, comparison, ...).
`report.md` is rendered from `report.json` alone, in the renderers' order.

    report = Report.open(out)            # empty if there is none yet
    report.set("comparison", cmp).save()
    Report.load(out)["train"]["best_model"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phonemekit.errors import DataError
from phonemekit.fileio import read_json_object, write_json, write_text
from phonemekit.report import sections as _sections  # noqa: F401  (the renderers register themselves)
from phonemekit.report.registry import _RENDERERS, render, renderer  # noqa: F401  (render: one section as markdown)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
FORMAT = "phonemekit-report/2"


class Report:
    def __init__(self, out: str | Path, sections: dict[str, Any] | None = None) -> None:
        self.out = Path(out)
        self.sections: dict[str, Any] = dict(sections or {})

    @classmethod
    def open(cls, out: str | Path) -> Report:
        """The folder's report, or an empty one."""
        path = Path(out) / REPORT_JSON
        return cls.load(out) if path.exists() else cls(out)

    @classmethod
    def load(cls, out: str | Path) -> Report:
        path = Path(out) / REPORT_JSON
        data = read_json_object(path, "report", DataError, DataError, "; run `phonemekit train-all` or `phonemekit demo` first")
        if data.get("format") != FORMAT or not isinstance(data.get("sections"), dict):
            raise DataError(f"report {path} is not a {FORMAT} report; run the step that writes it again")
        return cls(out, data["sections"])

    def __contains__(self, name: str) -> bool:
        return name in self.sections

    def __getitem__(self, name: str) -> Any:
        if name not in self.sections:
            raise DataError(f"report {self.out / REPORT_JSON} has no '{name}' section")
        return self.sections[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.sections.get(name, default)

    def set(self, name: str, data: Any) -> Report:
        """Add or replace a section."""
        if name not in _RENDERERS:
            raise ValueError(f"no renderer for report section {name!r}")
        self.sections[name] = data
        return self

    def markdown(self) -> str:
        parts = ["# phonemekit report", ""]
        parts += [_RENDERERS[name](self.sections[name], self.out) for name in _RENDERERS if name in self.sections]
        return "\n".join(parts).rstrip() + "\n"

    def save(self) -> Report:
        write_json(self.out / REPORT_JSON, {"format": FORMAT, "sections": self.sections})
        write_text(self.out / REPORT_MD, self.markdown())
        return self
