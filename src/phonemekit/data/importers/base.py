"""What every importer shares: the registry, the result (`Imported`), the
checks that make a hostile corpus a list of rejections instead of a
traceback, and writing the prepared dataset."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from phonemekit.data.dataset_files import ensure_salt, write_if_changed
from phonemekit.data.inventory import SOUNDS
from phonemekit.data.manifest import DATASET, LABELS, MANIFEST, REJECTED, summarise
from phonemekit.data.segments import SOURCE_AUDIO
from phonemekit.errors import AudioValidationError, DataError
from phonemekit.fileio import ensure_folder, folder_lock, inside, write_jsonl
from phonemekit.privacy import audit

log = logging.getLogger(__name__)

UTTERANCES = "utterances.jsonl"
CHILD_MAX_AGE = 12  # an age group boundary: children are 12 and under

Importer = Callable[..., "Imported"]
_REGISTRY: dict[str, tuple[Importer, str]] = {}


def register_importer(name: str, description: str):
    def deco(fn: Importer) -> Importer:
        _REGISTRY[name] = (fn, description)
        return fn

    return deco


def available_importers() -> dict[str, str]:
    return {name: desc for name, (_, desc) in sorted(_REGISTRY.items())}


@dataclass
class Imported:
    """A corpus as read: utterance rows (path relative to `root`, utt,
    speaker, and what the corpus says of them), phone segments where it has
    times, rejections with reasons, and phone labels no table knew."""

    root: Path
    utterances: list[dict] = field(default_factory=list)
    segments: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    unknown_phones: Counter = field(default_factory=Counter)
    info: dict = field(default_factory=dict)

    def reject(self, path: object, reason: str, detail: str = "") -> None:
        self.rejected.append({"path": str(path), "reason": reason, "detail": detail[:300]})

    def audio_beside(self, path: Path, suffixes: tuple[str, ...]) -> tuple[Path, str] | tuple[None, None]:
        """The audio file beside an annotation file (`x.PHN` -> `x.WAV`), and its path
        relative to the root; (None, None), with a rejection, when there is none."""
        audio = next((path.with_suffix(e) for e in suffixes if path.with_suffix(e).exists()), None)
        if audio is None:
            self.reject(path, "missing", f"no audio file ({'/'.join(suffixes)}) beside {path.name}")
            return None, None
        rel = self.relative(audio)
        return (audio, rel) if rel is not None else (None, None)

    def relative(self, path: str | Path, base: Path | None = None) -> str | None:
        """`path` (absolute, or relative to `base`, default the root) as a path
        relative to the root; None (and a rejection) when it leaves the root."""
        p = Path(path)
        full = p if p.is_absolute() else (base or self.root) / p
        try:
            rel = str(full.resolve().relative_to(self.root.resolve()))
            inside(self.root, rel)
            return rel
        except (ValueError, OSError, DataError):
            self.reject(path, "path_escape", "the path (or a link on it) leads outside the corpus root")
            return None


def group_of_age(age: object) -> str | None:
    try:
        return "child" if int(age) <= CHILD_MAX_AGE else "adult"
    except (TypeError, ValueError):
        return None


def _check_audio(imp: Imported) -> list[dict]:
    """Each utterance's file validated once (as `prepare` checks clips, with an
    utterance's length limit): its sha256 and duration, or a rejection."""
    from phonemekit.data.audio import load_audio

    kept, seen = [], {}
    for u in imp.utterances:
        if u["path"] not in seen:
            try:
                clip = load_audio(imp.root / u["path"], SOURCE_AUDIO)
                seen[u["path"]] = (clip.sha256, round(clip.duration, 4))
            except AudioValidationError as e:
                seen[u["path"]] = None
                imp.reject(u["path"], e.reason, e.detail)
        if seen[u["path"]] is None:
            continue
        sha, duration = seen[u["path"]]
        kept.append({**u, "sha256": sha, "duration": duration})
    return kept


def import_corpus(fmt: str, src: str | Path, out: str | Path, **options) -> dict:
    """Read corpus `src` with importer `fmt` and write the prepared dataset to `out`."""
    if fmt not in _REGISTRY:
        raise DataError(f"unknown corpus format {fmt!r} (available: {', '.join(available_importers())})")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(f"corpus root {src} is not a folder")
    with folder_lock(ensure_folder(out), "import"):
        imp = _REGISTRY[fmt][0](src, **options)
        imp.utterances = _check_audio(imp)
        by_path = {u["path"]: u for u in imp.utterances}
        segments = _checked_segments(imp, by_path)
        return write_imported(imp, out, segments, fmt)


def _checked_segments(imp: Imported, by_path: dict[str, dict]) -> list[dict]:
    from phonemekit.data.segments import segment_row

    rows = []
    for s in imp.segments:
        u = by_path.get(s["path"])
        if u is None:  # its file was rejected already
            continue
        if s.get("whole"):  # a clip file of its own: a plain row, as `prepare` writes
            rows.append({"path": u["path"], "speaker": u["speaker"], "label": s["label"], "sha256": u["sha256"], "duration": u["duration"],
                         **{k: u[k] for k in ("group", "split") if k in u}})  # fmt: skip
            continue
        start, end = max(0.0, s["start"]), min(u["duration"], s["end"])  # context padding stops at the file's ends
        if not start < end:
            imp.reject(f"{s['path']}@{s['start']}-{s['end']}", "bad_interval", "an interval outside its file or of no length")
            continue
        extra = {k: v for k, v in s.items() if k not in ("path", "start", "end", "label")}
        rows.append(segment_row(u, start, end, s["label"], **extra))
    return rows


def write_imported(imp: Imported, out: Path, segments: list[dict], fmt: str) -> dict:
    """The prepared dataset: manifest.jsonl (the labelled segments, or none
    before alignment), utterances.jsonl, labels.json (the inventory's sounds
    found), dataset.json, rejected.jsonl, and the data's pseudonym salt."""
    labels = sorted(s.label for s in SOUNDS)  # the inventory's sounds, whichever this corpus holds
    write_jsonl(out / UTTERANCES, imp.utterances)
    write_if_changed(out / MANIFEST, segments, jsonl=True)
    write_if_changed(out / REJECTED, imp.rejected, jsonl=True)
    write_if_changed(out / LABELS, labels)
    dataset = {"root": str(imp.root.resolve()), "labels": labels, "num_clips": len(segments), "num_rejected": len(imp.rejected),
               "format": fmt, "utterances": len(imp.utterances), **imp.info}  # fmt: skip
    write_if_changed(out / DATASET, dataset)
    ensure_salt(out)
    audit("import", format=fmt, utterances=len(imp.utterances), segments=len(segments), rejected=len(imp.rejected))
    if imp.unknown_phones:
        log.warning("phone labels no table maps (skipped, never guessed): %s", dict(imp.unknown_phones.most_common(20)))
    summary = summarise(segments, labels) if segments else {"clips": 0}
    summary.update(utterances=len(imp.utterances), rejected=len(imp.rejected), reasons=dict(Counter(r["reason"] for r in imp.rejected)),
                   unknown_phones=dict(imp.unknown_phones), speakers_total=len({u["speaker"] for u in imp.utterances}))  # fmt: skip
    return summary
