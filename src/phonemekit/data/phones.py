"""Phone labels of other corpora mapped to the inventory's sounds, through
declared tables (never guessed): ARPAbet with or without stress digits
(CMU, speechocean762), TIMIT's 61 phones folded to 39 (Lee and Hon, 1989),
and IPA. A label none of them knows is counted and skipped by the caller."""

from __future__ import annotations

import re

from phonemekit.data.inventory import SOUNDS

# ARPAbet (39 phones, stress removed) -> the inventory's label.
ARPABET: dict[str, str] = {
    **{s.label.split("_")[1].upper(): s.label for s in SOUNDS if "_" in s.label and s.label != "th_voiced"},
    "B": "b", "CH": "ch", "D": "d", "DH": "th_voiced", "F": "f", "G": "g", "HH": "h", "JH": "j", "K": "k", "L": "l",
    "M": "m", "N": "n", "NG": "ng", "P": "p", "R": "r", "S": "s", "SH": "sh", "T": "t", "TH": "th", "V": "v",
    "W": "w", "Y": "y", "Z": "z", "ZH": "zh",
}  # fmt: skip

# TIMIT's 61 phones -> ARPAbet's 39; closures and pauses map to None (silence, not a sound).
TIMIT: dict[str, str | None] = {
    "aa": "AA", "ae": "AE", "ah": "AH", "ao": "AA", "aw": "AW", "ax": "AH", "ax-h": "AH", "axr": "ER", "ay": "AY", "b": "B",
    "bcl": None, "ch": "CH", "d": "D", "dcl": None, "dh": "DH", "dx": "D", "eh": "EH", "el": "L", "em": "M", "en": "N",
    "eng": "NG", "epi": None, "er": "ER", "ey": "EY", "f": "F", "g": "G", "gcl": None, "h#": None, "hh": "HH", "hv": "HH",
    "ih": "IH", "ix": "IH", "iy": "IY", "jh": "JH", "k": "K", "kcl": None, "l": "L", "m": "M", "n": "N", "ng": "NG",
    "nx": "N", "ow": "OW", "oy": "OY", "p": "P", "pau": None, "pcl": None, "q": None, "r": "R", "s": "S", "sh": "SH",
    "t": "T", "tcl": None, "th": "TH", "uh": "UH", "uw": "UW", "ux": "UW", "v": "V", "w": "W", "y": "Y", "z": "Z",
    "zh": "SH",
}  # fmt: skip

# IPA (as the inventory writes it, plus common variants) -> label.
IPA: dict[str, str] = {
    **{s.ipa: s.label for s in SOUNDS},
    "ɡ": "g", "g": "g", "r": "r", "ɹ": "r", "ʧ": "ch", "t͡ʃ": "ch", "ʤ": "j", "d͡ʒ": "j", "ɚ": "er_er", "ɜ": "er_er", "ɜː": "er_er",
    "iː": "ee_iy", "uː": "oo_uw", "ɑː": "o_aa", "ɔː": "aw_ao", "ə": "u_ah", "ɐ": "u_ah", "e": "e_eh", "o": "oa_ow", "ɒ": "o_aa",
}  # fmt: skip

_STRESS = re.compile(r"[012]$")
TABLES = ("arpabet", "timit", "ipa")


def to_label(phone: str, table: str) -> str | None:
    """The inventory label of `phone` in `table`, or None when the table has none
    (or maps it to silence)."""
    if table == "arpabet":
        return ARPABET.get(_STRESS.sub("", phone.upper().split("_")[0]))
    if table == "timit":
        arpa = TIMIT.get(phone.lower())
        return ARPABET.get(arpa) if arpa else None
    if table == "ipa":
        return IPA.get(phone)
    raise ValueError(f"unknown phone table {table!r} ({', '.join(TABLES)})")


def canonical_arpabet(phone: str) -> str:
    """`IY0_E` -> `IY`: a speechocean762 (or CMU) phone without stress and position marks."""
    return _STRESS.sub("", phone.upper().split("_")[0])


# Manner classes of the ARPAbet phones, for figures by class of sound.
_CLASSES = {
    "vowel": "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW",
    "stop": "B D G K P T",
    "affricate": "CH JH",
    "fricative": "DH F HH S SH TH V Z ZH",
    "nasal": "M N NG",
    "approximant": "L R W Y",
}
SOUND_CLASS: dict[str, str] = {ARPABET[p]: c for c, phones in _CLASSES.items() for p in phones.split() if p in ARPABET}
