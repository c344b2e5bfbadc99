"""Words to the sounds a phonics game expects: the project's own phonics
lexicon first (`phonics.json`: grapheme-phoneme correspondences as
phonics teaches them, e.g. "ship" is sh-i-p), then the CMU dictionary that
pocketsphinx ships, mapped to the inventory through the ARPAbet table."""

from __future__ import annotations

import functools
import json
from importlib import resources

from phonemekit.align.dictionary import cmu_dictionary
from phonemekit.data.inventory import label_problem
from phonemekit.errors import ConfigError


@functools.cache
def phonics_lexicon() -> dict[str, list[str]]:
    return json.loads(resources.files("phonemekit.assess").joinpath("phonics.json").read_text(encoding="utf-8"))


@functools.cache
def default_variants() -> dict[str, tuple[str, ...]]:
    """Accepted variants per sound (`variants.json`: accents that say a sound another way)."""
    raw = json.loads(resources.files("phonemekit.assess").joinpath("variants.json").read_text(encoding="utf-8"))
    return {k: tuple(v) for k, v in raw["variants"].items()}


def read_variants(path, labels: list[str]) -> dict[str, tuple[str, ...]]:
    """A user's variants file (`{"variants": {"sound": ["variant", ...]}}`), checked against the model's labels."""
    from phonemekit.fileio import read_json

    try:
        raw = read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read variants file {path}: {e}") from None
    table = raw.get("variants") if isinstance(raw, dict) else None
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise ConfigError(f'{path}: expected {{"variants": {{"sound": ["variant", ...]}}}}')
    unknown = sorted({str(s)[:32] for k, v in table.items() for s in [k, *v] if s not in labels})
    if unknown:
        raise ConfigError(f"{path}: sounds this model does not know: {' '.join(unknown[:5])}")
    return {k: tuple(v) for k, v in table.items()}


# Grapheme-phoneme correspondences as phonics teaches them, longest first:
# the small G2P for words in neither dictionary (`phonics_g2p`).
GPC: dict[str, tuple[str, ...]] = {
    "tch": ("ch",), "dge": ("j",), "igh": ("ie_ay",),
    "sh": ("sh",), "ch": ("ch",), "th": ("th",), "ng": ("ng",), "ck": ("k",), "qu": ("k", "w"), "wh": ("w",), "ph": ("f",),
    "kn": ("n",), "wr": ("r",), "ll": ("l",), "ss": ("s",), "ff": ("f",), "zz": ("z",), "bb": ("b",), "dd": ("d",), "gg": ("g",),
    "mm": ("m",), "nn": ("n",), "pp": ("p",), "rr": ("r",), "tt": ("t",),
    "ee": ("ee_iy",), "ea": ("ee_iy",), "oa": ("oa_ow",), "ai": ("ai_ey",), "ay": ("ai_ey",), "oi": ("oy_oy",), "oy": ("oy_oy",),
    "ou": ("ow_aw",), "ow": ("ow_aw",), "oo": ("oo_uw",), "ew": ("oo_uw",), "ue": ("oo_uw",), "ie": ("ie_ay",), "aw": ("aw_ao",),
    "au": ("aw_ao",), "ar": ("o_aa", "r"), "or": ("aw_ao", "r"), "er": ("er_er",), "ir": ("er_er",), "ur": ("er_er",),
    "a": ("a_ae",), "b": ("b",), "c": ("k",), "d": ("d",), "e": ("e_eh",), "f": ("f",), "g": ("g",), "h": ("h",), "i": ("i_ih",),
    "j": ("j",), "k": ("k",), "l": ("l",), "m": ("m",), "n": ("n",), "o": ("o_aa",), "p": ("p",), "q": ("k",), "r": ("r",),
    "s": ("s",), "t": ("t",), "u": ("u_ah",), "v": ("v",), "w": ("w",), "x": ("k", "s"), "y": ("y",), "z": ("z",),
}  # fmt: skip
_SPLIT = {"a": "ai_ey", "e": "ee_iy", "i": "ie_ay", "o": "oa_ow", "u": "oo_uw"}  # a split digraph: "cake", "bike", "home", "cute"


def phonics_g2p(word: str) -> list[str]:
    """A word's sounds by phonics rules (longest grapheme first, a split
    digraph's final e silent, a final y after a consonant as in "happy"):
    a guess, for words in neither dictionary."""
    w = word.lower()
    if not w.isascii() or not w.isalpha():
        raise ConfigError(f"{word[:40]!r}: only plain letters can be sounded out")
    split = len(w) >= 3 and w[-1] == "e" and w[-3] in _SPLIT and w[-2] not in "aeiouwxy" and (len(w) == 3 or w[-4] not in "aeiou")
    if split:
        w = w[:-1]
    out: list[str] = []
    i = 0
    while i < len(w):
        g = next(g for n in (3, 2, 1) if (g := w[i : i + n]) in GPC)
        if split and i == len(w) - 2 and g == w[-2]:  # the vowel before the last consonant: its long sound
            out.append(_SPLIT[g])
        elif g == "y" and i == len(w) - 1 and i > 0 and w[i - 1] not in "aeiou":
            out.append("ee_iy")
        else:
            out += GPC[g]
        i += len(g)
    return out


def lookup(word: str, extra: dict[str, list[str]] | None = None) -> tuple[list[str], str]:
    """The inventory sounds of `word` and where they came from: a user's own
    entries (`extra`), the phonics lexicon, the CMU dictionary, else the phonics G2P (`g2p`, a guess)."""
    w = word.strip().lower()
    for source, table in (("user", extra or {}), ("phonics", phonics_lexicon()), ("cmu", cmu_dictionary())):
        if w in table:
            return list(table[w]), source
    return phonics_g2p(w), "g2p"


def word_sounds(word: str, extra: dict[str, list[str]] | None = None) -> list[str]:
    """The inventory sounds of `word` (`lookup`)."""
    return lookup(word, extra)[0]


def text_sounds(text: str) -> list[tuple[str, list[str], str]]:
    """A sentence's words, each with its sounds and their source."""
    words = [w.strip(".,!?;:\"'()") for w in text.split()]
    words = [w for w in words if w]
    if not words or len(words) > 40:
        raise ConfigError("--text needs 1-40 words")
    return [(w, *lookup(w)) for w in words]


def parse_phones(text: str, labels: list[str]) -> list[str]:
    """`--phones "k a_ae t"`: sounds the model knows."""
    sounds = text.split()
    for s in sounds:
        if why := label_problem(s):
            raise ConfigError(why)
        if s not in labels:
            raise ConfigError(f"{s!r} is not a sound of this model")
    if not sounds:
        raise ConfigError("--phones needs at least one sound")
    return sounds


def expected_parts(labels: list[str], *, word: str | None = None, phones: str | list[str] | None = None,
                   text: str | None = None) -> list[tuple[str | None, list[str], str]]:  # fmt: skip
    """What the child was asked to say, word by word: (word, its sounds, where
    they came from) for a word or a sentence (`text`); one part with no word
    for sounds named directly (`"k a_ae t"` or a list). One of the three."""
    if sum(x is not None for x in (word, phones, text)) != 1:
        raise ConfigError('give the expected word (e.g. cat), a sentence (--text), or the sounds (e.g. "k a_ae t"): one of the three')
    if phones is not None:
        return [(None, parse_phones(phones if isinstance(phones, str) else " ".join(phones), labels), "phones")]
    if text is not None:
        return text_sounds(text)
    return [(word, *lookup(word))]


def expected_sounds(labels: list[str], *, word: str | None = None, phones: str | list[str] | None = None, text: str | None = None) -> list[str]:
    """What the child was asked to say, as one sequence of sounds (`expected_parts`)."""
    return [s for _, sounds, _ in expected_parts(labels, word=word, phones=phones, text=text) for s in sounds]
