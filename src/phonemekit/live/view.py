"""The terminal view of `phonemekit live`: current label big, top-3 with
bars, a level meter, VAD state and latency."""

from __future__ import annotations

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


class LiveView:
    def __init__(self, model_name: str, expect: str | None = None) -> None:
        self.model_name, self.expect = model_name, expect
        self.label: str | None = None
        self.top: list = []
        self.state = "listening"
        self.latency_ms: float | None = None
        self.level_db, self.speech = -120.0, 0.0
        self.history: list[str] = []
        self.recognised: bool | None = None

    def on_event(self, ev: dict) -> None:
        if ev["type"] == "onset":
            self.state, self.recognised = "speech", None
        elif ev["type"] == "provisional":
            self.label, self.top = ev["label"], ev["top_k"]
        elif ev["type"] == "final":
            self.label, self.top = ev["label"], ev["top_k"]
            self.latency_ms = ev["compute_ms"]
            self.history = ([ev["label"] or "?"] + self.history)[:8]
            self.recognised = ev.get("recognised")
        elif ev["type"] == "offset":
            self.state = "listening"

    def on_frame(self, engine) -> None:
        self.level_db, self.speech = engine.level_db, engine.speech_prob

    def __rich__(self):
        big = Text(self.label or "-", style="bold cyan", justify="center")
        big.stylize("bold")
        bars = Table.grid(padding=(0, 1))
        for label, p in self.top:
            bars.add_row(f"{label:>10s}", "#" * int(p * 30), f"{p:.2f}")
        level = max(0, min(40, int((self.level_db + 80) / 2)))
        status = Text(f"VAD {self.state} ({self.speech:.2f})  level {'|' * level:<40s} {self.level_db:5.1f} dBFS")
        if self.latency_ms is not None:
            status.append(f"  compute {self.latency_ms:.0f} ms")
        parts = [big, bars, status, Text("recent: " + " ".join(self.history))]
        if self.expect:
            verdict = {None: "...", True: "recognised", False: "not yet"}[self.recognised]
            parts.insert(0, Text(f"say: {self.expect}   -> {verdict}", style="green" if self.recognised else "yellow"))
        return Panel(Group(*parts), title=f"phonemekit live - {self.model_name}", subtitle="Ctrl-C to stop")
