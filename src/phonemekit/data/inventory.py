"""The phonics sound inventory used by the demo corpus and the docs."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

MAX_LABEL_CHARS = 32
LABEL_RULE = f"a label is 1-{MAX_LABEL_CHARS} letters, digits, '_', '-' or IPA symbols"


def label_problem(label: object) -> str | None:
    """Why `label` cannot be a sound's name, or None when it can. Labels come
    from folders, model files and requests (untrusted), and become folder
    names and page text: a short identifier (letters, digits and combining
    marks of any script, so IPA; '_' and '-') cannot traverse a path or carry
    markup. web/src/labels.js applies the same rule in the browser."""
    if not isinstance(label, str):
        return f"{label!r:.40} is not text; {LABEL_RULE}"
    if not 1 <= len(label) <= MAX_LABEL_CHARS or label.startswith("-") or not all(c in "_-" or unicodedata.category(c)[0] in "LNM" for c in label):
        return f"{label!r:.60} is refused: {LABEL_RULE}"
    return None


@dataclass(frozen=True)
class Sound:
    label: str
    ipa: str
    example: str
    espeak: str  # eSpeak NG phoneme input, spoken as phonics teaches it


# Stops carry a short schwa (how phonics teaches them); continuants are held.
SOUNDS: tuple[Sound, ...] = (
    Sound("a_ae", "æ", "cat", "[['a]]"),
    Sound("e_eh", "ɛ", "bed", "[['E]]"),
    Sound("i_ih", "ɪ", "sit", "[['I]]"),
    Sound("o_aa", "ɑ", "hot", "[['0]]"),
    Sound("u_ah", "ʌ", "cup", "[['V]]"),
    Sound("ai_ey", "eɪ", "rain", "[['eI]]"),
    Sound("ee_iy", "i", "see", "[['i:]]"),
    Sound("ie_ay", "aɪ", "tie", "[['aI]]"),
    Sound("oa_ow", "oʊ", "boat", "[['oU]]"),
    Sound("oo_uw", "u", "moon", "[['u:]]"),
    Sound("oo_uh", "ʊ", "book", "[['U]]"),
    Sound("aw_ao", "ɔ", "saw", "[['O:]]"),
    Sound("ow_aw", "aʊ", "cow", "[['aU]]"),
    Sound("oy_oy", "ɔɪ", "boy", "[['OI]]"),
    Sound("er_er", "ɝ", "her", "[['3:]]"),
    Sound("b", "b", "bat", "[[b@]]"),
    Sound("ch", "tʃ", "chip", "[[tS@]]"),
    Sound("d", "d", "dog", "[[d@]]"),
    Sound("f", "f", "fish", "[[fff]]"),
    Sound("g", "ɡ", "goat", "[[g@]]"),
    Sound("h", "h", "hat", "[[h@]]"),
    Sound("j", "dʒ", "jam", "[[dZ@]]"),
    Sound("k", "k", "kite", "[[k@]]"),
    Sound("l", "l", "leg", "[[l-]]"),
    Sound("m", "m", "map", "[[m-]]"),
    Sound("n", "n", "net", "[[n-]]"),
    Sound("ng", "ŋ", "ring", "[[N-]]"),
    Sound("p", "p", "pig", "[[p@]]"),
    Sound("r", "ɹ", "red", "[[r@]]"),
    Sound("s", "s", "sun", "[[sss]]"),
    Sound("sh", "ʃ", "ship", "[[SSS]]"),
    Sound("t", "t", "top", "[[t@]]"),
    Sound("th", "θ", "thin", "[[TTT]]"),
    Sound("th_voiced", "ð", "this", "[[DDD]]"),
    Sound("v", "v", "van", "[[vvv]]"),
    Sound("w", "w", "wet", "[[w@]]"),
    Sound("y", "j", "yes", "[[j@]]"),
    Sound("z", "z", "zip", "[[zzz]]"),
    Sound("zh", "ʒ", "vision", "[[ZZZ]]"),
)
