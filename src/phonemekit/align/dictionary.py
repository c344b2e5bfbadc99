"""The pronouncing dictionary aligners and verdicts share: the CMU
dictionary that pocketsphinx ships, in the inventory's sounds."""

from __future__ import annotations

import functools
from pathlib import Path

from phonemekit.data.phones import ARPABET, to_label

# The inventory's sound -> its ARPAbet phone (the table is one to one).
TO_ARPABET: dict[str, str] = {label: phone for phone, label in ARPABET.items()}


@functools.cache
def cmu_dictionary() -> dict[str, list[str]]:
    """Each alphabetic word's first pronunciation, in the inventory's sounds
    (words with a phone the inventory lacks are left out); empty without
    pocketsphinx."""
    try:
        import pocketsphinx
    except ImportError:
        return {}
    out: dict[str, list[str]] = {}
    with open(Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict", encoding="utf-8") as f:
        for line in f:
            word, _, phones = line.strip().partition(" ")
            if not word.isalpha() or word in out:  # "word(2)": a variant; the first pronunciation is kept
                continue
            sounds = [to_label(p, "arpabet") for p in phones.split()]
            if sounds and None not in sounds:
                out[word] = sounds
    return out
