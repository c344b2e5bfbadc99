"""Aligners, one registry: transcript + audio -> word and phone times.
`align_dataset` aligns an imported corpus once (cached per utterance,
resumable) and writes its phone segments into the manifest.

    phonemekit align DATA [--aligner pocketsphinx]

`ctc` aligns with a phone recogniser (`training.sequence`), given as a
loaded model: `get_aligner("ctc", model=...)`.
"""

from phonemekit.align import ctc, pocketsphinx  # noqa: F401  (register themselves)
from phonemekit.align.base import AlignedPhone, AlignedWord, Aligner, available_aligners, get_aligner, register_aligner
from phonemekit.align.dataset import align_dataset

__all__ = ["AlignedPhone", "AlignedWord", "Aligner", "align_dataset", "available_aligners", "get_aligner", "register_aligner"]
