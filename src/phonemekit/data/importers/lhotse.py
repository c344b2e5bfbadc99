"""lhotse manifests: a recording set and a supervision set, JSON lines as
lhotse writes them (`recordings.jsonl[.gz]`, `supervisions.jsonl[.gz]`).
Each supervision is an utterance (a segment of its recording, with its
speaker, text and `custom` fields: `age`, `split`); a `phone` alignment, when
it has one, gives phone segments. The files are read as the JSON they are:
lhotse itself (and its dependencies) is not needed to import them.

Only recordings whose sources are files are read: a `command` or `url`
source is refused, never run or fetched."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from phonemekit.data.importers.base import Imported, group_of_age, register_importer
from phonemekit.data.phones import TABLES, to_label

MAX_MANIFEST_BYTES = 200_000_000


def _lines(path: Path, imp: Imported) -> list[dict]:
    """The objects of a JSON-lines file (gzip or not); a malformed line is rejected, not fatal."""
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        imp.reject(path, "too_large", f"a manifest over {MAX_MANIFEST_BYTES} bytes")
        return []
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    item = None
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    out.append(item)
                else:
                    imp.reject(f"{path}:{n}", "bad_line", "not a manifest entry (a JSON object with an id)")
    except (OSError, EOFError) as e:
        imp.reject(path, "unreadable", str(e)[:200])
    return out


def _manifest(src: Path, kind: str, imp: Imported) -> list[dict]:
    found = sorted(p for p in src.iterdir() if p.name.endswith((f"{kind}.jsonl", f"{kind}.jsonl.gz")))
    if not found:
        imp.reject(src, "not_lhotse", f"no *{kind}.jsonl[.gz] in {src}")
    return [item for p in found for item in _lines(p, imp)]


def _number(x: object) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) < 1e7 else None


@register_importer("lhotse", "lhotse recording and supervision manifests (JSON lines; phone alignments when present)")
def lhotse(src: Path, table: str = "arpabet", context: float = 0.05) -> Imported:
    if table not in TABLES:
        raise ValueError(f"unknown phone table {table!r} ({', '.join(TABLES)})")
    imp = Imported(src, info={"corpus": "lhotse"})
    recordings = {}
    for r in _manifest(src, "recordings", imp):
        sources = r.get("sources") if isinstance(r.get("sources"), list) else []
        files = [s for s in sources if isinstance(s, dict) and s.get("type") == "file" and isinstance(s.get("source"), str)]
        if len(files) != 1 or len(sources) != 1:
            imp.reject(r["id"], "unsupported_source", "one file source per recording is read; commands and URLs are never run or fetched")
            continue
        if (rel := imp.relative(files[0]["source"])) is not None:
            recordings[r["id"]] = rel
    for s in _manifest(src, "supervisions", imp):
        path = recordings.get(s.get("recording_id"))
        start, duration = _number(s.get("start")), _number(s.get("duration"))
        if path is None:
            imp.reject(s["id"], "missing", "its recording is not in the recording set (or was refused)")
            continue
        if start is None or duration is None or start < 0 or duration <= 0:
            imp.reject(s["id"], "bad_segment", "start and duration must be numbers, start >= 0, duration > 0")
            continue
        custom = s.get("custom") if isinstance(s.get("custom"), dict) else {}
        speaker = s.get("speaker") if isinstance(s.get("speaker"), str) and s.get("speaker") else "speaker"
        row = {"utt": s["id"], "path": path, "speaker": speaker, "text": str(s.get("text") or "").strip(), "segment": [start, start + duration]}
        if isinstance(s.get("gender"), str):
            row["gender"] = s["gender"]
        if custom.get("age") is not None and (g := group_of_age(custom["age"])):
            row.update(age=str(custom["age"]), group=g)
        if custom.get("split") in ("train", "test"):
            row["split"] = custom["split"]
        imp.utterances.append(row)
        alignment = s.get("alignment") if isinstance(s.get("alignment"), dict) else {}
        for item in alignment.get("phone") or []:
            a, d = (_number(item.get("start")), _number(item.get("duration"))) if isinstance(item, dict) else (None, None)
            symbol = item.get("symbol") if isinstance(item, dict) else None
            # Alignment times are the recording's; a phone must lie inside its supervision.
            if a is None or d is None or d <= 0 or not isinstance(symbol, str) or a < start - 1e-6 or a + d > start + duration + 1e-6:
                imp.reject(f"{s['id']}@{item!r:.60}", "bad_interval", "a phone of no length, or outside its supervision")
                continue
            label = to_label(symbol.strip(), table)
            if label is None:
                if symbol.strip():
                    imp.unknown_phones[symbol.strip()[:32]] += 1
                continue
            imp.segments.append({"path": path, "start": a - context, "end": a + d + context, "label": label, "utt": s["id"]})
    return imp
