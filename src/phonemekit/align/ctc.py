"""CTC forced alignment with a phone recogniser (`training.sequence`
trains one on whole utterances): the recogniser's frame log-probabilities,
then a Viterbi path through the expected sounds with blanks between them
(`models.decoding.forced_align`). Words become sounds through the CMU
dictionary. Times are the encoder's frames (20 ms for Whisper)."""

from __future__ import annotations

import numpy as np
import torch

from phonemekit.align.base import AlignedPhone, AlignedWord, Aligner, AlignmentError, register_aligner
from phonemekit.align.dictionary import TO_ARPABET, cmu_dictionary
from phonemekit.errors import ConfigError
from phonemekit.models.decoding import forced_align
from phonemekit.models.model import PhonemeModel


class CTCAligner(Aligner):
    name = "ctc"

    def __init__(self, model: PhonemeModel | None = None) -> None:
        if model is None or model.encoder is None or model.output_kind != "ctc":
            raise ConfigError("the ctc aligner needs a phone recogniser with its encoder (a CTC model; `make real` trains one)")
        self.model = model.eval()
        self.index = {label: i for i, label in enumerate(model.labels)}

    def knows(self, word: str) -> bool:
        return word.lower() in cmu_dictionary()

    @torch.no_grad()
    def log_probs(self, samples: np.ndarray) -> np.ndarray:
        """(frames, labels + blank) log-probabilities of one utterance."""
        wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]
        feats, lengths = self.model.encode(wave, torch.tensor([wave.shape[1]]))
        return self.model.head_outputs(feats, lengths)[0, : int(self.model.out_lengths(lengths)[0])].numpy()

    def transcribe(self, samples: np.ndarray) -> list[tuple[str, float, float]]:
        """The sounds heard, free of any expectation (greedy CTC): (sound, start, end),
        the span of frames where the sound's label wins, in seconds."""
        best = self.log_probs(samples).argmax(-1)
        step, out, k = 1.0 / self.model.spec.frame_rate, [], 0
        while k < len(best):
            j = k
            while j + 1 < len(best) and best[j + 1] == best[k]:
                j += 1
            if best[k] != self.model.blank:
                out.append((self.model.labels[int(best[k])], k * step, (j + 1) * step))
            k = j + 1
        return out

    def align_sounds(self, samples: np.ndarray, sounds: list[str]) -> list[AlignedPhone]:
        """The inventory's sounds placed in the audio, in order."""
        unknown = [s for s in sounds if s not in self.index]
        if unknown:
            raise AlignmentError("unknown_sound", f"not a sound of this recogniser: {' '.join(unknown[:5])}")
        lp = self.log_probs(samples)
        try:
            spans = forced_align(lp, [self.index[s] for s in sounds], self.model.blank)
        except ValueError as e:
            raise AlignmentError("align_failed", str(e)) from None
        step = 1.0 / self.model.spec.frame_rate
        return [AlignedPhone(TO_ARPABET[s], a * step, b * step, score) for s, (a, b, score) in zip(sounds, spans)]

    def align(self, samples: np.ndarray, words: list[str]) -> list[AlignedWord]:
        lexicon = cmu_dictionary()
        unknown = [w for w in words if w.lower() not in lexicon]
        if unknown:
            raise AlignmentError("unknown_word", f"not in the dictionary: {' '.join(unknown[:5])}")
        per_word = [lexicon[w.lower()] for w in words]
        phones = self.align_sounds(samples, [s for ws in per_word for s in ws])
        out, k = [], 0
        for w, ws in zip(words, per_word):
            mine = tuple(phones[k : k + len(ws)])
            k += len(ws)
            out.append(AlignedWord(w.lower(), mine[0].start, mine[-1].end, mine))
        return out


@register_aligner("ctc", "CTC forced alignment with a phone recogniser (pass model=, a loaded CTC model with its encoder)")
def _ctc(model: PhonemeModel | None = None) -> Aligner:
    return CTCAligner(model)
