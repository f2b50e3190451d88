"""Evaluation metrics with bootstrap confidence intervals, and temperature scaling.

Pure NumPy, so the same code scores any backend's predictions and is easy to test on
hand-made numbers.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    matrix = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def roc_auc(y_binary: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney U) statistic, ties averaged."""
    positives = y_binary.sum()
    negatives = len(y_binary) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=float)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = ranks[y_binary == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def roc_curve(y_binary: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    thresholds = np.unique(scores)[::-1]
    p = max(int(y_binary.sum()), 1)
    n = max(len(y_binary) - int(y_binary.sum()), 1)
    tpr = [0.0] + [float(((scores >= t) & (y_binary == 1)).sum() / p) for t in thresholds]
    fpr = [0.0] + [float(((scores >= t) & (y_binary == 0)).sum() / n) for t in thresholds]
    return np.array(fpr), np.array(tpr)


def point_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro F1 and per-class figures for one set of predictions."""
    n = len(classes)
    y_pred = probs.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, n)
    per_class = {}
    for k, label in enumerate(classes):
        tp = matrix[k, k]
        fn = matrix[k].sum() - tp
        fp = matrix[:, k].sum() - tp
        tn = matrix.sum() - tp - fn - fp
        sensitivity = _safe_div(tp, tp + fn)
        ppv = _safe_div(tp, tp + fp)
        per_class[label] = {
            "support": int(tp + fn),
            "sensitivity": sensitivity,
            "specificity": _safe_div(tn, tn + fp),
            "ppv": ppv,
            "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
            "auc": roc_auc((y_true == k).astype(int), probs[:, k]),
        }
    present = [per_class[c] for c in classes if per_class[c]["support"] > 0]
    return {
        "n": int(len(y_true)),
        "accuracy": _safe_div(np.trace(matrix), matrix.sum()),
        "balanced_accuracy": float(np.mean([c["sensitivity"] for c in present])) if present else float("nan"),
        "macro_f1": float(np.nanmean([c["f1"] for c in present])) if present else float("nan"),
        "macro_auc": float(np.nanmean([c["auc"] for c in present])) if present else float("nan"),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def _flatten(metrics: dict) -> dict[str, float]:
    flat = {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")}
    for label, values in metrics["per_class"].items():
        for name in ("sensitivity", "specificity", "ppv", "f1", "auc"):
            flat[f"{label}.{name}"] = values[name]
    return flat


def evaluate(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], *, n_bootstrap: int = 1000, seed: int = 0
) -> dict:
    """Point metrics plus 95 % percentile bootstrap intervals (resampling images)."""
    metrics = point_metrics(y_true, probs, classes)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(y_true), len(y_true))
        for key, value in _flatten(point_metrics(y_true[idx], probs[idx], classes)).items():
            samples.setdefault(key, []).append(value)
    intervals = {}
    for key, values in samples.items():
        arr = np.array(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        intervals[key] = [float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))] if len(arr) else None
    metrics["ci95"] = intervals
    return metrics


def proportion_ci95(correct: np.ndarray, *, n_bootstrap: int = 1000, seed: int = 0) -> list[float] | None:
    """95 % percentile bootstrap interval of a rate (resampling images), as for the other metrics.

    A target met on 52 images is a weaker claim than one met on 800: the card shows both intervals."""
    correct = np.asarray(correct, dtype=float)
    if not len(correct) or not n_bootstrap:
        return None
    rng = np.random.default_rng(seed)
    rates = correct[rng.integers(0, len(correct), (n_bootstrap, len(correct)))].mean(axis=1)
    return [float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))]


def pairwise_accuracy(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], a: str, b: str, *, n_bootstrap: int = 1000
) -> dict:
    """Accuracy of telling class a from class b, comparing only those two probabilities, on
    the images whose true label is a or b (a within-source check of what the model learned)."""
    ia, ib = classes.index(a), classes.index(b)
    mask = (y_true == ia) | (y_true == ib)
    if not mask.any():
        return {"n": 0, "accuracy": float("nan")}
    predicted_a = probs[mask, ia] >= probs[mask, ib]
    correct = predicted_a == (y_true[mask] == ia)
    return {
        "n": int(mask.sum()),
        "accuracy": float(correct.mean()),
        "accuracy_ci95": proportion_ci95(correct, n_bootstrap=n_bootstrap),
    }


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The temperature minimising negative log-likelihood (golden-section search on log T)."""

    def nll(log_t: float) -> float:
        calibrated = apply_temperature(probs, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(calibrated[np.arange(len(y_true)), y_true], 1e-12, 1.0))))

    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(80):
        c = hi - ratio * (hi - lo)
        d = lo + ratio * (hi - lo)
        if nll(c) < nll(d):
            hi = d
        else:
            lo = c
    return float(np.exp((lo + hi) / 2))
