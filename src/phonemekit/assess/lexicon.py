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


def word_sounds(word: str, extra: dict[str, list[str]] | None = None) -> list[str]:
    """The inventory sounds of `word` (a user's own entries in `extra` first)."""
    w = word.strip().lower()
    for table in (extra or {}, phonics_lexicon(), cmu_dictionary()):
        if w in table:
            return list(table[w])
    raise ConfigError(f"{word[:40]!r} is in neither the phonics lexicon nor the CMU dictionary; give its sounds with --phones")


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


def expected_sounds(labels: list[str], *, word: str | None = None, phones: str | list[str] | None = None) -> list[str]:
    """What the child was asked to say: a word's sounds, or the sounds named
    directly (`"k a_ae t"` or a list), one of the two."""
    if (word is None) == (phones is None):
        raise ConfigError('give the expected word (e.g. cat) or its sounds (e.g. "k a_ae t"), one of the two')
    if phones is not None:
        return parse_phones(phones if isinstance(phones, str) else " ".join(phones), labels)
    return word_sounds(word)
