"""`prepare`: scan `ROOT/<speaker>/<label>/*`, validate every file, write a
JSONL manifest, a fixed sorted `labels.json` and `rejected.jsonl`.

Bad files are reported and skipped (or stop the run with `strict`); a good
file is never lost because a neighbour was bad. Paths must stay under ROOT,
for every reader of a manifest, not only here. Speaker and label names are
NFC-normalised (macOS writes NFD), and the same audio under two names is
kept once. Re-running on unchanged data rewrites nothing; a file whose bytes
changed is validated again even if its size and time did not change.

`prepare` also writes the data's pseudonym salt (`OUT/salt`, owner-only):
every command that reads this manifest names speakers the same way.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from phonemekit.config import AudioConfig
from phonemekit.data import audio
from phonemekit.data.dataset_files import SALT, ensure_salt, write_if_changed
from phonemekit.data.inventory import label_problem
from phonemekit.data.segments import segment_samples
from phonemekit.errors import AudioValidationError, DataError
from phonemekit.fileio import folder_lock, inside, read_json, read_jsonl, sha256_file, walk_files
from phonemekit.privacy import audit

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
LABELS = "labels.json"
REJECTED = "rejected.jsonl"
DATASET = "dataset.json"
DUPLICATES = ("keep-first", "reject-all")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Manifest:
    """Validated clips of one dataset. `root` resolves the relative paths."""

    root: Path
    rows: list[dict]
    labels: list[str]
    path: Path | None = None
    groups: dict[str, str] = field(default_factory=dict)
    own_salt: str | None = None  # a manifest made in memory (`combine`) carries its parts' salt

    @property
    def speakers(self) -> list[str]:
        return sorted({r["speaker"] for r in self.rows})

    @property
    def salt(self) -> str | None:
        """The data's pseudonym salt (written by `prepare`), if it has one."""
        if self.own_salt:
            return self.own_salt
        path = self.path.parent / SALT if self.path else None
        try:
            return path.read_text().strip() if path else None
        except OSError:
            return None

    def rows_of(self, speakers) -> list[dict]:
        """The rows of these speakers (a split's part), in manifest order."""
        keep = set(speakers)
        return [r for r in self.rows if r["speaker"] in keep]

    def audio_path(self, row: dict) -> Path:
        """Where a row's audio is; a path that leads out of the data root is refused."""
        return inside(self.root, row.get("path"))

    def samples(self, row: dict, audio_cfg: AudioConfig | None = None):
        """A row's audio (float32, 16 kHz): its file, or its segment of an utterance."""
        if "start" in row:
            return segment_samples(self.audio_path(row), row, audio_cfg)
        return audio.load_audio(self.audio_path(row), audio_cfg).samples


def _bad_name(name: str) -> str | None:
    if name in ("..", ".") or "/" in name or "\\" in name:
        return "path traversal in name"
    if any("\udc80" <= c <= "\udcff" for c in name):  # bytes that were not UTF-8, escaped by the file system decoder
        return "name is not valid UTF-8"
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        return "control character in name"
    return None


def nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _scan(root: Path, allowed_labels: set[str] | None) -> tuple[list[tuple[Path, str, str]], list[dict]]:
    """Candidate files (path, speaker, label) and layout rejections. The walk
    is iterative and stops below ROOT/<speaker>/<label>/: deeper folders are
    one rejection each, however deep they go."""
    real_root = root.resolve()
    found, rejected = [], []

    def reject(path: Path, reason: str, detail: str = "") -> None:
        rel = os.path.relpath(path, root)
        rejected.append({"path": rel, "reason": reason, "detail": detail})

    bad_folders: set[Path] = set()
    for path, depth in walk_files(root, max_depth=2):
        parts = path.relative_to(root).parts
        if path.name.startswith(".") and not path.is_dir():
            continue
        problems = [(i, p) for i, p in enumerate(map(_bad_name, parts)) if p]
        if problems:
            i, problem = problems[0]
            where = root.joinpath(*parts[: i + 1])  # a badly named folder is one rejection, not one per file
            if where not in bad_folders:
                bad_folders.add(where)
                reject(where, "bad_name", problem)
            continue
        if path.is_dir() and not path.is_symlink():
            reject(path, "bad_layout", "folders below ROOT/<speaker>/<label>/ are not read")
            continue
        if path.is_symlink():
            try:
                target = path.resolve(strict=True)
                target.relative_to(real_root)
            except (ValueError, OSError, RuntimeError):
                reject(path, "symlink_escape", "link points outside the data root")
                continue
            if target.is_dir():
                reject(path, "symlink_dir", "symlinked folders are not followed")
                continue
        if depth != 3:
            if path.suffix.lower() in audio.AUDIO_EXTENSIONS:
                reject(path, "bad_layout", "expected ROOT/<speaker>/<label>/<file>")
            continue
        speaker, label = nfc(parts[0]), nfc(parts[1])
        if why := label_problem(label):
            if (where := path.parent) not in bad_folders:
                bad_folders.add(where)
                reject(where, "bad_label", why)
            continue
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
    duplicates: str = "keep-first",
    progress=None,
) -> dict:
    """Validate the corpus under `root` and write the manifest files to `out`.
    `duplicates`: the same audio (sha256) under several paths is kept once,
    at its first path (`keep-first`), or rejected everywhere (`reject-all`)."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"data root {root} is not a folder")
    if duplicates not in DUPLICATES:
        raise DataError(f"invalid value for 'duplicates': {duplicates!r} ({'|'.join(DUPLICATES)})")
    audio_cfg = audio_cfg or AudioConfig()
    with folder_lock(out, "prepare"):
        return _prepare(root, out, audio_cfg, strict, labels, speakers_file, duplicates, progress)


def _prepare(root: Path, out: Path, audio_cfg: AudioConfig, strict: bool, labels: list[str] | None, speakers_file, duplicates: str, progress) -> dict:
    labels = [nfc(x) for x in labels] if labels else None
    candidates, rejected = _scan(root, set(labels) if labels else None)
    previous = _previous_rows(out, root)
    groups = _load_groups(root, speakers_file)

    rows: list[dict] = []
    task = progress.add_task("validating clips", total=len(candidates)) if progress else None
    for path, speaker, label in candidates:
        rel = os.path.relpath(path, root)
        try:
            # One read: the hash and the validation are of the same bytes, and a
            # file whose bytes changed is noticed even if its size and time did not.
            data = audio.read_bytes(path, audio_cfg)
            sha = hashlib.sha256(data).hexdigest()
            old = previous.get(rel)
            if old and old["sha256"] == sha and old["speaker"] == speaker and old["label"] == label:
                rows.append(old)
            else:
                clip = audio.decode(data, path, audio_cfg)
                for w in clip.warnings:
                    log.warning("%s: %s", rel, w)
                rows.append(
                    {
                        "path": rel,
                        "speaker": speaker,
                        "label": label,
                        "duration": round(clip.duration, 4),
                        "sample_rate": clip.source_rate,
                        "sha256": sha,
                        "size": len(data),
                        "group": groups.get(speaker, "unknown"),
                    }
                )
        except AudioValidationError as e:
            rejected.append({"path": rel, "reason": e.reason, "detail": e.detail})
        if progress:
            progress.advance(task)
    for r in rows:  # speakers.json may have changed without the audio changing
        r["group"] = groups.get(r["speaker"], r.get("group", "unknown"))
        r.pop("mtime_ns", None)
    rows.sort(key=lambda r: r["path"])
    rows, dup = _drop_duplicates(rows, duplicates)
    rejected += dup
    rejected.sort(key=lambda r: r["path"])
    if strict and rejected:
        first = rejected[0]
        raise DataError(f"{len(rejected)} bad file(s); first: {first['path']}: {first['reason']} {first['detail']}".strip())
    if not rows:
        raise DataError(f"no usable clips under {root} (rejected {len(rejected)}); expected ROOT/<speaker>/<label>/*.wav")

    label_list = sorted({r["label"] for r in rows} | set(labels or []))
    dataset = {"root": str(root.resolve()), "labels": label_list, "num_clips": len(rows), "num_rejected": len(rejected)}
    ensure_salt(out)
    changed = write_if_changed(out / MANIFEST, rows, jsonl=True)
    changed |= write_if_changed(out / REJECTED, rejected, jsonl=True)
    changed |= write_if_changed(out / LABELS, label_list)
    changed |= write_if_changed(out / DATASET, dataset)
    if changed:
        audit("ingest", clips=len(rows), rejected=len(rejected), speakers=len({r["speaker"] for r in rows}), manifest_sha256=sha256_file(out / MANIFEST))
    summary = summarise(rows, label_list)
    summary.update(rejected=len(rejected), changed=changed, reasons=dict(Counter(r["reason"] for r in rejected)))
    return summary


def is_prepared(path: str | Path) -> bool:
    """A manifest file, or a folder that `prepare` wrote (its manifest and its dataset.json)."""
    path = Path(path)
    return (path.suffix == ".jsonl" and path.is_file()) or ((path / MANIFEST).is_file() and (path / DATASET).is_file())


def load_or_prepare(data: str | Path, out: str | Path, progress=None) -> Manifest:
    """A prepared dataset as it is, or a recordings root prepared into OUT/data first."""
    if is_prepared(data):
        return load_manifest(data)
    prepare(data, Path(out) / "data", progress=progress)
    return load_manifest(Path(out) / "data")


def read_label_list(path: str | Path) -> list[str]:
    """A `--labels` file: a JSON list of distinct, non-empty label names."""
    try:
        data = read_json(path)
    except OSError as e:
        raise DataError(f"cannot read the labels file {path}: {e.strerror or e}") from e
    except (UnicodeDecodeError, ValueError) as e:
        raise DataError(f"the labels file {path} is not JSON: {e}") from e
    if not isinstance(data, list) or not data or not all(isinstance(x, str) and x.strip() for x in data):
        raise DataError(f'the labels file {path} must hold a non-empty JSON list of label names, e.g. ["a_ae", "sh"]')
    bad = [why for x in data if (why := label_problem(nfc(x)))]
    if bad:
        raise DataError(f"the labels file {path}: {bad[0]}")
    return sorted({nfc(x) for x in data})


def _drop_duplicates(rows: list[dict], how: str) -> tuple[list[dict], list[dict]]:
    """The same audio under two paths (a copy, hard link or symlink) could put
    one clip in train and in test: keep it once, or reject every copy."""
    by_sha: dict[str, list[dict]] = {}
    for r in rows:
        by_sha.setdefault(r["sha256"], []).append(r)
    kept, rejected = [], []
    for r in rows:
        same = by_sha[r["sha256"]]
        if len(same) == 1 or (how == "keep-first" and r is same[0]):
            kept.append(r)
            continue
        other = same[1]["path"] if r is same[0] else same[0]["path"]
        detail = f"same audio as {other}" + (f" (speaker {same[0]['speaker']}, label {same[0]['label']})" if how == "keep-first" else "")
        rejected.append({"path": r["path"], "reason": "duplicate", "detail": detail})
        log.warning("%s: duplicate audio, %s", r["path"], detail)
    return kept, rejected


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
                return {nfc(str(k)): str(v["group"] if isinstance(v, dict) else v) for k, v in data.items()}
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise DataError(f"speakers file {path} is not a {{speaker: group}} mapping: {e}") from e
        elif speakers_file:
            raise DataError(f"speakers file {path} does not exist")
    return {}


def combine(parts: list[tuple[Manifest, list[dict]]], *, same_speakers: bool = False) -> Manifest:
    """One manifest over the chosen rows of several (training on two corpora
    together): paths re-rooted at the folders' common parent, rows otherwise
    unchanged (their `split`, groups, features by sha256). The label lists
    must agree and no speaker may be in two parts, unless `same_speakers`
    (augmented copies of one corpus's clips beside it)."""
    labels = parts[0][0].labels
    if any(m.labels != labels for m, _ in parts):
        raise DataError("cannot combine datasets whose label lists differ")
    seen: dict[str, int] = {}
    for k, (_, rows) in enumerate(parts):
        for spk in {r["speaker"] for r in rows}:
            if seen.setdefault(spk, k) != k and not same_speakers:
                raise DataError(f"speaker {spk!r} is in two of the datasets combined")
    root = Path(os.path.commonpath([str(m.root.resolve()) for m, _ in parts]))
    rows, groups = [], {}
    for m, part in parts:
        prefix = os.path.relpath(m.root.resolve(), root)
        rows += [{**r, "path": os.path.normpath(os.path.join(prefix, r["path"]))} for r in part]
        groups.update({r["speaker"]: m.groups.get(r["speaker"], "unknown") for r in part})
    return Manifest(root, rows, list(labels), None, groups, own_salt=parts[0][0].salt)


def load_manifest(path: str | Path | None) -> Manifest:
    """Load a manifest written by `prepare` (path to the JSONL or its folder).
    Every row is checked: a row that is not an object, lacks a field, or has
    a path leading out of the data root makes the manifest one clear error."""
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
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"cannot read manifest {path}: {e}") from e
    if not isinstance(dataset, dict) or not isinstance(dataset.get("root"), str) or not isinstance(dataset.get("labels"), list):
        raise DataError(f"{path.parent / DATASET} is malformed; run `phonemekit prepare` again")
    root, labels = Path(dataset["root"]), [str(x) for x in dataset["labels"]]
    for i, r in enumerate(rows, 1):
        problem = _row_problem(r, set(labels))
        if problem:
            raise DataError(f"{path} line {i}: {problem}; run `phonemekit prepare` again")
        try:
            inside(root, r["path"])
        except DataError as e:
            raise DataError(f"{path} line {i}: {e}") from None
    groups = {r["speaker"]: r.get("group", "unknown") for r in rows}
    return Manifest(root, rows, labels, path, groups)


def _row_problem(r: object, labels: set[str]) -> str | None:
    if not isinstance(r, dict):
        return "a row is not an object"
    for key in ("path", "speaker", "label", "sha256"):
        if not isinstance(r.get(key), str) or not r[key]:
            return f"the row has no {key}"
    if r["label"] not in labels:
        return f"label {r['label']!r} is not in the dataset's labels"
    if not _SHA256.fullmatch(r["sha256"]):
        return "sha256 is not a sha256"
    d = r.get("duration")
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d <= 0:
        return "duration is not a positive number"
    if "start" in r:  # a segment of an utterance
        a, b = r.get("start"), r.get("end")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (a, b)) or not 0 <= a < b:
            return "start/end are not a segment"
        if not isinstance(r.get("source_sha256"), str) or not _SHA256.fullmatch(r["source_sha256"]):
            return "source_sha256 is not a sha256"
    return None
