"""One test per class of defect a hostile review found: writes outside the
output folder, integrity that misses what answers depend on, children's
names in folders, split leaks through duplicates and Unicode, and inputs
that used to end in a traceback instead of one line and exit 2."""

from __future__ import annotations

import json
import os
import shutil
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from phonemekit.cli import app
from phonemekit.config import ModelConfig, from_dict, load_config_file
from phonemekit.data.audio import load_audio, write_audio
from phonemekit.data.manifest import load_manifest, prepare
from phonemekit.errors import AudioValidationError, ConfigError, DataError, IntegrityError, LockedError, OutputError
from phonemekit.fileio import folder_lock, read_jsonl, write_json

from .conftest import make_corpus, tone

runner = CliRunner()


def one_line_error(args: list[str], match: str) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert "Traceback" not in r.output and r.output.strip().startswith("error:"), r.output
    assert match in r.output, r.output
    return r.output


def _toy(tmp_path, **kw) -> dict:
    return {
        "name": "toy",
        "encoder": {"family": "fbank", "source": "fbank"},
        "head": {"kind": "mlp", "options": {"hidden": [8]}},
        "train": {"epochs": 1, "batch_size": 8},
        **kw,
    }


# -- writes outside the output folder ---------------------------------------------------


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", "..", ".hidden", "x" * 65, ""])
def test_a_model_name_is_an_identifier_never_a_path(tmp_path, name):
    with pytest.raises(ConfigError, match="'name'"):
        ModelConfig(name=name)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(_toy(tmp_path, name=name)))
    with pytest.raises(ConfigError, match="'name'"):
        load_config_file(cfg)


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.wav", "s1/../../outside.wav"])
def test_manifest_rows_stay_inside_the_data_root_for_every_reader(tmp_path, prepared, exported, bad):
    rows = read_jsonl(prepared.path)
    rows[0]["path"] = bad
    prepared.path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="line 1"):
        load_manifest(prepared.path)
    for args in (
        ["extract", "--manifest", str(prepared.path), "--encoder", "fbank", "--out", str(tmp_path / "c")],
        ["make-replay", "--manifest", str(prepared.path), "--out", str(tmp_path / "r.wav")],
        ["test-batch", str(exported), str(prepared.path), "--out", str(tmp_path / "p.csv")],
    ):
        one_line_error(args, "line 1")
    assert not (tmp_path / "r.wav").exists()


# -- integrity ---------------------------------------------------------------------------


@pytest.fixture
def exported(served_model):
    return served_model["model"]  # read only: every edit below goes to a copy


def _edit_metadata(src: Path, dst: Path, edit, keep_digest: bool = True) -> None:
    import onnx

    from phonemekit.deploy import onnx as ox

    m = onnx.load(str(src))
    meta = ox.metadata_of(m)
    edit(meta)
    if not keep_digest:  # an attacker who also recomputes the digest
        meta["integrity_sha256"] = ox.integrity_sha256(meta)
    del m.metadata_props[:]
    for k, v in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, str(dst))


def test_onnx_labels_and_limits_are_bound_to_the_checked_hash(exported, tmp_path):
    from phonemekit.deploy import onnx as ox
    from phonemekit.deploy.runtime import Classifier

    good = Classifier.load(exported)
    trusted = {good.meta["integrity_sha256"]}
    Classifier.load(exported, trusted=trusted)
    for key, value in (("labels", json.dumps(good.labels[::-1])), ("max_frames", "100000"), ("blank", "0"), ("sample_rate", "8000")):
        _edit_metadata(exported, tmp_path / "t.onnx", lambda m, key=key, value=value: m.update({key: value}))
        with pytest.raises(IntegrityError, match="tampered"):
            Classifier.load(tmp_path / "t.onnx")
        # With the digest recomputed, the file is no longer the trusted one.
        _edit_metadata(exported, tmp_path / "t.onnx", lambda m, key=key, value=value: m.update({key: value}), keep_digest=False)
        with pytest.raises(IntegrityError, match="trusted-hashes"):
            Classifier.load(tmp_path / "t.onnx", trusted=trusted)
    for key, value, why in (
        ("labels", '"aa"', "labels"),
        ("labels", "[not json", "malformed"),
        ("max_frames", '"x"', "max_frames"),
        ("labels", json.dumps(good.labels + ["extra"]), "labels"),
    ):
        _edit_metadata(exported, tmp_path / "m.onnx", lambda m, key=key, value=value: m.update({key: value}), keep_digest=False)
        with pytest.raises(IntegrityError, match=why):
            Classifier.load(tmp_path / "m.onnx")
    _edit_metadata(exported, tmp_path / "n.onnx", lambda m: m.pop("max_frames"), keep_digest=False)
    with pytest.raises(IntegrityError, match="max_frames is missing"):
        Classifier.load(tmp_path / "n.onnx")
    assert ox.is_intact(__import__("onnx").load(str(exported)))


def test_two_runs_into_one_folder_are_refused_clearly(tmp_path, corpus, prepared):
    from phonemekit.training.experiment import train_all

    with folder_lock(tmp_path / "out", "test"):
        with pytest.raises(LockedError, match="in use by another phonemekit run"):
            prepare(corpus, tmp_path / "out")
        with pytest.raises(LockedError, match="in use"):
            train_all(prepared, [from_dict(ModelConfig, _toy(tmp_path))], tmp_path / "out", leaky=False, cache_root=tmp_path / "c")
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".phonemekit.lock"]
    prepare(corpus, tmp_path / "out")  # released


# -- names and the honesty of the split --------------------------------------------------


def test_loso_folders_and_records_carry_pseudonyms_only(tmp_path):
    from phonemekit.training.experiment import train_all

    names = ("alice", "bob", "carol", "dave")
    make_corpus(tmp_path / "rec", speakers=names, takes=2)
    (tmp_path / "rec" / "speakers.json").write_text(json.dumps({"alice": "child", "bob": "child", "carol": "adult", "dave": "adult"}))
    prepare(tmp_path / "rec", tmp_path / "data")
    m = load_manifest(tmp_path / "data")
    train_all(
        m,
        [from_dict(ModelConfig, _toy(tmp_path))],
        tmp_path / "out",
        split_kind="loso",
        leaky=False,
        cache_root=tmp_path / "c",
        loso_group="child",
        show_speakers=True,
    )
    from phonemekit.runs import Run

    pooled = Run(tmp_path / "out" / "models" / "toy").predictions("test")  # a LOSO folder: folds' checkpoints, pooled scores
    assert pooled.labels == m.labels and len(pooled.y) == sum(r["speaker"] in ("alice", "bob") for r in m.rows)
    for p in (tmp_path / "out").rglob("*"):
        rel = str(p.relative_to(tmp_path / "out"))
        assert not any(n in rel for n in names), rel
        if p.is_file() and p.name in ("metrics.json", "history.json") and "fold-" in rel:
            assert not any(n in p.read_text() for n in names), rel


def test_pseudonyms_are_bound_to_the_data_not_the_working_folder(tmp_path, corpus, monkeypatch):
    import phonemekit.privacy as privacy
    from phonemekit.privacy import Namer

    prepare(corpus, tmp_path / "data")
    m = load_manifest(tmp_path / "data")
    seen = set()
    for home in ("a", "b"):  # two commands run from different folders
        monkeypatch.setattr(privacy, "WORKSPACE", tmp_path / home / ".phonemekit")
        seen.add(Namer.of(load_manifest(tmp_path / "data"))("s1"))
    assert len(seen) == 1 and (tmp_path / "data" / "salt").stat().st_mode & 0o077 == 0
    assert m.salt and Namer.of(m)("s1") in seen


def test_names_are_normalised_and_duplicate_audio_is_kept_once(tmp_path):
    root = make_corpus(tmp_path / "rec", speakers=("s1", "s2", "s3"))
    nfc, nfd = unicodedata.normalize("NFC", "zoé"), unicodedata.normalize("NFD", "zoé")
    write_audio(root / nfc / "aa" / "a.wav", tone(230, seed=11))
    write_audio(root / nfd / "aa" / "b.wav", tone(231, seed=12))
    # The same bytes under another speaker and another label: one clip in two places.
    shutil.copy(root / "s1" / "aa" / "t0.wav", root / "s2" / "ee" / "copy.wav")
    s = prepare(root, tmp_path / "data")
    rows = read_jsonl(tmp_path / "data" / "manifest.jsonl")
    assert sorted({r["speaker"] for r in rows}) == sorted({"s1", "s2", "s3", nfc})
    assert len({r["sha256"] for r in rows}) == len(rows)
    rejected = {r["path"]: r for r in read_jsonl(tmp_path / "data" / "rejected.jsonl")}
    assert rejected["s2/ee/copy.wav"]["reason"] == "duplicate" and "s1/aa/t0.wav" in rejected["s2/ee/copy.wav"]["detail"]
    assert s["reasons"] == {"duplicate": 1}
    prepare(root, tmp_path / "strict", duplicates="reject-all")
    gone = {r["path"] for r in read_jsonl(tmp_path / "strict" / "rejected.jsonl") if r["reason"] == "duplicate"}
    assert gone == {"s1/aa/t0.wav", "s2/ee/copy.wav"}


def test_a_changed_file_with_the_same_size_and_time_is_noticed(tmp_path, corpus):
    from phonemekit.config import EncoderConfig
    from phonemekit.data.cache import extract
    from phonemekit.models.encoders import build_encoder

    prepare(corpus, tmp_path / "data")
    f = corpus / "s1" / "aa" / "t0.wav"
    st = f.stat()
    other = (corpus / "s2" / "aa" / "t0.wav").read_bytes()
    f.write_bytes(other[: st.st_size].ljust(st.st_size, b"\0"))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    s = prepare(corpus, tmp_path / "data")
    assert s["changed"]
    r = extract(load_manifest(tmp_path / "data"), build_encoder(EncoderConfig(family="fbank", source="fbank")), tmp_path / "cache")
    assert not r.failed  # prepare and extract agree on what the file is


# -- one line, exit 2, never a traceback --------------------------------------------------


@pytest.mark.parametrize(
    "content,match", [("", "not JSON"), ("{}", "JSON list"), ('"aa"', "JSON list"), ("[]", "JSON list"), ('["../x"]', "a label is 1-32 letters")]
)
def test_bad_labels_files(tmp_path, corpus, content, match):
    (tmp_path / "labels.json").write_text(content)
    one_line_error(["prepare", str(corpus), "--out", str(tmp_path / "o"), "--labels", str(tmp_path / "labels.json")], match)


def test_an_output_that_is_a_file(tmp_path, corpus):
    (tmp_path / "o").write_text("not a folder")
    one_line_error(["prepare", str(corpus), "--out", str(tmp_path / "o")], "is a file, not a folder")


@pytest.mark.parametrize("value", ["inf", "nan", "1e999", "-1"])
def test_absurd_durations(tmp_path, corpus, value):
    one_line_error(["prepare", str(corpus), "--out", str(tmp_path / "o"), "--max-seconds", value], "audio.max_seconds")


@pytest.mark.parametrize(
    "edit,key",
    [
        (lambda c: c["audio"].update(max_seconds=1e999), "audio.max_seconds"),
        (lambda c: c["head"]["options"].update(hidden=[10**9]), "head.options.hidden"),
        (lambda c: c["head"]["options"].update(dropout=1.5), "head.options.dropout"),
        (lambda c: c["train"].update(seed=2**64), "train.seed"),
        (lambda c: c["train"].update(num_threads=-1), "train.num_threads"),
        (lambda c: c["train"].update(batch_size=0), "train.batch_size"),
        (lambda c: c["train"].update(epochs=10**9), "train.epochs"),
    ],
)
def test_absurd_config_values_are_refused_before_anything_is_built(tmp_path, prepared, edit, key):
    cfg = _toy(tmp_path, audio={})
    edit(cfg)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg).replace("Infinity", "1e999"))
    one_line_error(
        ["train", "--data", str(prepared.path), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "cfg.json"), "--cache", str(tmp_path / "cache")], key
    )
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("row,match", [("[1, 2]", "not an object"), ('{"path": "s1/aa/t0.wav"}', "no speaker"), ("not json", "cannot read manifest")])
def test_malformed_manifest_rows(tmp_path, prepared, row, match):
    prepared.path.write_text(row + "\n")
    one_line_error(["extract", "--manifest", str(prepared.path), "--encoder", "fbank", "--out", str(tmp_path / "c")], match)


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import errno

    from phonemekit.fileio import write_text

    write_text(tmp_path / "report.md", "old")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("phonemekit.fileio.os.replace", full)
    with pytest.raises(OutputError, match=r"cannot write .*report.md: No space left"):
        write_text(tmp_path / "report.md", "new")
    monkeypatch.undo()
    assert (tmp_path / "report.md").read_text() == "old" and not list(tmp_path.glob(".*.tmp"))


def test_deeply_nested_folders_are_walked_not_recursed(tmp_path, corpus):
    from phonemekit.deploy.batchtest import list_inputs

    top = deep = corpus / "s1" / "aa" / "d"
    levels = [top]
    top.mkdir()
    for _ in range(1100):  # one level at a time: pathlib's own mkdir(parents=True) recurses
        deep = deep / "d"
        deep.mkdir()
        levels.append(deep)
    write_audio(deep / "x.wav", tone(220))
    try:
        s = prepare(corpus, tmp_path / "data")
        assert s["reasons"] == {"bad_layout": 1}
        r = runner.invoke(app, ["purge", "--older-than", "0", "--what", "audio", "--audio", str(corpus)])
        assert r.exit_code == 0 and "would be deleted" in r.output
        assert any(p.name == "x.wav" for p, _, _ in list_inputs(corpus, ["aa"]))
    finally:  # removed here, deepest first: shutil.rmtree (pytest's clean-up) recurses
        (deep / "x.wav").unlink()
        for level in reversed(levels):
            level.rmdir()


def test_bad_live_configs(tmp_path, exported):
    (tmp_path / "bad.json").write_text("{nope")
    base = ["live", "--model", str(exported), "--file", str(tmp_path / "none.wav")]
    one_line_error(base + ["--config", str(tmp_path / "bad.json")], "cannot parse live config")
    one_line_error(base + ["--config", str(tmp_path / "missing.json")], "cannot read live config")
    (tmp_path / "list.json").write_text("[1]")
    one_line_error(base + ["--config", str(tmp_path / "list.json")], "must be a JSON object")


def test_a_wav_header_with_an_odd_sample_width_is_refused(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, 8000, dtype=np.uint8).tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 16000, 1, 7)
    wav = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    (tmp_path / "b7.wav").write_bytes(wav)
    with pytest.raises(AudioValidationError, match="7 bits per sample"):
        load_audio(tmp_path / "b7.wav")


def test_invalid_utf8_in_a_name_is_a_bad_name(tmp_path):
    root = make_corpus(tmp_path / "rec")
    bad = os.fsdecode(b"s1/aa/caf\xe9.wav")  # Latin-1 bytes, not UTF-8
    write_audio(root / bad, tone(250, seed=3))
    prepare(root, tmp_path / "data")
    reasons = {r["reason"]: r["detail"] for r in read_jsonl(tmp_path / "data" / "rejected.jsonl")}
    assert reasons == {"bad_name": "name is not valid UTF-8"}


def test_opus_and_ogg_names_are_treated_alike(tmp_path):
    write_audio(tmp_path / "a.ogg", tone(300))
    shutil.copy(tmp_path / "a.ogg", tmp_path / "a.opus")
    assert load_audio(tmp_path / "a.ogg").sha256 == load_audio(tmp_path / "a.opus").sha256
    shutil.copy(tmp_path / "a.ogg", tmp_path / "a.flac")
    with pytest.raises(AudioValidationError, match="wrong_extension"):
        load_audio(tmp_path / "a.flac")


# -- fuzz: manifests and configs end in a value or one typed error ------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8,
)
_row = st.fixed_dictionaries(
    {},
    optional={
        "path": _json | st.sampled_from(["s1/aa/t0.wav", "/etc/passwd", "../x.wav"]),
        "speaker": _json | st.just("s1"),
        "label": _json | st.just("aa"),
        "sha256": _json | st.just("0" * 64),
        "duration": _json | st.just(0.4),
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row | _json, min_size=1, max_size=3))
def test_fuzzed_manifests_load_or_fail_clearly(tmp_path, rows):
    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    write_json(folder / "dataset.json", {"root": str(tmp_path), "labels": ["aa", "ee"]})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        m = load_manifest(folder)
    except DataError:
        return
    for r in m.rows:
        assert Path(m.audio_path(r)).resolve().is_relative_to(tmp_path.resolve())


_sections = {
    "name": _json | st.just("ok"),
    "encoder": _json | st.fixed_dictionaries({}, optional={"family": _json, "layer": _json}),
    "head": _json
    | st.fixed_dictionaries(
        {"kind": st.sampled_from(["mlp", "ctc", "conv-ctc"])},
        optional={"options": st.dictionaries(st.sampled_from(["hidden", "proj", "layers", "dropout", "channels", "kernel", "pooling"]), _json)},
    ),
    "train": _json | st.dictionaries(st.sampled_from(["epochs", "batch_size", "lr", "seed", "num_threads", "grad_accum"]), _json),
    "audio": _json | st.dictionaries(st.sampled_from(["max_seconds", "min_seconds", "max_bytes", "sample_rate"]), _json),
}


@settings(max_examples=150, deadline=None)
@given(data=st.fixed_dictionaries({}, optional=_sections))
def test_fuzzed_configs_build_or_fail_clearly(data):
    from phonemekit.models.heads import check_head_options

    try:
        cfg = from_dict(ModelConfig, data)
        check_head_options(cfg.head)
    except ConfigError:
        return
    assert isinstance(cfg, ModelConfig)


def test_temp_files_of_killed_writers_are_swept(tmp_path):
    import socket
    import subprocess
    import sys

    from phonemekit.fileio import sweep_dead_temps, write_bytes

    host = socket.gethostname().replace(".", "_")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / f".a.npy.{host}-{dead}.x1y2z3.tmp").write_bytes(b"half")  # a writer killed mid-write
    (tmp_path / f".b.npy.{host}-{os.getpid()}.q9w8e7.tmp").write_bytes(b"live")  # this process, still writing
    (tmp_path / ".c.npy.otherhost-1.abcdef.tmp").write_bytes(b"elsewhere")  # another machine's
    write_bytes(tmp_path / "d.npy", b"done")
    assert sweep_dead_temps(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".b.npy.{host}-{os.getpid()}.q9w8e7.tmp", ".c.npy.otherhost-1.abcdef.tmp", "d.npy"])
