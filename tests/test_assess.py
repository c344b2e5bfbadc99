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
    with pytest.raises(ConfigError, match="neither the phonics lexicon nor the CMU dictionary"):
        word_sounds("zqxwv")


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
