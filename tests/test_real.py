"""Real speech in the formats speech people keep it: each importer on a tiny
fixture written in its format (hostile entries included), forced alignment
on synthesised sentences, segment rows as views into their utterances, and
the real-corpus recipe end to end on a speechocean762-format fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from phonemekit.data.audio import write_audio
from phonemekit.data.phones import to_label

pytest.importorskip("pocketsphinx")

SENTENCES = ("we call it bear", "she sat on a mat", "a big red fish", "the cat is here")
# speaker: (split, age, eSpeak voice, pitch)
SPEAKERS = {
    "0001": ("train", 7, "en-us+f3", 80),
    "0002": ("train", 31, "en-us+m3", 40),
    "0003": ("train", 8, "en-us+f5", 75),
    "0004": ("train", 40, "en-us+m1", 35),
    "0005": ("train", 9, "en-us+f2", 70),
    "0101": ("test", 7, "en-us+f4", 85),
    "0102": ("test", 35, "en-us+m2", 45),
}


def _say(text: str, voice: str, pitch: int) -> np.ndarray:
    from phonemekit.data.demo import ESpeak

    e = ESpeak()
    x = soxr.resample(e.synth(text, voice, pitch, 150), e.sample_rate, 16000).astype(np.float32)
    pad = np.zeros(3200, np.float32)
    return np.concatenate([pad, x, pad])


def _phones(word: str) -> list[str]:
    from pocketsphinx import Decoder

    d = Decoder(samprate=16000, loglevel="FATAL")
    return d.lookup_word(word).split()


@pytest.fixture(scope="module")
def speechocean(tmp_path_factory) -> Path:
    """A speechocean762-shaped corpus of synthesised sentences, with its
    canonical phones (stress and position marks as the corpus writes them),
    experts' scores, and hostile wav.scp entries."""
    root = tmp_path_factory.mktemp("so762")
    tables = {"train": {k: [] for k in ("wav.scp", "text", "utt2spk", "spk2age", "spk2gender")},
              "test": {k: [] for k in ("wav.scp", "text", "utt2spk", "spk2age", "spk2gender")}}  # fmt: skip
    text_phone, scores = [], {}
    for spk, (split, age, voice, pitch) in SPEAKERS.items():
        t = tables[split]
        t["spk2age"].append(f"{spk}\t{age}")
        t["spk2gender"].append(f"{spk}\t{'f' if 'f' in voice[-2:] else 'm'}")
        for i, sentence in enumerate(SENTENCES):
            utt = f"{spk}{i:04d}"
            rel = f"WAVE/SPEAKER{spk}/{utt}.WAV"
            write_audio(root / rel, _say(sentence, voice, pitch))
            t["wav.scp"].append(f"{utt}\t{rel}")
            t["text"].append(f"{utt}\t{sentence.upper()}")
            t["utt2spk"].append(f"{utt} {spk}")
            words = []
            for wi, word in enumerate(sentence.split()):
                ph = _phones(word)
                marks = ["S"] if len(ph) == 1 else ["B", *["I"] * (len(ph) - 2), "E"]
                vowel = lambda p: p in ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")  # noqa: E731
                text_phone.append(f"{utt}.{wi}\t" + " ".join(f"{p}{'1' if vowel(p) else ''}_{m}" for p, m in zip(ph, marks)))
                words.append({"phones-accuracy": [2.0] * len(ph)})
            scores[utt] = {"words": words}
    # The first word of every utterance of one child: scored mispronounced by the experts.
    for utt, s in scores.items():
        if utt.startswith("0005"):
            s["words"][0]["phones-accuracy"] = [0.4] * len(s["words"][0]["phones-accuracy"])
        if utt.startswith("0101"):  # and the last word of a test child's, so the scores of the test phones vary
            s["words"][-1]["phones-accuracy"] = [1.0] * len(s["words"][-1]["phones-accuracy"])
    # Hostile entries: a path out of the root, a command, a missing file, a corrupt file.
    write_audio(root.parent / "outside.wav", np.zeros(1600, np.float32) + 0.1)
    (root / "WAVE" / "bad.WAV").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    tables["train"]["wav.scp"] += ["x1\t../outside.wav", "x2\tsox in.wav -t wav - |", "x3\tWAVE/none.WAV", "x4\tWAVE/bad.WAV"]
    tables["train"]["utt2spk"] += ["x1 0001", "x2 0001", "x3 0001", "x4 0001"]
    for split, t in tables.items():
        for name, lines in t.items():
            (root / split).mkdir(exist_ok=True)
            (root / split / name).write_text("\n".join(lines) + "\n")
    (root / "resource").mkdir()
    (root / "resource" / "text-phone").write_text("\n".join(text_phone) + "\n")
    (root / "resource" / "scores.json").write_text(json.dumps(scores))
    return root


def test_phone_tables_map_declared_labels_and_nothing_else():
    assert to_label("IY0_E", "arpabet") == "ee_iy" and to_label("DH", "arpabet") == "th_voiced" and to_label("HH", "arpabet") == "h"
    assert to_label("ax-h", "timit") == "u_ah" and to_label("tcl", "timit") is None and to_label("zh", "timit") == "sh"
    assert to_label("ʃ", "ipa") == "sh" and to_label("t͡ʃ", "ipa") == "ch"
    assert to_label("QQ", "arpabet") is None and to_label("xx", "timit") is None and to_label("☃", "ipa") is None


def test_speechocean762_import_keeps_its_split_ages_phones_and_scores(speechocean, tmp_path):
    from phonemekit.data.importers import import_corpus

    s = import_corpus("speechocean762", speechocean, tmp_path / "data")
    utts = [json.loads(x) for x in (tmp_path / "data" / "utterances.jsonl").read_text().splitlines()]
    assert s["utterances"] == len(SPEAKERS) * len(SENTENCES) == len(utts)
    u = next(x for x in utts if x["utt"] == "00010000")
    assert (u["split"], u["group"], u["age"], u["text"]) == ("train", "child", "7", "WE CALL IT BEAR")
    assert u["words"][0] == [0, ["W", "IY"]] and u["scores"][0] == [2.0, 2.0]
    assert {x["group"] for x in utts if x["speaker"] == "0102"} == {"adult"}
    rejected = {(r["path"], r["reason"]) for r in map(json.loads, (tmp_path / "data" / "rejected.jsonl").read_text().splitlines())}
    assert rejected == {("../outside.wav", "path_escape"), ("x1", "missing"), ("x2", "command_in_wav_scp"), ("x2", "missing"),
                        ("WAVE/none.WAV", "missing"), ("WAVE/bad.WAV", "corrupt")}  # fmt: skip
    assert not (speechocean.parent / "data").exists() and sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(
        ["manifest.jsonl", "utterances.jsonl", "labels.json", "dataset.json", "rejected.jsonl", "salt", ".phonemekit.lock"]
    )


def test_a_score_file_of_the_wrong_types_is_rejected_and_the_import_goes_on(speechocean, tmp_path):
    import shutil

    from phonemekit.data.importers import import_corpus

    copy = tmp_path / "so"
    shutil.copytree(speechocean, copy)
    (copy / "resource" / "scores.json").write_text(json.dumps({"00010000": {"words": [{"phones-accuracy": ["two", None]}]}, "x": 3}))
    s = import_corpus("speechocean762", copy, tmp_path / "data")
    utts = [json.loads(x) for x in (tmp_path / "data" / "utterances.jsonl").read_text().splitlines()]
    assert s["utterances"] == 28 and all(u.get("scores") is None for u in utts)
    (copy / "resource" / "scores.json").write_text("[1, 2")
    s = import_corpus("speechocean762", copy, tmp_path / "data2")
    assert s["reasons"].get("bad_scores") == 1 and s["utterances"] == 28


def test_alignment_keeps_agreeing_phones_rejects_what_it_cannot_place_and_resumes(speechocean, tmp_path):
    from phonemekit.align import align_dataset
    from phonemekit.data.importers import import_corpus
    from phonemekit.data.manifest import load_manifest

    import_corpus("speechocean762", speechocean, tmp_path / "data")
    utts = (tmp_path / "data" / "utterances.jsonl").read_text().splitlines()
    # One utterance says a word outside the dictionary: it is rejected with that reason.
    bad = json.loads(utts[3])
    bad["text"] = "WE CALL IT ZQXWV"
    utts[3] = json.dumps(bad)
    (tmp_path / "data" / "utterances.jsonl").write_text("\n".join(utts) + "\n")
    stats = align_dataset(tmp_path / "data", workers=1)
    m = load_manifest(tmp_path / "data")
    failed = {k: v for k, v in stats.items() if k.startswith("failed_")}
    assert stats["failed_unknown_word"] == 1 and stats["utterances_aligned"] + sum(failed.values()) == 28 and stats["utterances_aligned"] >= 24
    rejected = [json.loads(x) for x in (tmp_path / "data" / "rejected.jsonl").read_text().splitlines()]
    assert ("unknown_word", bad["path"]) in {(r["reason"], r["path"]) for r in rejected}
    assert stats["kept"] == len(m.rows) > 100 and stats["dropped_expert_score"] > 0
    assert not [r for r in m.rows if r["speaker"] == "0005" and r["word_index"] == 0]  # scored wrong by the experts
    r = m.rows[0]
    assert r["start"] < r["end"] and r["label"] == to_label(r["phone"], "arpabet") and r["sha256"] != r["source_sha256"]
    x = m.samples(r)
    assert abs(len(x) - round((r["end"] - r["start"]) * 16000)) <= 1
    whole = sf.read(m.audio_path(r), dtype="float32")[0]
    np.testing.assert_allclose(x, whole[round(r["start"] * 16000) : round(r["start"] * 16000) + len(x)], atol=1e-4)
    # Resumed: a kill left half a line; only that utterance is aligned again.
    cache = tmp_path / "data" / "alignments" / "pocketsphinx.jsonl"
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    again = align_dataset(tmp_path / "data", workers=1)
    assert again == stats and len(cache.read_text().splitlines()) == len(lines) + 1  # the cut line stays, unread
    assert len({json.loads(x)["sha256"] for x in cache.read_text().splitlines() if x.endswith("}")}) == 28


def test_a_segment_of_a_changed_file_is_refused(speechocean, tmp_path):
    import shutil

    from phonemekit.align import align_dataset
    from phonemekit.data.importers import import_corpus
    from phonemekit.data.manifest import load_manifest
    from phonemekit.data.segments import _utterance
    from phonemekit.errors import AudioValidationError

    copy = tmp_path / "so"
    shutil.copytree(speechocean, copy)
    import_corpus("speechocean762", copy, tmp_path / "data")
    align_dataset(tmp_path / "data", workers=1)
    m = load_manifest(tmp_path / "data")
    r = m.rows[0]
    write_audio(m.audio_path(r), 0.5 * m.samples(r).repeat(20))
    _utterance.cache_clear()
    with pytest.raises(AudioValidationError, match="changed"):
        m.samples(r)


def test_kaldi_segments_timit_textgrid_and_audiofolder_fixtures(tmp_path):
    from phonemekit.data.importers import import_corpus
    from phonemekit.data.manifest import load_manifest

    x = _say("a big red fish", "en-us", 50)
    dur = len(x) / 16000
    # Kaldi with a segments file: two utterances inside one recording.
    k = tmp_path / "kaldi"
    write_audio(k / "rec1.wav", np.concatenate([x, x]))
    (k / "wav.scp").write_text("rec1 rec1.wav\n")
    (k / "segments").write_text(f"u1 rec1 0.0 {dur:.2f}\nu2 rec1 {dur:.2f} {2 * dur:.2f}\nu3 rec1 zero one\n")
    (k / "utt2spk").write_text("u1 s1\nu2 s1\nu3 s1\n")
    (k / "text").write_text("u1 A BIG RED FISH\nu2 A BIG RED FISH\n")
    s = import_corpus("kaldi", k, tmp_path / "k-data")
    assert s["utterances"] == 2 and s["reasons"] == {"bad_segment": 1}
    # TIMIT: .PHN sample offsets, 61 phones folded; a malformed line and closures.
    t = tmp_path / "timit" / "TRAIN" / "DR1" / "FCJF0"
    write_audio(t / "SA1.WAV", x)
    n = len(x)
    (t / "SA1.PHN").write_text(f"0 2000 h#\n2000 4000 ax\n4000 4500 bcl\n4500 5200 b\n5200 7000 ih\nnonsense\n7000 {n} xx\n")
    s = import_corpus("timit", tmp_path / "timit", tmp_path / "t-data")
    m = load_manifest(tmp_path / "t-data")
    assert [r["label"] for r in m.rows] == ["u_ah", "b", "i_ih"] and s["unknown_phones"] == {"xx": 1} and s["reasons"] == {"bad_line": 1}
    assert m.rows[0]["split"] == "train" and m.rows[0]["speaker"] == "FCJF0"

    # TextGrid: IPA phones; a file with overlapping intervals, and an interval that starts below zero, are rejected.
    def textgrid(path: Path, intervals: list) -> None:
        write_audio(path.with_suffix(".wav"), x)
        items = "".join(
            f'        intervals [{i}]:\n            xmin = {a}\n            xmax = {b}\n            text = "{t}"\n' for i, (a, b, t) in enumerate(intervals, 1)
        )
        path.write_text(
            f'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = {dur}\ntiers? <exists>\nsize = 1\nitem []:\n'
            f'    item [1]:\n        class = "IntervalTier"\n        name = "phones"\n        xmin = 0\n        xmax = {dur}\n'
            f"        intervals: size = {len(intervals)}\n{items}"
        )

    g = tmp_path / "grids" / "kid1"
    g.mkdir(parents=True)
    textgrid(g / "fish.TextGrid", [(0.2, 0.3, "f"), (0.3, 0.45, "ɪ"), (0.45, 0.6, "ʃ"), (0.6, 0.7, "ʘ")])
    textgrid(g / "overlap.TextGrid", [(0.2, 0.3, "f"), (0.25, 0.45, "ɪ")])
    textgrid(g / "negative.TextGrid", [(-0.2, 0.3, "f"), (0.3, 0.45, "ɪ")])
    s = import_corpus("textgrid", tmp_path / "grids", tmp_path / "g-data")
    m = load_manifest(tmp_path / "g-data")
    labels = {(Path(r["path"]).stem, r["label"]) for r in m.rows}
    assert {("fish", "f"), ("fish", "i_ih"), ("fish", "sh")} <= labels and not [r for r in m.rows if Path(r["path"]).stem == "overlap"]
    assert ("negative", "f") not in labels and s["unknown_phones"] == {"ʘ": 1}
    assert set(s["reasons"]) <= {"bad_textgrid", "bad_interval"} and sum(s["reasons"].values()) == 2
    # audiofolder: metadata.csv; an unknown label is counted, a path out of the root refused.
    a = tmp_path / "af"
    write_audio(a / "clips" / "one.wav", x)
    write_audio(a / "clips" / "two.wav", x[::-1].copy())
    (a / "metadata.csv").write_text("file_name,label,speaker\nclips/one.wav,ʃ,kid\nclips/two.wav,sh,kid\nclips/one.wav,ʘ,kid\n../x.wav,sh,kid\n")
    s = import_corpus("audiofolder", a, tmp_path / "a-data")
    m = load_manifest(tmp_path / "a-data")
    assert [r["label"] for r in m.rows] == ["sh", "sh"] and "start" not in m.rows[0] and s["unknown_phones"] == {"ʘ": 1}
    assert s["reasons"] == {"path_escape": 1}


@pytest.mark.slow  # about a minute: every step, the recogniser and three transfer trainings included
def test_the_real_recipe_end_to_end_on_a_fixture(speechocean, tmp_path):
    from phonemekit.data.manifest import load_manifest
    from phonemekit.recipes.real import run_real
    from phonemekit.report.report import Report

    out = tmp_path / "real"
    kw = dict(models=("fbank-mlp", "whisper-mlp", "whisper-mlp-context"), epochs=3, workers=1, synthetic=(3, 1), boundary_sequences=6,
              augmentation=("none", "speed", "specaugment"), augmentation_share=0.5, finetune=(1,))  # fmt: skip
    run_real(speechocean, out, **kw)
    sec = Report.load(out)
    train = sec["train"]
    assert train["split"]["kind"] == "corpus" and len(train["split"]["test_speakers"]) == 2 and len(train["split"]["val_speakers"]) >= 1
    m = train["models"]["fbank-mlp"]
    assert set(m["per_group"]) == {"child", "adult"} and m["per_group"]["child"]["speakers"] == 1
    base = next(v for k, v in train["baselines"].items() if "fbank" in k)
    assert "top1" in base["per_group"]["child"] and sec["alignment"]["kept"] > 100
    assert [s["step"] for s in sec["pipeline"]["steps"]] == [
        "import",
        "align",
        "train",
        "recognise",
        "context",
        "transfer",
        "boundaries",
        "augmentation",
        "pronunciation",
        "bundle",
        "enrolment",
        "ensembles",
        "finetune",
    ]
    per = sec["per"]
    assert per["utterances"]["test"] == 2 * 4 and set(per["test"]["per_group"]) == {"child", "adult"}
    assert per["test"]["phones"] == sum(v["phones"] for v in per["test"]["per_group"].values()) and 0 <= per["test"]["per"]
    bounds = sec["alignment"]["boundaries"]["aligners"]
    assert set(bounds) == {"pocketsphinx", "ctc"} and all(v["sequences"] == v["failed"] + v["boundaries"] // 3 for v in bounds.values())
    pron = sec["pronunciation"]
    assert pron["model"].split("+")[0] in ("fbank-mlp", "whisper-mlp") and set(pron["minimal_pairs"]) <= {"child", "adult"}
    child = pron["minimal_pairs"]["child"]
    assert child["words"] > 0 and child["sounds"] >= child["words"] and child["substitutions"] > 0
    pcc = pron["phone_pcc"]  # the fixture carries the experts' scores: all test phones, the right and the wrong
    assert pcc["phones"] > child["sounds"] and set(pcc["per_group"]) == {"child", "adult"}
    assert -1 <= pcc["pcc"] <= 1 and pcc["per_group"]["child"]["pcc"] is not None
    assert 0 <= child["false_reject_rate"] <= 1 and 0 <= child["substitution_recall"] <= 1 and (out / "figures" / "minimal-pairs.png").is_file()
    from phonemekit.align import get_aligner
    from phonemekit.data.audio import load_audio
    from phonemekit.runs import Run

    ctc = get_aligner("ctc", model=Run(out / "recogniser").load(with_encoder=True))
    x = load_audio(speechocean / "WAVE" / "SPEAKER0101" / "01010001.WAV").samples
    words = ctc.align(x, "she sat on a mat".split())
    assert [w.word for w in words] == ["she", "sat", "on", "a", "mat"] and [p.phone for p in words[0].phones] == ["SH", "IY"]
    edges = [t for w in words for p in w.phones for t in (p.start, p.end)]
    assert edges == sorted(edges) and edges[-1] <= len(x) / 16000 + 0.02
    from typer.testing import CliRunner

    from phonemekit.cli import app

    wav = str(speechocean / "WAVE" / "SPEAKER0101" / "01010001.WAV")
    heard = CliRunner().invoke(app, ["phones", wav, "--recogniser", str(out / "recogniser"), "--json"])
    assert heard.exit_code == 0, heard.output
    assert all(h["start"] < h["end"] for h in json.loads(heard.output))  # a briefly trained recogniser: what it hears is not asserted
    placed = CliRunner().invoke(app, ["phones", wav, "--recogniser", str(out / "recogniser"), "--text", "she sat on a mat", "--json"])
    assert placed.exit_code == 0 and [w["word"] for w in json.loads(placed.output)] == ["she", "sat", "on", "a", "mat"]
    unknown = CliRunner().invoke(app, ["phones", wav, "--recogniser", str(out / "recogniser"), "--text", "she xyzzyq"])
    assert unknown.exit_code == 2 and "not in the dictionary: xyzzyq" in unknown.output
    assert "## Phone recogniser" in (out / "report.md").read_text() and "## Reading verdicts on real words" in (out / "report.md").read_text()
    card = (out / "children" / "card.md").read_text()
    assert "chosen among fbank-mlp, whisper-mlp" in card.lower() and "| child |" in card and (out / "children" / "model.safetensors").is_file()
    rows = {(r["trained_on"], r["tested_on"]): r for r in sec["transfer"]["rows"]}
    assert set(rows) == {(a, b) for a in ("synthetic", "real", "both") for b in ("synthetic held-out voices", "real test speakers")}
    assert rows[("both", "real test speakers")]["clips"] == rows[("real", "real test speakers")]["clips"]
    assert "whisper-mlp+synthetic" in card and "synthetic validation voices" in card
    assert rows[("real", "real test speakers")]["clips"] == sum(1 for r in load_manifest(out / "data").rows if r["split"] == "test")
    ctx, tagged = train["models"]["whisper-mlp-context"], sec["context"]
    assert tagged["per_group"]["child"]["clips"] == ctx["per_group"]["child"]["clips"] and tagged["vs_slice"]["model"] == "whisper-mlp-context"
    test_utts = {r["source_sha256"] for r in load_manifest(out / "data").rows if r["split"] == "test"}
    assert tagged["utterances"]["test"] == len(test_utts) and 1 <= tagged["epochs"] <= 3 and (out / "context" / "tagger.safetensors").is_file()
    # Beside each clip model: the in-context model validation prefers (the slice twin or the sentence tagger), named.
    clip, twin_val = (
        train["models"]["whisper-mlp"],
        max(h["val_top1"] for h in json.loads((out / "models" / "whisper-mlp-context" / "history.json").read_text())),
    )
    chosen = clip["in_context_model"]
    assert chosen == ("whisper-tagger-context" if tagged["val_top1"] > twin_val else "whisper-mlp-context")
    assert clip["per_group"]["child"]["in_context_top1"] == (tagged if chosen == "whisper-tagger-context" else ctx)["per_group"]["child"]["top1"]
    assert "## Phones in their sentence" in (out / "report.md").read_text()
    assert train["best_model"] != "whisper-mlp-context"  # a game hears a clip alone: the best model is of the clip view
    enrolled = sec["enrolment"]
    assert str(enrolled["choice"]["reg"]) in enrolled["choice"]["by_reg"] and set(enrolled["by_shots"]) == {"0", "1", "2", "5"}
    assert enrolled["by_shots"]["0"]["top1"] == enrolled["by_shots"]["0"]["unadapted_top1"] and enrolled["by_shots"]["1"]["speakers"] == 1
    assert "## Enrolment of a new speaker" in (out / "report.md").read_text()
    aug = {c["condition"]: c for c in sec["augmentation"]["conditions"]}
    assert list(aug) == ["none", "speed", "specaugment"] and aug["none"]["gain"]["child"] == 0 and "adult" in aug["speed"]["per_group"]
    assert aug["speed"]["augmented_clips"] > 0 and aug["speed"]["train_clips"] == aug["none"]["train_clips"] + aug["speed"]["augmented_clips"]
    assert aug["specaugment"]["augmented_clips"] == 0 and aug["specaugment"]["train_clips"] == aug["none"]["train_clips"]
    assert not (out / "augmentation" / "speed" / "audio").exists()  # copies and their features go once measured
    cached = {p.stem for p in (out / "cache").rglob("*.npy")}
    copies, originals = _copy_hashes(out, "speed", tmp_path / "again")
    assert originals <= cached and len(copies) == len(originals) and not copies & cached
    assert "## Augmentation, measured" in (out / "report.md").read_text()
    # The waveform augmentation best on validation (if any beats none) trains on every clip: a candidate to bundle, chosen on validation too.
    best = max((c for c in sec["augmentation"]["conditions"] if c["condition"] == "speed"), key=lambda c: c["val_top1"])
    candidate = sec["augmentation"].get("candidate")
    assert (candidate is not None) == (best["val_top1"] > aug["none"]["val_top1"])
    if candidate:
        assert candidate["name"] == "whisper-mlp+synthetic+speed" and candidate["name"] in card
        assert not (out / "augmented" / "audio").exists() and "whisper-mlp" in Report.load(out / "augmented")["train"]["models"]
    ens = sec["ensembles"]  # the candidates combined, chosen on validation
    assert set(ens["members"]) == set(val_choice := card.split("Chosen among ")[1].split(" by validation")[0].split(", ")) and ens["chosen"] in ens["methods"]
    assert len(val_choice) >= 3 and set(ens["methods"][ens["chosen"]]["per_group"]) == {"child", "adult"}
    tuned = sec["finetune"]
    assert tuned["frozen"]["per_group"] == aug["none"]["per_group"] and [r["layers"] for r in tuned["runs"]] == [1] and 1 <= tuned["runs"][0]["epochs"] <= 3
    assert set(tuned["runs"][0]["gain"]) == {"child", "adult", "synthetic"} and "## Fine-tuning beside the frozen model" in (out / "report.md").read_text()
    assert Run(out / "finetune" / "top1" / "models" / "whisper-mlp").sidecar["includes_encoder"]
    again = run_real(speechocean, out, **kw)
    assert again == []  # every step done: nothing runs twice


def test_the_utterance_view_slices_each_phone_from_its_encoded_utterance(speechocean, tmp_path):
    import dataclasses

    import torch

    from phonemekit.align import align_dataset
    from phonemekit.config import EncoderConfig
    from phonemekit.data.cache import FeatureCache, extract
    from phonemekit.data.importers import import_corpus
    from phonemekit.data.manifest import load_manifest
    from phonemekit.models.encoders import build_encoder

    import_corpus("speechocean762", speechocean, tmp_path / "data")
    align_dataset(tmp_path / "data", workers=1)
    m = load_manifest(tmp_path / "data")
    clip = build_encoder(EncoderConfig(family="fbank", source="fbank"))
    utt = build_encoder(EncoderConfig(family="fbank", source="fbank", view="utterance"))
    assert utt.spec.key() != clip.spec.key() and clip.spec.to_dict() == {k: v for k, v in dataclasses.asdict(clip.spec).items() if k != "view"}
    res = extract(m, utt, tmp_path / "cache")
    assert res.computed == len(m.rows) and not res.failed
    r = m.rows[5]
    whole = m.samples(
        {k: v for k, v in r.items() if k not in ("start", "end")}
        | {
            "start": 0.0,
            "end": next(u for u in map(json.loads, (tmp_path / "data" / "utterances.jsonl").read_text().splitlines()) if u["sha256"] == r["source_sha256"])[
                "duration"
            ],
        }
    )
    out = utt(torch.from_numpy(whole)[None], torch.tensor([len(whole)]))
    frames = utt.select(out)[0, : int(out.lengths[0])].numpy()
    a = int(r["start"] * utt.frame_rate)
    got = FeatureCache(tmp_path / "cache", utt.spec).get(r["sha256"])
    np.testing.assert_allclose(got, frames[a : a + len(got)], atol=1e-5)
    assert extract(m, utt, tmp_path / "cache").computed == 0  # cached, each utterance encoded once
    # The whole utterance is kept in the clip view's cache too: the recogniser and the tagger read it without encoding again.
    assert dataclasses.replace(utt.spec, view="clip") == clip.spec
    np.testing.assert_allclose(FeatureCache(tmp_path / "cache", clip.spec).get(r["source_sha256"]), frames, atol=1e-5)
    from phonemekit.data.manifest import Manifest
    from phonemekit.training.sequence import utterances

    utts, _, _ = utterances(tmp_path / "data")
    aligned = {r["source_sha256"] for r in m.rows}
    res = extract(Manifest(utts.root, [u for u in utts.rows if u["sha256"] in aligned], utts.labels), clip, tmp_path / "cache")
    assert res.computed == 0 and res.cached == len(aligned)


def test_import_and_align_on_the_command_line(speechocean, tmp_path):
    from typer.testing import CliRunner

    from phonemekit.cli import app

    r = CliRunner().invoke(app, ["import", "speechocean762", str(speechocean), "--out", str(tmp_path / "data")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["align", str(tmp_path / "data"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "data" / "manifest.jsonl").read_text().splitlines()) > 100
    bad = CliRunner().invoke(app, ["import", "nocorpus", str(speechocean), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown corpus format 'nocorpus'" in bad.output
    bad = CliRunner().invoke(app, ["align", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "run `phonemekit import" in bad.output


def test_lhotse_manifests_with_phone_alignments_and_hostile_entries(tmp_path):
    import gzip

    from phonemekit.data.importers import import_corpus
    from phonemekit.data.manifest import load_manifest

    x = _say("she sat", "en-us", 50)
    dur = len(x) / 16000
    src = tmp_path / "lh"
    write_audio(src / "audio" / "r1.wav", np.concatenate([x, x]))
    write_audio(tmp_path / "outside.wav", x)
    recs = [
        {"id": "r1", "sources": [{"type": "file", "channels": [0], "source": "audio/r1.wav"}], "sampling_rate": 16000, "duration": 2 * dur},
        {"id": "r2", "sources": [{"type": "command", "channels": [0], "source": "rm -rf ~ |"}], "sampling_rate": 16000},
        {"id": "r3", "sources": [{"type": "file", "channels": [0], "source": "../outside.wav"}], "sampling_rate": 16000},
    ]
    phones = [{"symbol": "SH", "start": 0.2, "duration": 0.1}, {"symbol": "IY1", "start": 0.3, "duration": 0.12},
              {"symbol": "QQ", "start": 0.42, "duration": 0.05}, {"symbol": "S", "start": -1, "duration": 0.1}]  # fmt: skip
    sups = [
        {"id": "u1", "recording_id": "r1", "start": 0.0, "duration": dur, "speaker": "kid", "text": "SHE SAT", "custom": {"age": 7, "split": "train"},
         "alignment": {"phone": phones}},
        {"id": "u2", "recording_id": "r1", "start": dur, "duration": dur, "speaker": "kid", "text": "SHE SAT"},
        {"id": "u3", "recording_id": "r2", "start": 0, "duration": 1.0, "speaker": "x"},
        {"id": "u4", "recording_id": "r1", "start": "soon", "duration": 1.0, "speaker": "x"},
    ]  # fmt: skip
    with gzip.open(src / "recordings.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in recs) + "\nnot json\n")
    (src / "supervisions.jsonl").write_text("\n".join(json.dumps(s) for s in sups) + "\n")
    s = import_corpus("lhotse", src, tmp_path / "data")
    m = load_manifest(tmp_path / "data")
    assert s["utterances"] == 2 and [r["label"] for r in m.rows] == ["sh", "ee_iy"] and s["unknown_phones"] == {"QQ": 1}
    assert s["reasons"] == {"bad_line": 1, "unsupported_source": 1, "path_escape": 1, "missing": 1, "bad_segment": 1, "bad_interval": 1}
    utts = [json.loads(line) for line in (tmp_path / "data" / "utterances.jsonl").read_text().splitlines()]
    assert utts[0]["group"] == "child" and utts[0]["split"] == "train" and utts[1]["segment"] == [pytest.approx(dur), pytest.approx(2 * dur)]
    assert m.rows[0]["start"] == pytest.approx(0.15) and m.rows[0]["source_sha256"] == utts[0]["sha256"]


def _copy_hashes(out, condition: str, tmp, n: int = 5) -> tuple[set[str], set[str]]:
    """(copies, originals): a few training clips of the augmentation table and
    their copies made again (a copy is a function of its clip and the seed)."""
    from phonemekit.data.manifest import Manifest
    from phonemekit.recipes.augmentation import augmented_copies, training_subset
    from phonemekit.recipes.real import both_manifest
    from phonemekit.training.experiment import make_split

    both = both_manifest(out, out / "data")
    rows = training_subset(both, 0.5)
    subset = Manifest(both.root, rows, list(both.labels), None, dict(both.groups), own_salt=both.salt)
    train = subset.rows_of(make_split(subset, "corpus").train)[:n]
    _, copies = augmented_copies(subset, train, condition, tmp)
    return {r["sha256"] for r in copies}, {r["sha256"] for r in train}
