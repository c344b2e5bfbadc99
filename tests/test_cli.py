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
        r = runner.invoke(app, [name, "--help"], terminal_width=80, env={"COLUMNS": "80"})
        assert r.exit_code == 0, name
        # Every line fits an 80-column terminal and every option's name is there whole.
        assert max(map(len, r.output.splitlines())) <= 80, (name, r.output)
        assert "…" not in r.output, (name, r.output)
        command = typer.main.get_command(app).commands[name]
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in r.output, (name, opt)


def test_every_default_runs_offline():
    """The defaults a newcomer gets (model, models, encoder) need no model hub."""
    import typer.main

    from phonemekit.models.encoders import default_source
    from phonemekit.models.presets import DEFAULT_ENCODER, DEFAULT_MODEL, DEFAULT_MODELS, get_preset

    commands = typer.main.get_command(app).commands
    default = lambda cmd, opt: next(p.default for p in commands[cmd].params if p.name == opt)  # noqa: E731
    assert default("train", "model") == DEFAULT_MODEL and default("train-all", "models") == ",".join(DEFAULT_MODELS)
    assert default("extract", "encoder") == DEFAULT_ENCODER
    import inspect

    import phonemekit

    assert inspect.signature(phonemekit.train).parameters["model"].default == DEFAULT_MODEL
    hub = lambda source: "/" in source and not source.startswith(("whisper:", "random:", ".", "/"))  # noqa: E731  a hub id: org/name
    for name in (DEFAULT_MODEL, *DEFAULT_MODELS):
        assert not hub(get_preset(name).encoder.source), name
    assert not hub(default_source(DEFAULT_ENCODER))


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


def test_a_folder_of_clips_holding_a_stray_manifest_is_still_a_folder(corpus, tmp_path):
    from phonemekit.data.manifest import prepare
    from phonemekit.deploy.batchtest import list_inputs

    (corpus / "manifest.jsonl").write_text('{"path": "elsewhere.wav"}\n')  # not a prepared dataset: no dataset.json
    items = list_inputs(corpus, ["aa", "ee", "sh"])
    assert len(items) == 45 and {label for _, label, _ in items} == {"aa", "ee", "sh"}
    (corpus / "manifest.jsonl").unlink()
    prepare(corpus, tmp_path / "data")  # a prepared dataset is read as one
    assert len(list_inputs(tmp_path / "data", ["aa", "ee", "sh"])) == 45
