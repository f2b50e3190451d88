"""Pure statistics for local validation and drift: no Django, no database, no TensorFlow.

Kept apart from the app so they can be tested with hand-computed numbers and reused by the
validation page, the drift check and a notebook alike. `wilson` is the same interval as
training.crossval.wilson; it lives here too because importing the training package pulls in
Keras, which the web process must never load (tests/test_import_boundary.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from scipy.stats import binom

Z95 = 1.959963984540054
OTHER = "other"  # a signed finding that is none of the model's classes (reviews.Report.OTHER)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score 95 % interval of a proportion (sound at small n and at 0 % or 100 %)."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Rate:
    """k of n, with its Wilson 95 % interval; value and interval are None when n is 0."""

    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def ci95(self) -> tuple[float, float] | None:
        return wilson(self.k, self.n)


# Confusion matrix and per-class rates ---------------------------------------------------------


def confusion_matrix(pairs: Iterable[tuple[str, str]], classes: Sequence[str]) -> tuple[list[str], list[list[int]]]:
    """Rows: the reference (signed) label, columns: the model's label, both in `classes` order.

    Every class is a row and a column even with no case (a zero row says "none signed", which
    matters as much as a low count). A signed label outside the classes ("other", or a class of
    another model) gets one row at the end, after the classes, "other" last. Returns (row
    labels, counts)."""
    counts = Counter(pairs)
    extra = sorted({ref for ref, _ in counts if ref not in classes}, key=lambda label: (label == OTHER, label))
    rows = list(classes) + extra
    return rows, [[counts.get((ref, pred), 0) for pred in classes] for ref in rows]


@dataclass(frozen=True)
class ClassRates:
    """One class, one-versus-rest: sensitivity among cases signed as it, specificity among the rest."""

    label: str
    tp: int
    fn: int
    fp: int
    tn: int

    @property
    def signed(self) -> int:
        return self.tp + self.fn

    @property
    def sensitivity(self) -> Rate:
        return Rate(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> Rate:
        return Rate(self.tn, self.tn + self.fp)


def class_rates(pairs: Sequence[tuple[str, str]], classes: Sequence[str]) -> list[ClassRates]:
    """Per class of the model. A case signed as "other" is a negative for every class."""
    result = []
    for label in classes:
        tp = sum(1 for ref, pred in pairs if ref == label and pred == label)
        fn = sum(1 for ref, pred in pairs if ref == label and pred != label)
        fp = sum(1 for ref, pred in pairs if ref != label and pred == label)
        tn = len(pairs) - tp - fn - fp
        result.append(ClassRates(label=label, tp=tp, fn=fn, fp=fp, tn=tn))
    return result


# Calibration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    n: int
    mean_confidence: float | None
    accuracy: float | None


def calibration_bins(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> list[CalibrationBin]:
    """Equal-width bins of the top-class probability; the last bin includes 1.0."""
    if len(confidences) != len(correct):
        raise ValueError("confidences and correct differ in length")
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    members: list[list[int]] = [[] for _ in range(n_bins)]
    for i, confidence in enumerate(confidences):
        if not 0.0 <= confidence <= 1.0 or math.isnan(confidence):
            raise ValueError(f"confidence {confidence!r} is not a probability")
        members[min(int(confidence * n_bins), n_bins - 1)].append(i)
    bins = []
    for b, idx in enumerate(members):
        n = len(idx)
        bins.append(
            CalibrationBin(
                lower=b / n_bins,
                upper=(b + 1) / n_bins,
                n=n,
                mean_confidence=sum(confidences[i] for i in idx) / n if n else None,
                accuracy=sum(1 for i in idx if correct[i]) / n if n else None,
            )
        )
    return bins


def expected_calibration_error(bins: Sequence[CalibrationBin]) -> float | None:
    """Sum over bins of |accuracy - confidence| weighted by the bin's share of cases."""
    total = sum(b.n for b in bins)
    if not total:
        return None
    return sum(b.n / total * abs(b.accuracy - b.mean_confidence) for b in bins if b.n)


def refusal_rate(refused: int, judged: int) -> Rate:
    """Images the input gate refused among those it judged (failed jobs reached no verdict)."""
    if refused < 0 or judged < refused:
        raise ValueError("refused must be between 0 and judged")
    return Rate(refused, judged)


# Drift bands ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low - 1e-12 <= value <= self.high + 1e-12


def binomial_band(p: float, n: int, alpha: float) -> Band:
    """The proportions k/n a week of n images shows with probability >= 1 - alpha when the true
    rate is p (exact binomial quantiles, alpha split over both tails). No normal approximation:
    weekly counts are small and rare classes sit near 0 %."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = min(max(p, 0.0), 1.0)
    low = binom.ppf(alpha / 2, n, p)
    high = binom.isf(alpha / 2, n, p)
    low = 0.0 if math.isnan(low) else float(low)
    high = float(n) if math.isnan(high) else float(high)
    return Band(low=max(low, 0.0) / n, high=min(high, n) / n)


def mean_band(centre: float, tolerance: float, spread: float, n: int, z: float) -> Band:
    """Centre +- (tolerance + z * spread / sqrt(n)), clipped to [0, 1]."""
    half = tolerance + z * spread / math.sqrt(n)
    return Band(low=max(0.0, centre - half), high=min(1.0, centre + half))


def z_for(alpha: float) -> float:
    """Two-sided normal quantile: 3.29 for alpha 0.001."""
    from scipy.stats import norm

    return float(norm.isf(alpha / 2))


@dataclass(frozen=True)
class DriftReference:
    """What a week is compared with: figures of the model's held-out test split in model.json.

    None where model.json does not hold the figure: that statistic is shown but not banded.
    """

    classes: tuple[str, ...]
    predicted_shares: dict[str, float] | None  # share of test images predicted as each class
    accuracy: float | None  # test accuracy: expected agreement with signed labels
    ece: float | None  # test expected calibration error after temperature scaling
    refusal_rate: float | None  # the input gate's refusal rate on the test split
    ood_tail_rate: float | None  # share beyond the feature-distance threshold by construction

    @classmethod
    def from_model_json(cls, meta: Mapping) -> DriftReference:
        classes = tuple(meta.get("classes") or ())
        test = (meta.get("metrics") or {}).get("test") or {}
        matrix = test.get("confusion_matrix")
        shares = None
        if matrix and len(matrix) == len(classes) and all(len(row) == len(classes) for row in matrix):
            total = sum(sum(row) for row in matrix)
            if total:
                shares = {label: sum(row[c] for row in matrix) / total for c, label in enumerate(classes)}
        calibration = meta.get("calibration") or {}
        gate = meta.get("gate") or {}
        refusal = (gate.get("test") or {}).get("rate", gate.get("val_rejection_rate"))
        percentile = gate.get("percentile")
        return cls(
            classes=classes,
            predicted_shares=shares,
            accuracy=test.get("accuracy"),
            ece=calibration.get("test_ece_after", calibration.get("val_ece_after")),
            refusal_rate=refusal,
            ood_tail_rate=(1 - percentile / 100) if percentile is not None else None,
        )


@dataclass
class WeekStats:
    """One model version in one department in one ISO week (see modelops.selectors.week_stats)."""

    judged: int = 0  # images the gate classified or refused
    refused: int = 0
    predicted: dict[str, int] = field(default_factory=dict)  # top label -> images
    top_probabilities: list[float] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)  # feature distance / threshold, per image
    signed: int = 0  # signed cases with a result of this model
    agreed: int = 0

    @property
    def classified(self) -> int:
        return sum(self.predicted.values())

    @property
    def mean_top_probability(self) -> float | None:
        return sum(self.top_probabilities) / len(self.top_probabilities) if self.top_probabilities else None

    def distance_quantile(self, q: float) -> float | None:
        if not self.distances:
            return None
        ordered = sorted(self.distances)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)]

    @property
    def beyond_threshold(self) -> int:
        return sum(1 for d in self.distances if d > 1.0)


@dataclass(frozen=True)
class Check:
    statistic: str  # "predicted:normal", "mean_top_probability", "refusal_rate", "ood_tail", "agreement"
    observed: float
    n: int
    band: Band | None  # None: no reference, or n under the minimum: shown, not judged

    @property
    def out_of_band(self) -> bool:
        return self.band is not None and not self.band.contains(self.observed)


def evaluate_week(ref: DriftReference, week: WeekStats, *, alpha: float, min_n: int) -> list[Check]:
    """Every statistic of the week beside its band. A statistic is judged only with at least
    `min_n` observations, and each at level alpha: with ~8 statistics a week, alpha 0.001 keeps
    the false alarms of an unchanged model near one a year per model and department."""
    checks: list[Check] = []
    z = z_for(alpha)

    def judged(n: int) -> bool:
        return n >= max(min_n, 1)

    n = week.classified
    for label in ref.classes:
        observed = week.predicted.get(label, 0) / n if n else 0.0
        band = None
        if ref.predicted_shares is not None and judged(n):
            band = binomial_band(ref.predicted_shares.get(label, 0.0), n, alpha)
        checks.append(Check(f"predicted:{label}", observed, n, band))

    mean = week.mean_top_probability
    if mean is not None:
        band = None
        if ref.accuracy is not None and judged(n):
            # Calibrated: mean top probability ~ accuracy, off by at most the ECE; a top
            # probability lies in [1/K, 1], so its standard deviation is at most (1 - 1/K) / 2.
            spread = (1 - 1 / max(len(ref.classes), 1)) / 2
            band = mean_band(ref.accuracy, ref.ece or 0.0, spread, n, z)
        checks.append(Check("mean_top_probability", mean, n, band))

    if week.judged:
        band = None
        if ref.refusal_rate is not None and judged(week.judged):
            band = binomial_band(ref.refusal_rate, week.judged, alpha)
        checks.append(Check("refusal_rate", week.refused / week.judged, week.judged, band))

    measured = len(week.distances)
    if measured:
        band = None
        if ref.ood_tail_rate is not None and judged(measured):
            band = binomial_band(ref.ood_tail_rate, measured, alpha)
        checks.append(Check("ood_tail", week.beyond_threshold / measured, measured, band))

    if week.signed:
        band = None
        if ref.accuracy is not None and judged(week.signed):
            # Only a drop is an alarm: agreeing more often than on the test split is no fault.
            band = Band(low=binomial_band(ref.accuracy, week.signed, alpha).low, high=1.0)
        checks.append(Check("agreement", week.agreed / week.signed, week.signed, band))
    return checks
