"""Praat TextGrids beside their audio (`<speaker>/<name>.wav` and
`<speaker>/<name>.TextGrid`), read with praatio: the intervals of a phones
tier become phone segments (IPA or ARPAbet labels). Negative, empty or
overlapping intervals are rejected with a reason."""

from __future__ import annotations

import re
from pathlib import Path

from phonemekit.data.audio import AUDIO_EXTENSIONS
from phonemekit.data.importers.base import Imported, register_importer
from phonemekit.data.phones import to_label
from phonemekit.fileio import walk_files

MAX_TEXTGRID_BYTES = 5_000_000
_NEGATIVE_TIME = re.compile(r"^\s*(xmin|xmax)\s*=\s*-", re.M)


@register_importer("textgrid", "audio with Praat TextGrids beside it (a phones tier; IPA or ARPAbet labels)")
def textgrid(src: Path, tier: str = "phones", table: str = "ipa", context: float = 0.05) -> Imported:
    from praatio import textgrid as tg

    imp = Imported(src, info={"corpus": "textgrid"})
    for path, _ in walk_files(src):
        if path.suffix.lower() != ".textgrid":
            continue
        audio, rel = imp.audio_beside(path, AUDIO_EXTENSIONS)
        if rel is None:
            continue
        if path.stat().st_size > MAX_TEXTGRID_BYTES:
            imp.reject(path, "too_large", f"TextGrid over {MAX_TEXTGRID_BYTES} bytes")
            continue
        raw = path.read_text(encoding="utf-8", errors="replace")
        if _NEGATIVE_TIME.search(raw):  # praatio reads "xmin = -0.2" as 0.2: refuse the file before it does
            imp.reject(path, "bad_interval", "an interval with a negative time")
            continue
        try:
            grid = tg.openTextgrid(str(path), includeEmptyIntervals=False)
            entries = grid.getTier(tier).entries
        except Exception as e:  # praatio raises many kinds on a malformed file
            imp.reject(path, "bad_textgrid", f"{type(e).__name__}: {e}"[:200])
            continue
        utt = f"{Path(rel).parent.name}_{audio.stem}"
        imp.utterances.append({"utt": utt, "path": rel, "speaker": Path(rel).parent.name or "speaker"})
        prev_end = 0.0
        for e in sorted(entries, key=lambda e: e.start):
            if e.start < 0 or e.end <= e.start or e.start < prev_end - 1e-6:
                imp.reject(f"{path}@{e.start}-{e.end}", "bad_interval", "negative, empty or overlapping interval")
                continue
            prev_end = e.end
            label = to_label(e.label.strip(), table)
            if label is None:
                if e.label.strip():
                    imp.unknown_phones[e.label.strip()] += 1
                continue
            imp.segments.append({"path": rel, "start": e.start - context, "end": e.end + context, "label": label, "utt": utt})
    return imp
