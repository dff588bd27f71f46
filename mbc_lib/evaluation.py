"""Figures a paper reports, computed the same way in every template: the operating threshold
chosen on the validation split, binary figures from a confusion matrix, and 95 % intervals
from a bootstrap over patients (a patient's two eyes, or a CT's slices, are resampled
together: they are not independent observations)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_roc_auc

from .errors import MbcError


@dataclass(frozen=True)
class Interval:
    """A figure with its bootstrap interval (``low``/``high`` are NaN when undefined)."""

    value: float
    low: float
    high: float
    resamples: int

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def roc_auc(y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (MONAI's); NaN when ``y_true`` holds one class only."""
    y = np.asarray(y_true)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(compute_roc_auc(torch.as_tensor(np.asarray(score)), torch.as_tensor(y)))


def youden_threshold(
    y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray
) -> float:
    """The score threshold that maximises sensitivity + specificity - 1 (Youden's J).

    Predicted positive means ``score >= threshold``; ties go to the higher threshold.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=float)
    if y.all() or not y.any():
        raise MbcError("a threshold needs both classes in the split it is chosen on")
    best, best_j = 0.5, -np.inf
    for t in np.unique(s)[::-1]:
        positive = s >= t
        j = positive[y].mean() + (~positive[~y]).mean() - 1
        if j > best_j:
            best, best_j = float(t), j
    return best


def confusion(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> np.ndarray:
    """The 2x2 confusion matrix: rows the true class, columns the predicted one."""
    matrix = np.zeros((2, 2), dtype=int)
    np.add.at(matrix, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return matrix


def binary_figures(matrix: np.ndarray) -> dict[str, float]:
    """Sensitivity, specificity and accuracy that a 2x2 confusion matrix implies (class 1 is
    the positive class; a figure with no cases to count is NaN)."""
    (tn, fp), (fn, tp) = np.asarray(matrix)

    def ratio(a: int, b: int) -> float:
        return float(a / b) if b else float("nan")

    return {
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "accuracy": ratio(tp + tn, tn + fp + fn + tp),
    }


def patient_bootstrap(
    patients: Sequence[str] | np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """``statistic(rows)`` on all rows, with a percentile interval from resampling patients.

    ``rows`` is an index array into the evaluated items. Each resample draws as many patients
    as there are, with replacement, and takes all rows of each drawn patient. Resamples on
    which the statistic is undefined (NaN, e.g. an AUC with one class) are left out, and
    ``Interval.resamples`` says how many counted.
    """
    patients = np.asarray(patients)
    if len(patients) == 0:
        raise MbcError("nothing to evaluate: the split is empty")
    names, inverse = np.unique(patients, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == i) for i in range(len(names))]
    value = float(statistic(np.arange(len(patients))))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        picked = rng.integers(0, len(names), len(names))
        figure = float(statistic(np.concatenate([rows_of[i] for i in picked])))
        if not np.isnan(figure):
            draws.append(figure)
    if not draws:
        return Interval(value, float("nan"), float("nan"), 0)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(value, float(low), float(high), len(draws))


def interval_table(figures: dict[str, Interval], confidence: float = 0.95) -> pd.DataFrame:
    """The figures as a table: value, interval bounds and the resamples that counted."""
    pct = f"{confidence:.0%}"
    return pd.DataFrame(
        {
            "value": [f.value for f in figures.values()],
            f"{pct} low": [f.low for f in figures.values()],
            f"{pct} high": [f.high for f in figures.values()],
            "resamples": [f.resamples for f in figures.values()],
        },
        index=pd.Index(list(figures), name="figure"),
    ).round(3)


def intervals_json(figures: dict[str, Interval]) -> dict[str, dict[str, float]]:
    """The figures for metrics.json."""
    return {
        name: {"value": f.value, "low": f.low, "high": f.high, "resamples": f.resamples}
        for name, f in figures.items()
    }
