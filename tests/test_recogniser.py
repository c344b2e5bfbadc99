"""The phone recogniser's parts: CTC forced alignment, phone error rates,
and the boundary benchmark on assembled sounds (the recogniser itself is
trained end to end in the real-corpus recipe test)."""

from __future__ import annotations

import numpy as np
import pytest

from phonemekit.align.base import AlignedPhone, Aligner, AlignmentError
from phonemekit.align.benchmark import JOINABLE, assemble, assembled_set, boundary_errors, trim
from phonemekit.models.decoding import forced_align
from phonemekit.training.sequence import LABELS, per_report, phone_errors

from .conftest import tone


def _frames(path: list[int], k: int, p: float = 0.9) -> np.ndarray:
    lp = np.full((len(path), k), np.log((1 - p) / (k - 1)))
    lp[np.arange(len(path)), path] = np.log(p)
    return lp


def test_forced_alignment_finds_each_phones_frames_repeats_included():
    blank = 3
    path = [3, 3, 0, 0, 0, 3, 1, 1, 3, 3, 1, 1, 1, 3, 2]  # a, then b twice (a blank between), then c
    spans = forced_align(_frames(path, 4), [0, 1, 1, 2], blank)
    assert [(a, b) for a, b, _ in spans] == [(2, 5), (6, 8), (10, 13), (14, 15)]
    assert all(s > np.log(0.5) for _, _, s in spans)
    # The same targets are forced even where the frames say otherwise: every phone gets frames, in order.
    spans = forced_align(_frames([3] * 15, 4), [0, 1, 1, 2], blank)
    assert all(a < b for a, b, _ in spans) and [a for a, _, _ in spans] == sorted(a for a, _, _ in spans)
    with pytest.raises(ValueError):
        forced_align(_frames([3, 3, 3], 4), [0, 1, 1, 2], blank)  # 3 frames cannot hold 4 phones (5 with the blank a repeat needs)


def test_phone_error_rate_counts_substitutions_deletions_and_insertions_per_group():
    i = {label: k for k, label in enumerate(LABELS)}
    refs = [[i["k"], i["a_ae"], i["t"]], [i["s"], i["i_ih"], i["t"]], [i["m"], i["a_ae"], i["p"]]]
    hyps = [[i["k"], i["a_ae"], i["t"]], [i["s"], i["t"], i["t"], i["t"]], []]
    err = phone_errors(refs, hyps)
    assert err.tolist() == [[0, 0, 0], [1, 0, 1], [0, 3, 0]]
    rows = [{"speaker": "a"}, {"speaker": "b"}, {"speaker": "c"}]
    rep = per_report(rows, refs, hyps, {"a": "child", "b": "child", "c": "adult"})
    assert rep["per"] == round(5 / 9, 4) and rep["per_group"]["child"]["per"] == round(2 / 6, 4) and rep["per_group"]["adult"]["per"] == 1.0
    assert rep["per_group"]["child"]["speakers"] == 2 and rep["per_group"]["child"]["deletions"] == 0
    lo, hi = rep["per_group"]["child"]["per_ci95_speakers"]
    assert 0 <= lo <= rep["per_group"]["child"]["per"] <= hi <= 1


class _Oracle(Aligner):
    """Places each sound exactly where `assemble` put it (shifted by `shift_s`)."""

    name = "oracle"

    def __init__(self, truth: dict[int, list[float]], shift_s: float) -> None:
        self.truth, self.shift = truth, shift_s

    def align_sounds(self, samples, sounds):
        if len(sounds) == 1:
            raise AlignmentError("align_failed", "one sound")
        edges = [0.2, *self.truth[len(samples)], len(samples) / 16000 - 0.2]
        return [AlignedPhone(s, edges[k] + self.shift, edges[k + 1] + self.shift, 0.0) for k, s in enumerate(sounds)]


def test_assembled_sounds_have_known_joins_and_the_benchmark_measures_them():
    rng = np.random.default_rng(0)
    quiet = lambda n: (1e-4 * rng.standard_normal(n)).astype(np.float32)  # noqa: E731
    clip = lambda f: np.concatenate([quiet(4000), tone(f, 0.3, seed=int(f)), quiet(4000)])  # noqa: E731
    assert abs(len(trim(clip(300))) - 0.3 * 16000) <= 2 * 320  # silence around a sound is cut to within a frame
    a = assemble([(clip(300), "a_ae"), (clip(500), "s"), (clip(700), "m")])
    assert a.sounds == ["a_ae", "s", "m"] and len(a.joins) == 2 and 0.2 < a.joins[0] < a.joins[1] < len(a.samples) / 16000 - 0.2
    items = [(clip(200 + 50 * k), label, spk) for spk in ("x", "y") for k, label in enumerate(["a_ae", "s", "m", "l", "k", "ch"])]
    sets = assembled_set(items, per_item=3, count=8)
    assert len(sets) == 8 and all(len(s.sounds) == 3 and {"k", "ch"}.isdisjoint(s.sounds) for s in sets)  # stops and affricates left out
    assert {"vowel", "fricative", "nasal", "approximant"} == JOINABLE
    truth = {len(s.samples): s.joins for s in sets}
    exact = boundary_errors(_Oracle(truth, 0.0), sets)
    assert exact["median_error_ms"] == 0 and exact["within_20ms"] == 1 and exact["boundaries"] == 16 and exact["failed"] == 0
    late = boundary_errors(_Oracle(truth, 0.03), sets)
    assert late["median_error_ms"] == pytest.approx(30, abs=0.1) and late["within_20ms"] == 0 and late["within_50ms"] == 1


def test_utterances_become_targets_and_a_segment_of_a_recording_is_cut_not_whole(tmp_path):
    import json

    from phonemekit.data.segments import segment_id
    from phonemekit.training.sequence import utterances

    (tmp_path / "dataset.json").write_text(json.dumps({"root": str(tmp_path), "labels": LABELS}))
    rows = [
        {"utt": "a", "path": "r.wav", "speaker": "s", "sha256": "f" * 64, "duration": 4.0, "words": [[0, ["K", "AE1", "T"]]]},
        {"utt": "b", "path": "r.wav", "speaker": "s", "sha256": "f" * 64, "duration": 4.0, "segment": [1.0, 2.5], "words": [[0, ["SH", "IY"]]]},
        {"utt": "c", "path": "r.wav", "speaker": "s", "sha256": "f" * 64, "duration": 4.0, "words": [[0, ["K", "XX"]]]},
        {"utt": "d", "path": "r.wav", "speaker": "s", "sha256": "f" * 64, "duration": 4.0},
    ]
    (tmp_path / "utterances.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    manifest, utts, skipped = utterances(tmp_path)
    assert [[LABELS[i] for i in u.targets] for u in utts] == [["k", "a_ae", "t"], ["sh", "ee_iy"]]
    assert skipped == {"no_words": 1, "unmapped_phone": 1} and len(manifest.rows) == 2
    whole, part = (u.row for u in utts)
    assert "start" not in whole and whole["sha256"] == "f" * 64
    assert (part["start"], part["end"], part["source_sha256"]) == (1.0, 2.5, "f" * 64) and part["sha256"] == segment_id("f" * 64, 1.0, 2.5)
