"""modelops.metrics: hand-computed numbers, no database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelops import metrics as M

ROOT = Path(__file__).resolve().parents[1]


def test_wilson_known_values_match_training():
    # The same values tests/test_leave_one_source_out.py checks for training.crossval.wilson.
    assert M.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert M.wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert M.wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert M.wilson(0, 0) is None
    assert M.Rate(0, 0).value is None
    assert M.Rate(0, 0).ci95 is None


def test_confusion_matrix_keeps_every_class_and_puts_other_last():
    pairs = [("normal", "normal"), ("normal", "covid"), ("other", "normal"), ("covid", "covid"), ("covid", "covid")]
    rows, counts = M.confusion_matrix(pairs, ["normal", "pneumonia", "covid"])
    assert rows == ["normal", "pneumonia", "covid", "other"]
    assert counts == [[1, 0, 1], [0, 0, 0], [0, 0, 2], [1, 0, 0]]


def test_class_rates_one_versus_rest():
    pairs = [("normal", "normal")] * 8 + [("normal", "covid")] * 2 + [("covid", "covid")] * 3 + [("other", "normal")]
    normal, covid = M.class_rates(pairs, ["normal", "covid"])
    assert (normal.tp, normal.fn, normal.fp, normal.tn) == (8, 2, 1, 3)
    assert normal.sensitivity.value == pytest.approx(0.8)
    assert normal.specificity.value == pytest.approx(3 / 4)  # "other" is a negative for normal
    assert normal.sensitivity.ci95 == M.wilson(8, 10)
    assert (covid.tp, covid.fn, covid.fp, covid.tn) == (3, 0, 2, 9)
    assert covid.signed == 3


def test_calibration_bins_and_ece():
    confidences = [0.95, 0.95, 0.95, 0.95, 0.55, 0.55, 1.0]
    correct = [True, True, True, False, True, False, True]
    bins = M.calibration_bins(confidences, correct, n_bins=10)
    assert [b.n for b in bins] == [0, 0, 0, 0, 0, 2, 0, 0, 0, 5]
    top = bins[9]
    assert top.mean_confidence == pytest.approx((0.95 * 4 + 1.0) / 5)
    assert top.accuracy == pytest.approx(4 / 5)
    expected = 2 / 7 * abs(0.5 - 0.55) + 5 / 7 * abs(0.8 - 0.96)
    assert M.expected_calibration_error(bins) == pytest.approx(expected)
    assert M.expected_calibration_error(M.calibration_bins([], [])) is None
    with pytest.raises(ValueError, match="not a probability"):
        M.calibration_bins([1.5], [True])


def test_refusal_rate():
    rate = M.refusal_rate(3, 12)
    assert rate.value == pytest.approx(0.25)
    assert rate.ci95 == M.wilson(3, 12)
    with pytest.raises(ValueError, match="between 0 and judged"):
        M.refusal_rate(5, 4)


def test_binomial_band_holds_the_expected_count_and_excludes_a_shift():
    band = M.binomial_band(0.35, 100, 0.001)
    assert band.contains(0.35)
    assert band.low > 0.15
    assert band.high < 0.55
    assert not band.contains(1.0)
    # At a rare class's rate, the band starts at zero counts: a week without it is no alarm.
    assert M.binomial_band(0.01, 50, 0.001).low == 0.0


def shipped_reference() -> M.DriftReference:
    meta = json.loads((ROOT / "ml/models/xray-mobilenetv2-2.0.0/model.json").read_text())
    return M.DriftReference.from_model_json(meta)


def test_reference_read_from_the_shipped_model_json():
    ref = shipped_reference()
    assert ref.classes == ("normal", "pneumonia", "covid", "tuberculosis")
    # Column sums of the test confusion matrix [[491,36,21,3],[116,580,29,2],[49,19,184,1],[5,5,2,14]].
    assert ref.predicted_shares["normal"] == pytest.approx(661 / 1557)
    assert ref.predicted_shares["tuberculosis"] == pytest.approx(20 / 1557)
    assert ref.accuracy == pytest.approx(0.815028901734104)
    assert ref.refusal_rate == pytest.approx(35 / 1557)
    assert ref.ood_tail_rate == pytest.approx(0.01)


def test_reference_of_a_model_without_figures_bands_nothing():
    ref = M.DriftReference.from_model_json({"classes": ["a", "b"], "metrics": {}})
    week = M.WeekStats(judged=40, refused=40, predicted={}, top_probabilities=[])
    checks = M.evaluate_week(ref, week, alpha=0.001, min_n=20)
    assert not any(c.out_of_band for c in checks)


def week_like_the_test_split(ref: M.DriftReference, n: int = 200) -> M.WeekStats:
    predicted = {label: round(share * n) for label, share in ref.predicted_shares.items()}
    return M.WeekStats(
        judged=sum(predicted.values()) + 4,
        refused=4,
        predicted=predicted,
        top_probabilities=[ref.accuracy] * sum(predicted.values()),
        distances=[0.5] * 198 + [1.2] * 2,
        signed=50,
        agreed=41,
    )


def test_a_week_like_the_test_split_is_in_band():
    ref = shipped_reference()
    checks = M.evaluate_week(ref, week_like_the_test_split(ref), alpha=0.001, min_n=20)
    assert {c.statistic for c in checks} == {
        "predicted:normal", "predicted:pneumonia", "predicted:covid", "predicted:tuberculosis",
        "mean_top_probability", "refusal_rate", "ood_tail", "agreement",
    }  # fmt: skip
    assert [c.statistic for c in checks if c.out_of_band] == []


def test_a_week_of_one_predicted_class_is_out_of_band():
    ref = shipped_reference()
    week = week_like_the_test_split(ref)
    week.predicted = {"covid": 200}
    out = {c.statistic for c in M.evaluate_week(ref, week, alpha=0.001, min_n=20) if c.out_of_band}
    assert out == {"predicted:normal", "predicted:pneumonia", "predicted:covid"}  # tuberculosis: 0 is in band


def test_refusals_confidence_and_agreement_shifts_are_caught():
    ref = shipped_reference()
    week = week_like_the_test_split(ref)
    week.refused, week.judged = 40, 240
    week.top_probabilities = [0.99] * len(week.top_probabilities)
    week.distances = [1.5] * 100 + [0.5] * 100
    week.agreed = 20
    out = {c.statistic for c in M.evaluate_week(ref, week, alpha=0.001, min_n=20) if c.out_of_band}
    assert out == {"refusal_rate", "mean_top_probability", "ood_tail", "agreement"}


def test_small_weeks_are_shown_but_not_judged():
    ref = shipped_reference()
    week = M.WeekStats(judged=5, refused=5, predicted={"covid": 5}, top_probabilities=[1.0] * 5)
    checks = M.evaluate_week(ref, week, alpha=0.001, min_n=20)
    assert checks
    assert all(c.band is None for c in checks)
    assert not any(c.out_of_band for c in checks)
