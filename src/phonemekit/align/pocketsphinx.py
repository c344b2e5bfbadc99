"""Forced alignment with pocketsphinx 5.1.1 (its wheel ships the en-US
acoustic model and the CMU dictionary): a word pass, then a phone pass on
the same audio. Times are 10 ms frames; silences and fillers are dropped."""

from __future__ import annotations

import re

import numpy as np

from phonemekit.align.base import AlignedPhone, AlignedWord, Aligner, AlignmentError, register_aligner
from phonemekit.align.dictionary import TO_ARPABET
from phonemekit.errors import ConfigError

FRAME_S = 0.01
_VARIANT = re.compile(r"\(\d+\)$")


class PocketsphinxAligner(Aligner):
    name = "pocketsphinx"

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as e:
            raise ConfigError("the pocketsphinx aligner needs pocketsphinx: pip install 'phonemekit[real]'") from e
        self.decoder = Decoder(samprate=16000, loglevel="FATAL", bestpath=False)

    def knows(self, word: str) -> bool:
        return self.decoder.lookup_word(word.lower()) is not None

    def add_word(self, word: str, sounds: list[str]) -> None:
        """A word the dictionary lacks, with its sounds (the inventory's), for this decoder."""
        unknown = [s for s in sounds if s not in TO_ARPABET]
        if unknown or not sounds or not word.isalpha():
            raise AlignmentError("unknown_sound", f"cannot add {word[:32]!r}: {' '.join(unknown[:5]) or 'no sounds'}")
        self.decoder.add_word(word.lower(), " ".join(TO_ARPABET[s] for s in sounds), True)

    def align_sounds(self, samples: np.ndarray, sounds: list[str]) -> list[AlignedPhone]:
        """Each sound as a one-phone word of its own (added to the dictionary as `snd<phone>`)."""
        names = []
        for s in sounds:
            if s not in TO_ARPABET:
                raise AlignmentError("unknown_sound", f"not a sound of the inventory: {s[:32]}")
            name = f"snd{TO_ARPABET[s].lower()}"
            if self.decoder.lookup_word(name) is None:
                self.decoder.add_word(name, TO_ARPABET[s], True)
            names.append(name)
        words = self.align(samples, names)
        if any(len(w.phones) != 1 for w in words):
            raise AlignmentError("align_failed", "a sound was not placed")
        return [w.phones[0] for w in words]

    def align(self, samples: np.ndarray, words: list[str]) -> list[AlignedWord]:
        unknown = [w for w in words if not self.knows(w)]
        if unknown:
            raise AlignmentError("unknown_word", f"not in the dictionary: {' '.join(unknown[:5])}")
        pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
        d = self.decoder
        try:
            d.set_align_text(" ".join(w.lower() for w in words))
            for second in (False, True):
                if second:
                    d.set_alignment()  # the phone pass, inside the words found
                d.start_utt()
                d.process_raw(pcm, full_utt=True)
                d.end_utt()
            out = []
            for w in d.get_alignment():
                name = _VARIANT.sub("", w.name)
                if name.startswith(("<", "[", "+")):
                    continue
                phones = tuple(AlignedPhone(p.name, p.start * FRAME_S, (p.start + p.duration) * FRAME_S, float(p.score)) for p in w if p.name != "SIL")
                out.append(AlignedWord(name, w.start * FRAME_S, (w.start + w.duration) * FRAME_S, phones))
        except RuntimeError as e:
            raise AlignmentError("align_failed", str(e)[:200]) from None
        if len(out) != len(words):
            raise AlignmentError("align_failed", f"{len(out)} words aligned of {len(words)}")
        return out


@register_aligner("pocketsphinx", "pocketsphinx 5.1.1 forced alignment (en-US model and CMU dictionary bundled)")
def _pocketsphinx() -> Aligner:
    return PocketsphinxAligner()
