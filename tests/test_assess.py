"""Assessing a word sound by sound: words assembled from the toy model's
sounds, said apart with pauses, with a sound swapped, dropped or added."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from phonemekit.assess.assess import Heard, assess, match

from .conftest import LABEL_FREQS, tone


def _said(*labels: str, speaker: int = 2) -> np.ndarray:
    rng = np.random.default_rng(1)
    quiet = lambda n: (3e-4 * rng.standard_normal(n)).astype(np.float32)  # noqa: E731
    parts = [quiet(8000)]
    for k, lab in enumerate(labels):
        parts += [tone(LABEL_FREQS[lab] * (1 + 0.03 * speaker), 0.35, seed=10 + k), quiet(8000)]
    return np.concatenate(parts)


def _heard(*probs) -> list[Heard]:
    return [Heard(i, i + 0.3, np.array(p)) for i, p in enumerate(probs)]


def test_alignment_matches_sounds_without_shifting_the_rest():
    labels = ["aa", "ee", "sh"]
    aa, ee, sh = [0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]
    assert match(labels, _heard(aa, ee, sh), labels) == [(0, 0), (1, 1), (2, 2)]
    assert match(labels, _heard(aa, sh), labels) == [(0, 0), (1, None), (2, 1)]  # the middle sound missing
    assert match(labels, _heard(aa, sh, ee, sh), labels) == [(0, 0), (None, 1), (1, 2), (2, 3)]  # an extra sound
    assert match(labels, _heard(aa, ee, aa), labels) == [(0, 0), (1, 1), (2, 2)]  # a substitution stays in its place


@pytest.fixture(scope="module")
def clf(served_model):
    from phonemekit.deploy.runtime import Classifier

    return Classifier.load(served_model["model"])


def test_the_right_word_said_apart_is_heard_sound_by_sound(clf):
    res = assess(clf, _said("aa", "ee", "sh"), ["aa", "ee", "sh"])
    assert [s["heard"] for s in res["sounds"]] == ["aa", "ee", "sh"] and not res["inserted"]
    assert res["correct"] >= 2 and all(s["start"] < s["end"] for s in res["sounds"])
    assert [s["start"] for s in res["sounds"]] == sorted(s["start"] for s in res["sounds"])


def test_a_swapped_sound_is_substituted_with_what_was_heard(clf):
    res = assess(clf, _said("aa", "ee", "aa"), ["aa", "ee", "sh"])
    last = res["sounds"][-1]
    assert last["expected"] == "sh" and last["verdict"] == "substituted" and last["heard"] == "aa"
    assert [s["heard"] for s in res["sounds"][:2]] == ["aa", "ee"]


def test_a_dropped_sound_is_missing_and_an_extra_one_inserted(clf):
    res = assess(clf, _said("aa", "sh"), ["aa", "ee", "sh"])
    assert [s["verdict"] for s in res["sounds"]][1] == "missing" and res["sounds"][2]["heard"] == "sh"
    res = assess(clf, _said("aa", "sh", "ee", "sh"), ["aa", "ee", "sh"])
    assert [s["heard"] for s in res["sounds"]] == ["aa", "ee", "sh"] and [s["heard"] for s in res["inserted"]] == ["sh"]


def test_assess_on_the_command_line(clf, served_model, tmp_path):
    from phonemekit.cli import app
    from phonemekit.data.audio import write_audio

    write_audio(tmp_path / "word.wav", _said("aa", "ee", "aa"))
    r = CliRunner().invoke(app, ["assess", str(tmp_path / "word.wav"), "--phones", "aa ee sh", "--model", str(served_model["model"]), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["sounds"][2]["verdict"] == "substituted" and out["sounds"][2]["heard"] == "aa"
    bad = CliRunner().invoke(app, ["assess", str(tmp_path / "word.wav"), "--phones", "aa zz", "--model", str(served_model["model"])])
    assert bad.exit_code == 2 and "not a sound of this model" in bad.output


def test_words_to_sounds_phonics_first_then_the_dictionary():
    from phonemekit.assess.lexicon import word_sounds
    from phonemekit.errors import ConfigError

    assert word_sounds("cat") == ["k", "a_ae", "t"] and word_sounds("ship") == ["sh", "i_ih", "p"]
    assert word_sounds("Fish") == ["f", "i_ih", "sh"] and word_sounds("cat", {"cat": ["k", "a_ae", "t", "s"]})[-1] == "s"
    pytest.importorskip("pocketsphinx")
    assert word_sounds("sunny") == ["s", "u_ah", "n", "ee_iy"]  # from the CMU dictionary
    # In neither dictionary: sounded out by phonics rules, and marked as a guess.
    from phonemekit.assess.lexicon import lookup, phonics_g2p, text_sounds

    assert lookup("zorb") == (["z", "aw_ao", "r", "b"], "g2p") and lookup("cat")[1] == "phonics" and lookup("sunny")[1] == "cmu"
    cases = {"cake": "k ai_ey k", "bike": "b ie_ay k", "night": "n ie_ay t", "catch": "k a_ae ch", "bridge": "b r i_ih j",
             "queen": "k w ee_iy n", "happy": "h a_ae p ee_iy", "splash": "s p l a_ae sh", "fox": "f o_aa k s", "rain": "r ai_ey n"}  # fmt: skip
    assert {w: " ".join(phonics_g2p(w)) for w in cases} == cases
    with pytest.raises(ConfigError, match="only plain letters"):
        word_sounds("c@t")
    assert [(w, src) for w, _, src in text_sounds("The cat, zorb!")] == [("The", "cmu"), ("cat", "phonics"), ("zorb", "g2p")]


def test_assess_word_in_the_api(served_model, tmp_path):
    import phonemekit
    from phonemekit.data.audio import write_audio

    write_audio(tmp_path / "w.wav", _said("aa", "sh"))
    res = phonemekit.assess_word(tmp_path / "w.wav", phones=["aa", "ee", "sh"], model=served_model["model"])
    assert [s["verdict"] for s in res["sounds"]][1] == "missing" and res["expected"] == ["aa", "ee", "sh"]


def test_post_assess_on_the_server(served_model):
    import httpx

    from phonemekit.serve.app import ServeConfig, create_app

    from .test_serve import Server, wav_bytes

    with Server(create_app(served_model["model"], ServeConfig(token="T0k3n"))) as s:
        auth = {"authorization": "Bearer T0k3n"}
        r = httpx.post(f"{s.url}/assess?phones=aa+ee+sh", content=wav_bytes(_said("aa", "ee", "aa")), headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        assert [x["verdict"] for x in r.json()["sounds"]][2] == "substituted" and r.json()["sounds"][2]["heard"] == "aa"
        assert httpx.post(f"{s.url}/assess?phones=aa", content=wav_bytes(_said("aa"))).status_code == 401  # the token covers it
        assert httpx.post(f"{s.url}/assess?phones=aa+zz", content=wav_bytes(_said("aa")), headers=auth).json()["error"] == "unknown_word"
        assert httpx.post(f"{s.url}/assess?phones=aa", content=b"RIFF....", headers=auth).status_code == 422
        assert httpx.post(f"{s.url}/assess", content=wav_bytes(_said("aa")), headers=auth).status_code == 400


def _word(sounds: tuple[str, ...], labels: list[str], p_right: float = 0.9, group: str = "child"):
    """A word whose every phone the model hears as itself with `p_right`."""
    from phonemekit.assess.benchmark import Word

    heard = []
    for i, s in enumerate(sounds):
        p = np.full(len(labels), (1 - p_right) / (len(labels) - 1))
        p[labels.index(s)] = p_right
        heard.append(Heard(0.1 * i, 0.1 * i + 0.08, p))
    return Word("spk", group, "w", tuple(sounds), tuple(heard))


def test_minimal_pairs_catch_a_changed_sound_and_miss_an_extra_one():
    from phonemekit.assess.benchmark import Neighbours, judge_words, summary, threshold_for
    from phonemekit.evaluation.calibration import uncalibrated_verdict

    labels = ["k", "a_ae", "t", "b", "p", "s", "u_ah"]
    dictionary = {"cat": ["k", "a_ae", "t"], "bat": ["b", "a_ae", "t"], "cap": ["k", "a_ae", "p"], "cut": ["k", "u_ah", "t"],
                  "cats": ["k", "a_ae", "t", "s"], "scat": ["s", "k", "a_ae", "t"], "dog": ["d", "o_aa", "g"]}  # fmt: skip
    nb = Neighbours(dictionary)
    assert sorted(nb.substitutions(("k", "a_ae", "t"))) == [("bat", 0), ("cap", 2), ("cut", 1)]
    assert sorted(nb.insertions(("k", "a_ae", "t"))) == [("cats", 3), ("scat", 0)]
    verdict_of = lambda p, e: uncalibrated_verdict(p, labels, e)  # noqa: E731
    records = judge_words([_word(("k", "a_ae", "t"), labels)], labels, verdict_of, nb)
    own = [r for r in records if r["kind"] == "own"]
    subs = [r for r in records if r["kind"] == "substituted"]
    ins = [r for r in records if r["kind"] == "inserted"]
    assert [r["verdict"] for r in own] == ["correct"] * 3
    assert len(subs) == 3 and all(r["verdict"] == "substituted" and r["heard"] == r["said"] for r in subs)
    assert len(ins) == 2 and all(r["verdict"] == "missing" for r in ins)
    s = summary(records, threshold_for(records))
    assert s["false_reject_rate"] == 0 and s["substitution_recall"] == 1 and s["heard_accuracy"] == 1 and s["missing_recall"] == 1
    assert s["at_threshold"]["false_reject_rate"] <= 0.1 and s["by_class"]["stop"]["sounds"] == 2


def test_a_doubtful_model_rejects_right_sounds_and_the_figures_say_so():
    from phonemekit.assess.benchmark import Neighbours, judge_words, summary

    labels = ["k", "a_ae", "t", "b", "p", "s", "u_ah"]
    nb = Neighbours({"cat": ["k", "a_ae", "t"], "bat": ["b", "a_ae", "t"]})
    # Heard as itself with only 0.1: under uniform 1/7, so a verdict of "this is k" needs more.
    verdict_of = lambda p, e: {"accepted": bool(p[labels.index(e)] >= 0.5), "probability": float(p[labels.index(e)])}  # noqa: E731
    records = judge_words([_word(("k", "a_ae", "t"), labels, p_right=0.1)], labels, verdict_of, nb)
    s = summary(records, None)
    assert s["false_reject_rate"] == 1.0 and s["substitution_recall"] == 1.0 and "at_threshold" not in s


def test_bench_assess_times_each_mode_against_the_target(tmp_path):
    from phonemekit.cli import app

    r = CliRunner().invoke(app, ["bench-assess", "--model", "children", "--words", "cat", "--repeats", "2", "--out", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "b.json").read_text())
    assert set(res["modes"]) == {"segment", "blend"} and res["target_ms"] == 150
    for v in res["modes"].values():
        assert 0 < v["median_ms"] <= v["p90_ms"] <= v["max_ms"] and v["sounds_correct"].endswith("/3")
    assert res["modes"]["blend"]["audio_s"] == 1.5 and "median" in r.output


def test_an_accepted_variant_is_correct_and_named(clf, served_model, tmp_path):
    from phonemekit.assess.assess import judge
    from phonemekit.assess.lexicon import default_variants
    from phonemekit.cli import app
    from phonemekit.data.audio import write_audio
    from phonemekit.evaluation.calibration import uncalibrated_verdict

    labels = ["o_aa", "aw_ao", "t"]
    verdict_of = lambda p, e: uncalibrated_verdict(p, labels, e)  # noqa: E731
    heard = _heard([0.1, 0.8, 0.1], [0.05, 0.05, 0.9])  # "caught"'s vowel, then t
    plain, _ = judge(["o_aa", "t"], heard, labels, verdict_of)
    accented, _ = judge(["o_aa", "t"], heard, labels, verdict_of, default_variants())
    assert plain[0]["verdict"] == "substituted" and "variant" not in plain[0]
    assert accented[0]["verdict"] == "correct" and accented[0]["variant"] == "aw_ao" and accented[1]["verdict"] == "correct"
    # A user's table on the command line; a table naming sounds the model lacks is refused in one line.
    write_audio(tmp_path / "word.wav", _said("aa", "ee", "aa"))
    (tmp_path / "v.json").write_text(json.dumps({"variants": {"sh": ["aa"]}}))
    args = ["assess", str(tmp_path / "word.wav"), "--phones", "aa ee sh", "--model", str(served_model["model"])]
    r = CliRunner().invoke(app, [*args, "--variants", str(tmp_path / "v.json"), "--json"])
    assert r.exit_code == 0, r.output
    last = json.loads(r.output)["sounds"][2]
    assert last["verdict"] == "correct" and last["variant"] == "aa"
    (tmp_path / "bad.json").write_text(json.dumps({"variants": {"sh": ["zz"]}}))
    bad = CliRunner().invoke(app, [*args, "--variants", str(tmp_path / "bad.json")])
    assert bad.exit_code == 2 and "does not know: zz" in bad.output


def test_a_sentence_said_whole_is_judged_word_by_word_even_a_word_in_no_dictionary(tmp_path):
    pytest.importorskip("pocketsphinx")
    import phonemekit
    from phonemekit.assess.bench import word_audio
    from phonemekit.data.audio import write_audio

    write_audio(tmp_path / "s.wav", word_audio("the zorb sat", "blend"))
    res = phonemekit.assess_word(tmp_path / "s.wav", text="the zorb sat", mode="blend", model="children")
    assert res["guessed"] == ["zorb"] and res["word"] == "the zorb sat"
    assert [s["word"] for s in res["sounds"]] == ["the"] * 2 + ["zorb"] * 4 + ["sat"] * 3
    assert sum(s["verdict"] != "missing" for s in res["sounds"]) >= 7  # the aligner placed the guessed word's sounds too
    starts = [s["start"] for s in res["sounds"] if s["start"] is not None]
    assert starts == sorted(starts)


def test_a_word_session_keeps_only_the_latest_sounds_of_a_stream_that_never_ends_its_word(clf):
    from phonemekit.assess.assess import WordSession
    from phonemekit.errors import ConfigError

    session = WordSession(clf, ["aa", "ee"], None)
    p = np.full(len(clf.labels), 1 / len(clf.labels))
    for k in range(100):
        session.hear(k, k + 0.5, p)
    assert len(session.heard) == WordSession.MAX_HEARD and session.heard[-1].start == 99 and session.changed
    v = session.verdicts(final=True)
    assert v["final"] and len(v["sounds"]) == 2 and len(v["inserted"]) == WordSession.MAX_HEARD - 2 and not session.changed
    with pytest.raises(ConfigError):
        WordSession(clf, ["zz"], None)
