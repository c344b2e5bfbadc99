"""Assessing reading: a verdict for every sound of a word against what the
child was asked to say.

    phonemekit assess clip.wav --word cat --mode segment

`segment`: sounds said apart (as phonics teaches segmenting, "c - a - t"),
split by the live engine's VAD, each classified, and matched to the
expected sounds by alignment so that a missing or extra sound shifts
nothing. `blend`: the word said whole, aligned inside by the forced aligner
(pocketsphinx), each phone classified. Per expected sound: `correct`,
`substituted` (with the sound heard) or `missing`; extra sounds are listed
as `inserted`.
"""

from phonemekit.assess.assess import assess, assess_expected
from phonemekit.assess.lexicon import word_sounds

__all__ = ["assess", "assess_expected", "word_sounds"]
