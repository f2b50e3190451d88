"""Two baselines every model card shows, so a reader sees what the network adds.

- source prior: predict the most common training label of the image's source dataset;
- thumbnail logistic regression: multinomial logistic regression on 16x16 greyscale thumbnails.
Both exploit the source/label confounding of the data, which is the point of showing them.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ml.preprocessing import Preprocessing, prepare
from training.data import Sample


def source_prior_probs(train: list[Sample], test: list[Sample], classes: list[str]) -> np.ndarray:
    overall = Counter(s.label for s in train).most_common(1)[0][0]
    by_source = {
        src: Counter(s.label for s in train if s.source == src).most_common(1)[0][0]
        for src in {s.source for s in train}
    }
    probs = np.zeros((len(test), len(classes)))
    for i, sample in enumerate(test):
        probs[i, classes.index(by_source.get(sample.source, overall))] = 1.0
    return probs


def _thumbnails(samples: list[Sample]) -> np.ndarray:
    spec = Preprocessing(width=16, height=16, scale="unit")
    return np.stack([prepare(s.path, spec)[:, :, 0].ravel() for s in samples])


def thumbnail_logreg_probs(
    train: list[Sample], test: list[Sample], classes: list[str], *, epochs: int = 300, l2: float = 1e-3
) -> np.ndarray:
    x_train, x_test = _thumbnails(train), _thumbnails(test)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y = np.array([classes.index(s.label) for s in train])
    onehot = np.eye(len(classes))[y]
    weights = np.zeros((x_train.shape[1], len(classes)))
    bias = np.zeros(len(classes))
    lr = 0.5
    for _ in range(epochs):
        logits = x_train @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = p - onehot
        weights -= lr * (x_train.T @ grad / len(y) + l2 * weights)
        bias -= lr * grad.mean(axis=0)
    logits = x_test @ weights + bias
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)
