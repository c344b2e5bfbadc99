"""TIMIT's layout: `{TRAIN,TEST}/<dialect>/<speaker>/<sentence>.WAV` with a
`.PHN` beside each (start and end in samples, one phone per line); the 61
phones are folded to 39 and mapped to the inventory (`data.phones`)."""

from __future__ import annotations

from pathlib import Path

from phonemekit.data.importers.base import Imported, register_importer
from phonemekit.data.phones import to_label
from phonemekit.fileio import walk_files

TIMIT_RATE = 16000


@register_importer("timit", "TIMIT (.WAV with .PHN sample offsets; 61 phones folded to 39)")
def timit(src: Path, context: float = 0.05) -> Imported:
    imp = Imported(src, info={"corpus": "timit"})
    for path, _ in walk_files(src):
        if path.suffix.lower() != ".phn":
            continue
        wav, rel = imp.audio_beside(path, (".WAV", ".wav"))
        if rel is None:
            continue
        parts = Path(rel).parts
        split = parts[0].lower() if parts[0].lower() in ("train", "test") else None
        speaker = parts[-2]
        utt = f"{speaker}_{wav.stem}"
        imp.utterances.append({"utt": utt, "path": rel, "speaker": speaker, **({"split": split} if split else {})})
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            fields = line.split()
            if len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit():
                imp.reject(f"{path}:{n}", "bad_line", line[:100])
                continue
            a, b, phone = int(fields[0]) / TIMIT_RATE, int(fields[1]) / TIMIT_RATE, fields[2]
            label = to_label(phone, "timit")
            if label is None:
                if phone.lower() not in ("h#", "pau", "epi") and not phone.lower().endswith("cl") and phone.lower() != "q":
                    imp.unknown_phones[phone] += 1
                continue
            if b <= a:
                imp.reject(f"{path}:{n}", "bad_interval", line[:100])
                continue
            imp.segments.append({"path": rel, "start": a - context, "end": b + context, "label": label, "phone": phone, "utt": utt})
    return imp
