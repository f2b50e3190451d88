"""Evaluation code on hand-made predictions whose metrics are known."""

import numpy as np
import pytest

from training import metrics as M


def test_confusion_and_per_class_metrics():
    classes = ["a", "b", "c"]
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2, 1])
    probs = np.eye(3)[pred]
    m = M.point_metrics(y, probs, classes)
    assert m["confusion_matrix"] == [[3, 1, 0], [1, 1, 0], [0, 1, 1]]
    assert m["accuracy"] == pytest.approx(5 / 8)
    a = m["per_class"]["a"]
    assert a["sensitivity"] == pytest.approx(3 / 4)
    assert a["specificity"] == pytest.approx(3 / 4)
    assert a["ppv"] == pytest.approx(3 / 4)
    assert m["per_class"]["b"]["f1"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)


def test_roc_auc_known_values():
    assert M.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert M.roc_auc(np.array([0, 1]), np.array([0.2, 0.9])) == 1.0
    assert M.roc_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5


def test_bootstrap_interval_contains_point_estimate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    probs = np.where(rng.random(200) < 0.8, y, 1 - y)
    probs = np.eye(2)[probs] * 0.9 + 0.05
    m = M.evaluate(y, probs, ["x", "y"], n_bootstrap=200)
    low, high = m["ci95"]["accuracy"]
    assert low < m["accuracy"] < high
    assert high - low < 0.2


def test_pairwise_accuracy_compares_only_two_classes():
    classes = ["normal", "pneumonia", "covid"]
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.3, 0.1, 0.6], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    r = M.pairwise_accuracy(y, probs, classes, "normal", "pneumonia")
    # Image 0: normal 0.3 > pneumonia 0.1 -> right despite covid being top; 1 wrong; 2 right; 3 wrong.
    assert (r["n"], r["accuracy"]) == (4, 0.5)
    low, high = r["accuracy_ci95"]
    assert 0.0 <= low < 0.5 < high <= 1.0


def test_rate_interval_narrows_with_more_images_and_holds_the_rate():
    # 86.5 % of 52 images (the tuberculosis pair) against the same rate on 800: the small split's
    # interval is several times wider and reaches below 85 %.
    small = M.proportion_ci95(np.array([1] * 45 + [0] * 7))
    large = M.proportion_ci95(np.array([1] * 692 + [0] * 108))
    assert small[0] < 0.78
    assert small[1] > 0.94
    assert 0.83 < large[0] < 0.865 < large[1] < 0.89
    assert M.proportion_ci95(np.array([1, 1, 1])) == [1.0, 1.0]
    assert M.proportion_ci95(np.array([])) is None


def test_temperature_scaling_fixes_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    correct = rng.random(2000) < 0.7
    pred = np.where(correct, y, 1 - y)
    probs = np.eye(2)[pred] * 0.98 + 0.01  # claims 99 % but is right 70 % of the time
    before = M.expected_calibration_error(y, probs)
    t = M.fit_temperature(y, probs)
    after = M.expected_calibration_error(y, M.apply_temperature(probs, t))
    assert t > 1.5
    assert before > 0.25
    assert after < 0.05


def test_worker_calibration_matches_training():
    from ml.inference import calibrate

    probs = np.array([[0.7, 0.2, 0.1]])
    assert np.allclose(calibrate(probs, 2.0), M.apply_temperature(probs, 2.0))


def test_card_targets_say_which_are_missed():
    from training.report import target_results

    meta = {
        "modality": "xray",
        "metrics": {
            "test": {"balanced_accuracy": 0.90},
            "within_source": {
                "covid19rad224: normal vs covid": {"n": 10, "accuracy": 0.95},
                "kermany224: normal vs pneumonia": {"n": 10, "accuracy": 0.93, "accuracy_ci95": [0.8, 1.0]},
            },
            "adult_normals_called_normal": {"n": 10, "rate": 0.85},
        },
    }
    results = {name: (required, value, ci) for name, required, value, ci in target_results(meta)}
    assert results["normal vs pneumonia within kermany224"] == (0.94, 0.93, [0.8, 1.0])
    assert results["tuberculosis vs normal within nitrd_da"] == (0.85, None, None)  # no such pair measured
    assert results["adult normals called normal"] == (0.85, 0.85, None)  # written before intervals existed
    ct = target_results({"modality": "ct", "metrics": {"test": {"accuracy": 0.8, "ci95": {"accuracy": [0.7, 0.9]}}}})
    assert ct == [("accuracy", 0.85, 0.8, [0.7, 0.9])]
