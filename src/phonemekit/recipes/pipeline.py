"""Named pipeline steps with pre- and postconditions, completion records,
resume, retries for transient errors, and per-step resource figures.

A step is done when its record in `state.json` matches its fingerprint
(config and input hashes) and its outputs still pass their checks; a re-run
skips it. `force` redoes named steps. A failed step stops the pipeline: the
error propagates, nothing is swallowed. Each run of a step appends one line
to `steps.jsonl` (wall time, peak RSS, GPU memory when there is a GPU).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from phonemekit.errors import PhonemekitError
from phonemekit.fileio import read_json, write_json

log = logging.getLogger(__name__)


class StepError(PhonemekitError):
    """A step's precondition or postcondition failed."""


# Errors worth retrying: the filesystem or network hiccuped. Bad data and
# bugs are never retried.
TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.EIO}


def is_transient(e: BaseException) -> bool:
    return isinstance(e, (TimeoutError, ConnectionError)) or (isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS)


@dataclass
class Step:
    name: str
    run: Callable[[], dict | None]
    outputs: list[Path]
    inputs: list[Path] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    check: Callable[[], None] | None = None  # extra postcondition; raises StepError

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps(self.config, sort_keys=True, default=str).encode())
        for p in self.inputs:
            h.update(str(p).encode())
            h.update(_digest(p).encode())
        return h.hexdigest()[:20]


def _digest(path: Path) -> str:
    """Cheap content identity: size and mtime of a file, or of every file in a folder."""
    if path.is_file():
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()
    return "missing"


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check_outputs(step: Step) -> None:
    for p in step.outputs:
        if not p.exists():
            raise StepError(f"step '{step.name}' did not produce {p}")
        if p.is_file() and p.stat().st_size == 0:
            raise StepError(f"step '{step.name}' produced an empty {p}")
        if p.suffix == ".json":
            try:
                read_json(p)
            except ValueError as e:
                raise StepError(f"step '{step.name}' produced unparsable {p}: {e}") from e
    if step.check:
        step.check()


class Pipeline:
    def __init__(self, out: str | Path, *, force: set[str] | None = None, retries: int = 2, backoff: float = 1.0) -> None:
        self.out = Path(out)
        self.force = force or set()
        self.retries, self.backoff = retries, backoff
        self.state_path = self.out / "state.json"
        self.state: dict = read_json(self.state_path) if self.state_path.exists() else {}

    def step_times(self, steps: list[Step]) -> list[dict]:
        """The latest completed record of each step, in pipeline order, from
        `steps.jsonl` (a step skipped this time keeps its earlier figures)."""
        latest: dict[str, dict] = {}
        log_path = self.out / "steps.jsonl"
        if log_path.exists():
            for line in log_path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(rec, dict) and rec.get("status") == "done" and "step" in rec:
                    latest[rec["step"]] = rec
        return [latest[s.name] for s in steps if s.name in latest]

    def done(self, step: Step) -> bool:
        rec = self.state.get(step.name)
        if step.name in self.force or not rec or rec.get("fingerprint") != step.fingerprint():
            return False
        try:
            _check_outputs(step)
        except StepError as e:
            log.warning("step '%s' was recorded as done but %s; running it again", step.name, e)
            return False
        return True

    def run_and_report(self, steps: list[Step]) -> list[dict]:
        """`run`, then the report's `pipeline` section: each step's latest time
        and peak memory, and whether it ran this time."""
        from phonemekit.report.report import Report

        records = self.run(steps)
        ran = {r["step"] for r in records}
        times = [{k: r[k] for k in ("step", "seconds", "peak_rss_mb", "finished")} | {"this_run": r["step"] in ran} for r in self.step_times(steps)]
        Report.open(self.out).set("pipeline", {"steps": times, "total_seconds": round(sum(t["seconds"] for t in times), 1)}).save()
        return records

    def run(self, steps: list[Step]) -> list[dict]:
        unknown = self.force - {s.name for s in steps}
        if unknown:
            raise StepError(f"--force names unknown step(s): {', '.join(sorted(unknown))} (steps: {', '.join(s.name for s in steps)})")
        records = []
        for step in steps:
            if self.done(step):
                log.info("step %s: done earlier, skipped", step.name)
                continue
            for p in step.inputs:
                if not p.exists():
                    raise StepError(f"step '{step.name}' needs {p}, which does not exist")
            records.append(self._run_step(step))
        return records

    def _run_step(self, step: Step) -> dict:
        import torch

        log.info("step %s: running", step.name)
        _reset_peak_rss()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for attempt in range(self.retries + 1):
            try:
                summary = step.run() or {}
                break
            except Exception as e:
                if not is_transient(e) or attempt == self.retries:
                    self._log(step, t0, "failed", {"error": f"{type(e).__name__}: {e}"[:500]})
                    raise
                delay = self.backoff * 2**attempt
                log.warning("step %s: transient error (%s); retrying in %.0f s", step.name, e, delay)
                time.sleep(delay)
        _check_outputs(step)
        rec = self._log(step, t0, "done", summary)
        self.state[step.name] = {"fingerprint": step.fingerprint(), "outputs": [str(p) for p in step.outputs], "finished": rec["finished"]}
        write_json(self.state_path, self.state)
        return rec

    def _log(self, step: Step, t0: float, status: str, summary: dict) -> dict:
        import torch

        rec = {
            **summary,
            "step": step.name,
            "status": status,
            "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mb": round(_peak_rss_mb() or 0, 1),
            "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "steps.jsonl", "a", encoding="utf-8") as f:  # append-only log
            f.write(json.dumps(rec, default=str) + "\n")
        return rec
