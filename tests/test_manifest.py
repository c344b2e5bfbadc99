from __future__ import annotations

import os

import pytest

from phonemekit.data.manifest import load_manifest, prepare
from phonemekit.errors import DataError
from phonemekit.fileio import read_json, read_jsonl

from .conftest import make_corpus


def test_prepare_writes_manifest_labels_and_rejections(tmp_path, corpus):
    (corpus / "s1" / "aa" / "bad.wav").write_bytes(b"garbage")
    s = prepare(corpus, tmp_path / "out")
    rows = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert s["clips"] == len(rows) == 5 * 3 * 3
    assert read_json(tmp_path / "out" / "labels.json") == ["aa", "ee", "sh"]
    rejected = read_jsonl(tmp_path / "out" / "rejected.jsonl")
    assert rejected == [{"path": "s1/aa/bad.wav", "reason": "not_audio", "detail": ""}]
    row = rows[0]
    assert set(row) >= {"path", "speaker", "label", "duration", "sample_rate", "sha256"}
    assert not os.path.isabs(row["path"])


def test_prepare_is_idempotent(tmp_path, corpus):
    s1 = prepare(corpus, tmp_path / "out")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    s2 = prepare(corpus, tmp_path / "out")
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    assert s1["changed"] and not s2["changed"]
    assert before == after


def test_strict_fails_on_a_bad_file(tmp_path, corpus):
    (corpus / "s2" / "ee" / "empty.wav").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        prepare(corpus, tmp_path / "out", strict=True)


def test_symlink_escaping_root_and_bad_names_are_rejected(tmp_path, corpus):
    outside = tmp_path / "secret.wav"
    (corpus / "s1" / "aa" / "t0.wav").rename(outside)
    (corpus / "s1" / "aa" / "link.wav").symlink_to(outside)
    (corpus / "s1" / "aa" / "bad\nname.wav").write_bytes((corpus / "s1" / "aa" / "t1.wav").read_bytes())
    prepare(corpus, tmp_path / "out")
    reasons = {r["path"]: r["reason"] for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert reasons["s1/aa/link.wav"] == "symlink_escape"
    assert reasons["s1/aa/bad\nname.wav"] == "bad_name"
    assert all("secret" not in r["path"] for r in read_jsonl(tmp_path / "out" / "manifest.jsonl"))


def test_unknown_label_and_bad_layout(tmp_path, corpus):
    (corpus / "loose.wav").write_bytes((corpus / "s1" / "aa" / "t0.wav").read_bytes())
    prepare(corpus, tmp_path / "out", labels=["aa", "ee"])
    reasons = {r["path"]: r["reason"] for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert reasons["loose.wav"] == "bad_layout"
    assert reasons["s1/sh/t0.wav"] == "unknown_label"
    assert load_manifest(tmp_path / "out").labels == ["aa", "ee"]


def test_groups_from_speakers_file(tmp_path):
    root = make_corpus(tmp_path / "rec", speakers=("kid1", "adult1", "adult2"))
    (tmp_path / "rec" / "speakers.json").write_text('{"kid1": {"group": "child"}, "adult1": "adult"}')
    prepare(root, tmp_path / "out")
    m = load_manifest(tmp_path / "out")
    assert m.groups == {"kid1": "child", "adult1": "adult", "adult2": "unknown"}


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="run `phonemekit prepare"):
        load_manifest(tmp_path)
