"""Align an imported corpus once and turn it into phone segments.

Each utterance's alignment is appended to `DATA/alignments/<aligner>.jsonl`
as soon as it is done (keyed by the audio's sha256), so a killed run
resumes where it stopped and a second run aligns nothing. A canonical phone
is not always what was said: a phone becomes a training example only where
the aligner's phone for that word agrees with the corpus's canonical one
(and, when the corpus carries experts' scores, where they scored it right).
Every utterance the aligner cannot place goes to `rejected.jsonl` with a
reason."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from phonemekit.align.base import AlignmentError, get_aligner
from phonemekit.data.audio import load_audio
from phonemekit.data.dataset_files import write_if_changed
from phonemekit.data.importers.base import UTTERANCES
from phonemekit.data.manifest import DATASET, MANIFEST, REJECTED
from phonemekit.data.phones import to_label
from phonemekit.data.segments import SOURCE_AUDIO, segment_row
from phonemekit.errors import AudioValidationError, DataError
from phonemekit.fileio import folder_lock, read_json, read_jsonl

log = logging.getLogger(__name__)

GOOD_SCORE = 1.5  # experts' mean phone score (0-2) from which a phone counts as said right

_worker_aligner = None


def _align_one(name: str, root: str, u: dict) -> dict:
    """One utterance's alignment record (in a worker process)."""
    global _worker_aligner
    if _worker_aligner is None or _worker_aligner.name != name:
        _worker_aligner = get_aligner(name)
    rec = {"sha256": u["sha256"], "utt": u.get("utt")}
    try:
        clip = load_audio(Path(root) / u["path"], SOURCE_AUDIO)
        if clip.sha256 != u["sha256"]:
            raise AlignmentError("changed", "file changed since import")
        x, offset = clip.samples, 0.0
        if "segment" in u:
            offset = u["segment"][0]
            x = x[int(offset * 16000) : int(u["segment"][1] * 16000)]
        words = (u.get("text") or "").split()
        if not words:
            raise AlignmentError("no_text", "the utterance has no transcript")
        aligned = _worker_aligner.align(x, words)
    except AlignmentError as e:
        return {**rec, "error": e.reason, "detail": e.detail}
    except AudioValidationError as e:
        return {**rec, "error": e.reason, "detail": e.detail}
    rec["words"] = [[w.word, round(w.start + offset, 3), round(w.end + offset, 3),
                     [[p.phone, round(p.start + offset, 3), round(p.end + offset, 3), p.score] for p in w.phones]] for w in aligned]  # fmt: skip
    return rec


def _read_cache(path: Path) -> dict[str, dict]:
    done = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                done[rec["sha256"]] = rec
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a kill: aligned again
    return done


def alignments(data: str | Path, aligner: str = "pocketsphinx") -> dict[str, dict]:
    """Each aligned utterance's record (`words`: [word, start, end, [[phone,
    start, end, score], ...]]), by the utterance's sha256; failures left out."""
    return {k: v for k, v in _read_cache(Path(data) / "alignments" / f"{aligner}.jsonl").items() if "error" not in v}


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def align_dataset(data: str | Path, aligner: str = "pocketsphinx", *, workers: int = 2, context: float = 0.05, min_ms: float = 40.0,
                  progress=None) -> dict:  # fmt: skip
    """Align every utterance of an imported dataset (resumably) and write its
    phone segments (the phone +- `context` seconds) into the manifest."""
    data = Path(data)
    if not (data / UTTERANCES).is_file():
        raise DataError(f"{data} holds no {UTTERANCES}; run `phonemekit import FORMAT SRC --out {data}` first")
    with folder_lock(data, "align"):
        dataset = read_json(data / DATASET)
        utts = read_jsonl(data / UTTERANCES)
        cache = data / "alignments" / f"{aligner}.jsonl"
        cache.parent.mkdir(parents=True, exist_ok=True)
        done = _read_cache(cache)
        todo = [u for u in utts if u["sha256"] not in done]
        get_aligner(aligner)  # fails here, once, when the aligner is not installed
        task = progress.add_task(f"aligning ({aligner})", total=len(todo)) if progress and todo else None
        if todo:
            log.info("aligning %d utterances (%d already aligned) with %s on %d processes", len(todo), len(done), aligner, workers)
            with open(cache, "a", encoding="utf-8") as f, ProcessPoolExecutor(max(1, workers)) as pool:
                if f.tell() and not _ends_with_newline(cache):
                    f.write("\n")  # end the line a kill cut short; it is aligned again below
                for rec in pool.map(_align_one, [aligner] * len(todo), [dataset["root"]] * len(todo), todo, chunksize=8):
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    done[rec["sha256"]] = rec
                    if task is not None:
                        progress.advance(task)
                os.fsync(f.fileno())
        rows, rejected, stats = _segments(utts, done, context, min_ms)
        old_rejected = [r for r in read_jsonl(data / REJECTED) if r.get("stage") != "align"] if (data / REJECTED).is_file() else []
        write_if_changed(data / MANIFEST, rows, jsonl=True)
        write_if_changed(data / REJECTED, old_rejected + rejected, jsonl=True)
        dataset.update(num_clips=len(rows), aligned={"aligner": aligner, "context_s": context, "min_ms": min_ms, **stats})
        write_if_changed(data / DATASET, dataset)
        log.info("aligned %d of %d utterances; %d phone segments kept (%s)", stats["utterances_aligned"], len(utts), len(rows), stats["kept_why"])
        return stats


def _segments(utts: list[dict], done: dict[str, dict], context: float, min_ms: float) -> tuple[list[dict], list[dict], dict]:
    rows, rejected = [], []
    n = Counter()
    for u in utts:
        rec = done.get(u["sha256"])
        if rec is None or "error" in rec:
            why = rec["error"] if rec else "not_aligned"
            rejected.append({"path": u["path"], "utt": u.get("utt"), "reason": why, "detail": (rec or {}).get("detail", ""), "stage": "align"})
            n[f"failed_{why}"] += 1
            continue
        n["utterances_aligned"] += 1
        canonical = [ph for _, ph in u["words"]] if u.get("words") else None
        scores = u.get("scores")
        if canonical is not None and len(canonical) != len(rec["words"]):
            n["words_count_mismatch"] += 1
            continue
        for wi, (word, _, _, phones) in enumerate(rec["words"]):
            canon = canonical[wi] if canonical is not None else None
            n["words"] += 1
            if canon is not None and len(canon) != len(phones):
                n["phones_in_words_of_another_length"] += len(canon)
                continue
            for pi, (phone, start, end, score) in enumerate(phones):
                n["phones"] += 1
                if canon is not None and canon[pi] != phone:
                    n["dropped_disagree"] += 1
                    continue
                if (end - start) * 1000 < min_ms:
                    n["dropped_short"] += 1
                    continue
                expert = scores[wi][pi] if scores and wi < len(scores) and scores[wi] and pi < len(scores[wi]) else None
                if expert is not None and expert < GOOD_SCORE:
                    n["dropped_expert_score"] += 1
                    continue
                label = to_label(phone, "arpabet")
                if label is None:
                    n["dropped_unknown"] += 1
                    continue
                extra = {"phone": phone, "word": word.lower(), "word_index": wi, "aligner_score": score}
                if expert is not None:
                    extra["expert_score"] = expert
                rows.append(segment_row(u, start - context, end + context, label, **extra))
    stats = dict(n)
    stats["kept"] = len(rows)
    stats["kept_why"] = "aligner and canonical phones agree" + (", experts scored it right" if any(u.get("scores") for u in utts) else "")
    return rows, rejected, stats


def scored_segments(data: str | Path, aligner: str = "pocketsphinx", *, split: str = "test", context: float = 0.05) -> list[dict]:
    """Every aligned canonical phone of `split` that the corpus's experts
    scored, right or wrong (training keeps only the right ones), as segment
    rows carrying `expert_score`: what a pronunciation score is checked on.
    Empty when the corpus carries no scores."""
    data = Path(data)
    done = _read_cache(data / "alignments" / f"{aligner}.jsonl")
    rows = []
    for u in read_jsonl(data / UTTERANCES):
        rec, scores = done.get(u["sha256"]), u.get("scores")
        if u.get("split") != split or not scores or rec is None or "error" in rec or not u.get("words") or len(u["words"]) != len(rec["words"]):
            continue
        for wi, ((_, canon), (word, _, _, phones)) in enumerate(zip(u["words"], rec["words"])):
            if len(canon) != len(phones) or wi >= len(scores) or not scores[wi]:
                continue
            for pi, ((_, start, end, _), phone) in enumerate(zip(phones, canon)):
                label, expert = to_label(phone, "arpabet"), scores[wi][pi] if pi < len(scores[wi]) else None
                if label is not None and isinstance(expert, (int, float)):
                    rows.append(segment_row(u, start - context, end + context, label, word=word.lower(), word_index=wi, expert_score=float(expert)))
    return rows
