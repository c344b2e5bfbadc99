"""Aligners, one registry: transcript + audio -> word and phone times.
`align_dataset` aligns an imported corpus once (cached per utterance,
resumable) and writes its phone segments into the manifest.

    phonemekit align DATA [--aligner pocketsphinx]
"""

from phonemekit.align import pocketsphinx  # noqa: F401  (registers itself)
from phonemekit.align.base import AlignedPhone, AlignedWord, Aligner, available_aligners, get_aligner, register_aligner
from phonemekit.align.dataset import align_dataset

__all__ = ["AlignedPhone", "AlignedWord", "Aligner", "align_dataset", "available_aligners", "get_aligner", "register_aligner"]
