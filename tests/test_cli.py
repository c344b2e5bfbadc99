from __future__ import annotations

import json

from typer.testing import CliRunner

from phonemekit.cli import app

runner = CliRunner()


def test_help_on_every_subcommand():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    import typer.main

    names = sorted(typer.main.get_command(app).commands)
    assert {"prepare", "extract", "demo-data", "encoders"} <= set(names)
    for name in names:
        r = runner.invoke(app, [name, "--help"])
        assert r.exit_code == 0, name


def test_prepare_and_extract_fbank(tmp_path, corpus):
    r = runner.invoke(app, ["prepare", str(corpus), "--out", str(tmp_path / "data")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["extract", "--manifest", str(tmp_path / "data"), "--encoder", "fbank", "--out", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    spec_files = list((tmp_path / "cache").glob("*/spec.json"))
    assert len(spec_files) == 1 and json.loads(spec_files[0].read_text())["family"] == "fbank"


def test_missing_weights_is_one_line_and_nonzero(tmp_path, corpus, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runner.invoke(app, ["prepare", str(corpus), "--out", str(tmp_path / "data")])
    r = runner.invoke(app, ["extract", "--manifest", str(tmp_path / "data"), "--encoder", "wavlm", "--out", str(tmp_path / "c")])
    assert r.exit_code == 2
    assert "error:" in r.output and "microsoft/wavlm-base" in r.output and "Traceback" not in r.output


def test_bad_input_is_one_line_and_nonzero(tmp_path):
    r = runner.invoke(app, ["prepare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "is not a folder" in r.output
