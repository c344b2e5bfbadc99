"""A Hugging Face "audiofolder": `metadata.csv` with a `file_name` column,
a `label` column, and optionally `speaker` (and `group`); one clip per row."""

from __future__ import annotations

import csv
from pathlib import Path

from phonemekit.data.importers.base import Imported, register_importer
from phonemekit.data.inventory import SOUNDS
from phonemekit.data.phones import to_label


@register_importer("audiofolder", "metadata.csv (file_name, label, speaker) as Hugging Face's audiofolder reads it")
def audiofolder(src: Path, table: str = "ipa") -> Imported:
    imp = Imported(src, info={"corpus": "audiofolder"})
    meta = src / "metadata.csv"
    if not meta.is_file():
        imp.reject(meta, "missing", "no metadata.csv")
        return imp
    labels = {s.label for s in SOUNDS}
    with open(meta, newline="", encoding="utf-8", errors="replace") as f:
        for n, row in enumerate(csv.DictReader(f), 2):
            name, raw = (row.get("file_name") or "").strip(), (row.get("label") or "").strip()
            if not name or not raw:
                imp.reject(f"{meta}:{n}", "bad_line", "file_name and label are required")
                continue
            rel = imp.relative(name)
            if rel is None:
                continue
            label = raw if raw in labels else to_label(raw, table)
            if label is None:
                imp.unknown_phones[raw] += 1
                continue
            speaker = (row.get("speaker") or "").strip() or "speaker"
            u = {"utt": Path(rel).stem, "path": rel, "speaker": speaker, "label": label}
            if row.get("group"):
                u["group"] = row["group"].strip()
            imp.utterances.append(u)
            imp.segments.append({"path": rel, "start": 0.0, "end": 1e9, "label": label, "whole": True})
    return imp
