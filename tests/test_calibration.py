"""Verdict calibration: temperature scaling recovers a known over-confidence,
thresholds hold the target false-accept rate on the data they were fitted
on, malformed calibrations are refused."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special

from phonemekit.errors import ConfigError, IntegrityError
from phonemekit.evaluation.calibration import Calibration, calibrate, ece, far_threshold, fit_calibration, fit_temperature, uncalibrated_verdict, verdict_rates

LABELS = [f"p{i}" for i in range(6)]


def _scores(n: int, overconfidence: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the 'model' reports softmax(z * overconfidence)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(LABELS))) * 2.0
    p = scipy.special.softmax(z, axis=1)
    y = np.array([rng.choice(len(LABELS), p=row) for row in p])
    return scipy.special.log_softmax(z * overconfidence, axis=1), y


def test_temperature_recovers_overconfidence_and_lowers_ece():
    logp, y = _scores(4000, 3.0)
    t = fit_temperature(logp, y)
    assert 2.6 < t < 3.4
    assert ece(calibrate(logp, t), y) < 0.5 * ece(calibrate(logp, 1.0), y)


def test_well_calibrated_scores_keep_temperature_near_one():
    logp, y = _scores(4000, 1.0, seed=1)
    assert 0.85 < fit_temperature(logp, y) < 1.15


def test_far_threshold_is_the_lowest_that_holds_the_rate():
    imp = np.random.default_rng(0).uniform(size=1000)
    thr = far_threshold(imp, 0.05)
    assert (imp >= thr).mean() <= 0.05
    assert (imp >= np.sort(imp)[::-1][50]).mean() > 0.05  # one step lower would exceed it


def test_fitted_thresholds_hold_target_far_on_their_data_and_fall_back_for_rare_sounds():
    logp, y = _scores(3000, 2.0, seed=2)
    keep = (y != 5) | (np.arange(len(y)) < 300)  # sound p5 gets only a few clips
    keep &= ~((y == 5) & (np.cumsum(y == 5) > 3))
    logp, y = logp[keep], y[keep]
    cal = fit_calibration(logp, y, LABELS, target_far=0.05, min_clips=5)
    assert "p5" not in cal.thresholds and cal.threshold_of("p5") == cal.threshold
    rates = verdict_rates(cal, logp, y, LABELS)
    for lab in LABELS[:5]:
        assert rates["per_sound"][lab]["far"] <= 0.05 + 1e-9
    # The global threshold holds the rate over all sounds pooled.
    pooled = Calibration(cal.temperature, cal.target_far, cal.threshold, {})
    assert verdict_rates(pooled, logp, y, LABELS)["far"] <= 0.05 + 1e-9
    # A looser target accepts more genuine attempts.
    loose = fit_calibration(logp, y, LABELS, target_far=0.2, min_clips=5)
    assert verdict_rates(loose, logp, y, LABELS)["frr"] < rates["frr"]


def test_verdict_applies_temperature_and_threshold():
    cal = Calibration(temperature=2.0, target_far=0.05, threshold=0.5, thresholds={"p0": 0.3})
    p = scipy.special.softmax(np.array([2.0, 1.0, 0, 0, 0, 0]))
    v = cal.verdict(p, LABELS, "p0")
    expected = scipy.special.softmax(np.log(p) / 2.0)[0]
    assert v["probability"] == pytest.approx(expected, abs=1e-4) and v["accepted"] == (expected >= 0.3)
    assert cal.verdict(p, LABELS, "p1")["threshold"] == 0.5
    assert uncalibrated_verdict(p, LABELS, "p0")["accepted"] and not uncalibrated_verdict(p, LABELS, "p1")["accepted"]


def test_round_trip_and_malformed_calibrations_are_refused():
    cal = fit_calibration(*_scores(500, 2.0), LABELS)
    assert Calibration.from_dict(cal.to_dict(), LABELS) == cal
    good = cal.to_dict()
    for bad in (
        {**good, "temperature": float("nan")},
        {**good, "temperature": -1},
        {**good, "threshold": 1.5},
        {**good, "thresholds": {"zz": 0.2}},
        {**good, "format": "other"},
        {**good, "target_far": 0},
        [1, 2],
    ):
        with pytest.raises(IntegrityError):
            Calibration.from_dict(bad, LABELS)
    with pytest.raises(ConfigError):
        fit_calibration(*_scores(50, 1.0), LABELS, target_far=1.5)
