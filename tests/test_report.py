"""The report owner: named sections that steps add or replace without
touching each other's, rendered from report.json alone."""

from __future__ import annotations

import json

import pytest

from phonemekit.errors import DataError
from phonemekit.report.report import REPORT_JSON, REPORT_MD, Report, render


def _ensembles(top1: float) -> dict:
    return {"members": ["a", "b"], "chosen": "mean", "methods": {"mean": {"val_top1": 0.5, "top1": top1, "top1_ci95": [top1 - 0.1, top1 + 0.1], "top3": 0.9}}}


def _loso() -> dict:
    return {
        "group": "child",
        "models": {"a": {"top1": 0.7, "top1_ci95": [0.6, 0.8], "top1_ci95_speakers": [0.5, 0.9], "fold_top1": {"spk-1": 0.6, "spk-2": 0.8}}},
    }


def test_setting_one_section_keeps_the_others(tmp_path):
    Report.open(tmp_path).set("loso", _loso()).save()
    Report.open(tmp_path).set("ensembles", _ensembles(0.61)).save()
    Report.open(tmp_path).set("ensembles", _ensembles(0.72)).save()  # a re-run replaces its own section only
    again = Report.load(tmp_path)
    assert set(again.sections) == {"loso", "ensembles"}
    assert again["ensembles"]["methods"]["mean"]["top1"] == 0.72
    md = (tmp_path / REPORT_MD).read_text()
    assert md.count("## Ensembles") == 1 and "0.720" in md and "0.610" not in md
    assert md.index("## Leave-one-speaker-out") < md.index("## Ensembles")  # renderer order, not insertion order


def test_markdown_is_rebuilt_from_json_alone(tmp_path):
    Report.open(tmp_path).set("loso", _loso()).save()
    first = (tmp_path / REPORT_MD).read_text()
    (tmp_path / REPORT_MD).unlink()
    Report.load(tmp_path).save()
    assert (tmp_path / REPORT_MD).read_text() == first
    assert render("loso", _loso()) in first


def test_missing_malformed_and_old_reports_are_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="no report"):
        Report.load(tmp_path)
    (tmp_path / REPORT_JSON).write_text("{not json")
    with pytest.raises(DataError, match="unreadable"):
        Report.load(tmp_path)
    (tmp_path / REPORT_JSON).write_text(json.dumps({"models": {}}))  # the old flat layout
    with pytest.raises(DataError, match="not a phonemekit-report/2"):
        Report.load(tmp_path)
    with pytest.raises(DataError, match="no 'train' section"):
        Report(tmp_path)["train"]
    with pytest.raises(ValueError, match="no renderer"):
        Report(tmp_path).set("nonsense", {})


def test_loso_shows_the_baseline_beside_each_model():
    data = _loso()
    data["baselines"] = {"logreg [fbank]": {"top1": 0.5, "top1_ci95": [0.4, 0.6], "top1_ci95_speakers": [0.3, 0.7], "fold_top1": {"spk-1": 0.4, "spk-2": 0.6}}}
    data["models"]["a"]["vs_baseline"] = {"baseline": "logreg [fbank]", "top1_diff": 0.2, "diff_ci95": [0.1, 0.3], "mcnemar_p": 0.01}
    md = render("loso", data)
    assert "| logreg [fbank] | 0.500 |" in md and "a vs logreg [fbank]: +20.0 points" in md
