"""Kaldi data folders (`wav.scp`, `text`, `utt2spk`; optional `segments`,
`spk2gender`, `spk2age`), and speechocean762 on top of them: its official
train/test split, age groups, the canonical phones of every word
(`resource/text-phone`) and, when a copy carries `resource/scores.json`,
the experts' phone scores."""

from __future__ import annotations

import json
from pathlib import Path

from phonemekit.data.importers.base import Imported, group_of_age, register_importer
from phonemekit.data.phones import canonical_arpabet, to_label

MAX_TABLE_BYTES = 50_000_000  # a Kaldi table or score file larger than this is refused, not read


def read_table(path: Path, imp: Imported, fields: int = 2) -> dict[str, list[str]]:
    """A Kaldi table: key, then the rest of the line (split into `fields` - 1 parts at most)."""
    if not path.is_file():
        return {}
    if path.stat().st_size > MAX_TABLE_BYTES:
        imp.reject(path, "too_large", f"a table over {MAX_TABLE_BYTES} bytes")
        return {}
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.strip().split(None, fields - 1)
        if not parts:
            continue
        if len(parts) < fields:
            imp.reject(f"{path}:{n}", "bad_line", line[:100])
            continue
        out[parts[0]] = parts[1:]
    return out


def read_kaldi_dir(d: Path, imp: Imported, split: str | None = None) -> None:
    """One Kaldi data folder's utterances (and timed segments) into `imp`."""
    wavs = read_table(d / "wav.scp", imp)
    text = read_table(d / "text", imp)
    utt2spk = read_table(d / "utt2spk", imp)
    gender = read_table(d / "spk2gender", imp)
    age = read_table(d / "spk2age", imp)
    segments = read_table(d / "segments", imp, fields=4)
    recordings = {}
    for rec, (where,) in wavs.items():
        where = where.strip()
        if where.endswith("|"):
            imp.reject(rec, "command_in_wav_scp", "wav.scp entries that run a command are not executed")
            continue
        rel = imp.relative(where)
        if rel is not None:
            recordings[rec] = rel
    for utt, (spk,) in utt2spk.items():
        seg = segments.get(utt)
        rec = seg[0] if seg else utt
        if rec not in recordings:
            imp.reject(utt, "missing", "no wav.scp entry (or its file was refused)")
            continue
        row = {"utt": utt, "path": recordings[rec], "speaker": spk, "text": " ".join(text.get(utt, [""])).strip()}
        if split:
            row["split"] = split
        if spk in gender:
            row["gender"] = gender[spk][0]
        if spk in age:
            row["age"] = age[spk][0]
            if g := group_of_age(age[spk][0]):
                row["group"] = g
        if seg:
            try:
                row["segment"] = [float(seg[1]), float(seg[2])]
            except ValueError:
                imp.reject(utt, "bad_segment", " ".join(seg))
                continue
        imp.utterances.append(row)


@register_importer("kaldi", "a Kaldi data folder (wav.scp, text, utt2spk; segments, spk2gender, spk2age when present)")
def kaldi(src: Path) -> Imported:
    imp = Imported(src)
    read_kaldi_dir(src, imp)
    return imp


@register_importer("speechocean762", "speechocean762 (train/ and test/ Kaldi folders, resource/text-phone, scores.json when present)")
def speechocean762(src: Path) -> Imported:
    imp = Imported(src, info={"corpus": "speechocean762", "licence": "CC BY 4.0"})
    for split in ("train", "test"):
        if (src / split / "wav.scp").is_file():
            read_kaldi_dir(src / split, imp, split)
    if not imp.utterances:
        imp.reject(src, "not_speechocean762", "no train/wav.scp or test/wav.scp")
        return imp
    words = _canonical_phones(src / "resource" / "text-phone", imp)
    scores = _scores(src / "resource" / "scores.json", imp)
    imp.info["scores"] = scores is not None
    for u in imp.utterances:
        ws = words.get(u["utt"])
        if ws:
            u["words"] = ws  # [[word index, [ARPAbet phones]], ...], in order
        if scores and isinstance(scores.get(u["utt"]), dict):
            u["scores"] = _phone_scores(scores[u["utt"]])
    return imp


def _canonical_phones(path: Path, imp: Imported) -> dict[str, list]:
    out: dict[str, list] = {}
    for key, (phones,) in read_table(path, imp).items():
        utt, _, idx = key.partition(".")
        if not idx.isdigit():
            imp.reject(f"{path}:{key}", "bad_line", "expected <utt>.<word index>")
            continue
        arpa = [canonical_arpabet(p) for p in phones.split()]
        for p in arpa:
            if to_label(p, "arpabet") is None:
                imp.unknown_phones[p] += 1
        out.setdefault(utt, []).append([int(idx), arpa])
    for ws in out.values():
        ws.sort()
    return out


def _scores(path: Path, imp: Imported) -> dict | None:
    if not path.is_file():
        return None
    if path.stat().st_size > 10 * MAX_TABLE_BYTES:
        imp.reject(path, "too_large", "scores.json over 500 MB")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        imp.reject(path, "bad_scores", str(e)[:200])
        return None
    if not isinstance(data, dict):
        imp.reject(path, "bad_scores", "expected an object of utterances")
        return None
    return data


def _phone_scores(entry: dict) -> list | None:
    """Per word, the experts' per-phone scores (0-2), when they have the right types."""
    words = entry.get("words")
    if not isinstance(words, list):
        return None
    out = []
    for w in words:
        acc = w.get("phones-accuracy") if isinstance(w, dict) else None
        if not isinstance(acc, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in acc):
            return None
        out.append([float(x) for x in acc])
    return out
