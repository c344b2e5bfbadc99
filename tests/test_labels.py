"""The label rule, in Python and in the browser (web/src/labels.js, run by
`node --test` in `make test`), on the same cases."""

from __future__ import annotations

import json
from pathlib import Path

from phonemekit.data.inventory import SOUNDS, label_problem

CASES = json.loads((Path(__file__).resolve().parents[1] / "web" / "test" / "label-cases.json").read_text())


def test_sound_names_and_ipa_are_labels():
    for label in CASES["ok"]:
        assert label_problem(label) is None, label
    assert not [s.label for s in SOUNDS if label_problem(s.label)]  # every sound of the inventory


def test_markup_paths_blanks_flags_and_long_names_are_refused():
    for label in CASES["refused"]:
        assert "is refused: a label is 1-32" in (label_problem(label) or "accepted"), label
    assert "not text" in label_problem(3)
