"""`prepare`: scan `ROOT/<speaker>/<label>/*`, validate every file, write a
JSONL manifest, a fixed sorted `labels.json` and `rejected.jsonl`.

Bad files are reported and skipped (or stop the run with `strict`); a good
file is never lost because a neighbour was bad. Paths must stay under ROOT.
Re-running on unchanged data rewrites nothing.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from phonemekit.config import AudioConfig
from phonemekit.data import audio
from phonemekit.errors import AudioValidationError, DataError
from phonemekit.fileio import read_json, read_jsonl, sha256_file, write_json, write_jsonl
from phonemekit.privacy import audit

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
LABELS = "labels.json"
REJECTED = "rejected.jsonl"
DATASET = "dataset.json"


@dataclass
class Manifest:
    """Validated clips of one dataset. `root` resolves the relative paths."""

    root: Path
    rows: list[dict]
    labels: list[str]
    path: Path | None = None
    groups: dict[str, str] = field(default_factory=dict)

    @property
    def speakers(self) -> list[str]:
        return sorted({r["speaker"] for r in self.rows})

    def audio_path(self, row: dict) -> Path:
        return self.root / row["path"]



def _bad_name(name: str) -> str | None:
    if name in ("..", ".") or "/" in name or "\\" in name:
        return "path traversal in name"
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        return "control character in name"
    return None


def _scan(root: Path, allowed_labels: set[str] | None) -> tuple[list[tuple[Path, str, str]], list[dict]]:
    """Candidate files (path, speaker, label) and layout rejections."""
    real_root = root.resolve()
    found, rejected = [], []

    def reject(path: Path, reason: str, detail: str = "") -> None:
        rel = os.path.relpath(path, root)
        rejected.append({"path": rel, "reason": reason, "detail": detail})

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        for d in list(dirnames):
            problem = _bad_name(d)
            target = here / d
            if problem:
                reject(target, "bad_name", problem)
                dirnames.remove(d)
            elif target.is_symlink():
                dirnames.remove(d)
                reject(target, "symlink_dir", "symlinked folders are not followed")
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = here / name
            problem = _bad_name(name)
            if problem:
                reject(path, "bad_name", problem)
                continue
            if path.is_symlink():
                try:
                    path.resolve(strict=True).relative_to(real_root)
                except (ValueError, OSError):
                    reject(path, "symlink_escape", "link points outside the data root")
                    continue
            if depth != 2:
                if path.suffix.lower() in audio.AUDIO_EXTENSIONS or depth > 2:
                    reject(path, "bad_layout", "expected ROOT/<speaker>/<label>/<file>")
                continue
            speaker, label = here.relative_to(root).parts
            if allowed_labels is not None and label not in allowed_labels:
                reject(path, "unknown_label", f"label folder {label!r} is not in the label list")
                continue
            found.append((path, speaker, label))
    return found, rejected


def prepare(
    root: str | Path,
    out: str | Path,
    *,
    audio_cfg: AudioConfig | None = None,
    strict: bool = False,
    labels: list[str] | None = None,
    speakers_file: str | Path | None = None,
    progress=None,
) -> dict:
    """Validate the corpus under `root` and write the manifest files to `out`."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"data root {root} is not a folder")
    audio_cfg = audio_cfg or AudioConfig()
    candidates, rejected = _scan(root, set(labels) if labels else None)
    previous = _previous_rows(out, root)
    groups = _load_groups(root, speakers_file)

    rows: list[dict] = []
    task = progress.add_task("validating clips", total=len(candidates)) if progress else None
    for path, speaker, label in candidates:
        rel = os.path.relpath(path, root)
        try:
            st = path.stat()
            old = previous.get(rel)
            if old and old["size"] == st.st_size and old["mtime_ns"] == st.st_mtime_ns:
                rows.append(old)
            else:
                clip = audio.load_audio(path, audio_cfg)
                for w in clip.warnings:
                    log.warning("%s: %s", rel, w)
                rows.append(
                    {
                        "path": rel,
                        "speaker": speaker,
                        "label": label,
                        "duration": round(clip.duration, 4),
                        "sample_rate": clip.source_rate,
                        "sha256": sha256_file(path),
                        "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns,
                        "group": groups.get(speaker, "unknown"),
                    }
                )
        except AudioValidationError as e:
            rejected.append({"path": rel, "reason": e.reason, "detail": e.detail})
        except OSError as e:
            rejected.append({"path": rel, "reason": "unreadable", "detail": e.strerror or str(e)})
        if progress:
            progress.advance(task)
    for r in rows:  # speakers.json may have changed without the audio changing
        r["group"] = groups.get(r["speaker"], r.get("group", "unknown"))
    rows.sort(key=lambda r: r["path"])
    rejected.sort(key=lambda r: r["path"])
    if strict and rejected:
        first = rejected[0]
        raise DataError(f"{len(rejected)} bad file(s); first: {first['path']}: {first['reason']} {first['detail']}".strip())
    if not rows:
        raise DataError(f"no usable clips under {root} (rejected {len(rejected)}); expected ROOT/<speaker>/<label>/*.wav")

    label_list = sorted({r["label"] for r in rows} | set(labels or []))
    dataset = {"root": str(root.resolve()), "labels": label_list, "num_clips": len(rows), "num_rejected": len(rejected)}
    changed = _write_if_changed(out / MANIFEST, rows, jsonl=True)
    changed |= _write_if_changed(out / REJECTED, rejected, jsonl=True)
    changed |= _write_if_changed(out / LABELS, label_list)
    changed |= _write_if_changed(out / DATASET, dataset)
    if changed:
        audit("ingest", clips=len(rows), rejected=len(rejected), speakers=len({r["speaker"] for r in rows}),
              manifest_sha256=sha256_file(out / MANIFEST))
    summary = summarise(rows, label_list)
    summary.update(rejected=len(rejected), changed=changed, reasons=dict(Counter(r["reason"] for r in rejected)))
    return summary


def summarise(rows: list[dict], labels: list[str], min_clips: int = 5) -> dict:
    counts = Counter((r["speaker"], r["label"]) for r in rows)
    speakers = sorted({r["speaker"] for r in rows})
    per_label = Counter(r["label"] for r in rows)
    few = [lab for lab in labels if per_label[lab] < min_clips]
    missing = {lab: [s for s in speakers if counts[(s, lab)] == 0] for lab in labels}
    missing = {lab: s for lab, s in missing.items() if s}
    return {
        "clips": len(rows),
        "speakers": speakers,
        "labels": labels,
        "counts": {f"{s}\t{lab}": n for (s, lab), n in sorted(counts.items())},
        "few_clips": few,
        "missing_speakers": missing,
        "seconds": round(sum(r["duration"] for r in rows), 1),
    }


def _write_if_changed(path: Path, obj, jsonl: bool = False) -> bool:
    if path.exists():
        try:
            old = read_jsonl(path) if jsonl else read_json(path)
        except (OSError, ValueError):
            old = None
        if json.dumps(old, sort_keys=True) == json.dumps(obj, sort_keys=True):
            return False
    (write_jsonl if jsonl else write_json)(path, obj)
    return True


def _previous_rows(out: Path, root: Path) -> dict[str, dict]:
    try:
        if read_json(out / DATASET)["root"] != str(root.resolve()):
            return {}
        return {r["path"]: r for r in read_jsonl(out / MANIFEST)}
    except (OSError, ValueError, KeyError):
        return {}


def _load_groups(root: Path, speakers_file: str | Path | None) -> dict[str, str]:
    candidates = [Path(speakers_file)] if speakers_file else [root / "speakers.json", root.parent / "speakers.json"]
    for path in candidates:
        if path.is_file():
            try:
                data = read_json(path)
                return {str(k): str(v["group"] if isinstance(v, dict) else v) for k, v in data.items()}
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise DataError(f"speakers file {path} is not a {{speaker: group}} mapping: {e}") from e
        elif speakers_file:
            raise DataError(f"speakers file {path} does not exist")
    return {}


def load_manifest(path: str | Path | None) -> Manifest:
    """Load a manifest written by `prepare` (path to the JSONL or its folder)."""
    if path is None or str(path) == "":
        raise DataError("no manifest given; run `phonemekit prepare ROOT --out DIR` and pass DIR")
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise DataError(f"no manifest at {path}; run `phonemekit prepare ROOT --out DIR` first")
    try:
        dataset = read_json(path.parent / DATASET)
        rows = read_jsonl(path)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read manifest {path}: {e}") from e
    groups = {r["speaker"]: r.get("group", "unknown") for r in rows}
    return Manifest(Path(dataset["root"]), rows, list(dataset["labels"]), path, groups)
