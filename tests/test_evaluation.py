"""mbc_lib.evaluation: the figures the templates report on the test split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mbc_lib.errors import MbcError
from mbc_lib.evaluation import (
    binary_figures,
    confusion,
    interval_table,
    patient_bootstrap,
    roc_auc,
    youden_threshold,
)


def test_binary_figures_are_what_the_confusion_matrix_implies():
    # issue 13: notebook 10 printed 0.833 for all three while its matrix gave 0.70 and 0.93
    figures = binary_figures(np.array([[13, 1], [3, 7]]))
    assert figures["sensitivity"] == pytest.approx(7 / 10)
    assert figures["specificity"] == pytest.approx(13 / 14)
    assert figures["accuracy"] == pytest.approx(20 / 24)
    assert math.isnan(binary_figures(np.array([[3, 1], [0, 0]]))["sensitivity"])


def test_confusion_rows_are_the_true_class():
    assert confusion([0, 0, 1, 1, 1], [0, 1, 1, 1, 0]).tolist() == [[1, 1], [1, 2]]


def test_youden_threshold_separates_what_can_be_separated():
    y = [0, 0, 0, 1, 1, 1]
    score = [0.1, 0.2, 0.55, 0.5, 0.8, 0.9]
    t = youden_threshold(y, score)
    assert t == 0.8 or t == 0.5
    positive = np.asarray(score) >= t
    j = positive[np.asarray(y) == 1].mean() - positive[np.asarray(y) == 0].mean()
    assert j == pytest.approx(2 / 3)
    assert youden_threshold([0, 1], [0.3, 0.7]) == 0.7
    with pytest.raises(MbcError, match="both classes"):
        youden_threshold([1, 1], [0.2, 0.9])


def test_auc_with_one_class_is_undefined_not_a_number_that_looks_real():
    assert roc_auc([0, 1, 1], [0.1, 0.4, 0.9]) == 1.0
    assert math.isnan(roc_auc([1, 1], [0.1, 0.9]))


def test_bootstrap_resamples_patients_with_all_their_rows():
    # two eyes per patient: every resample holds whole patients, so an even count of rows
    patients = np.repeat([f"p{i}" for i in range(10)], 2)
    sizes = []

    def rows_seen(rows: np.ndarray) -> float:
        sizes.append(len(rows))
        assert all((patients[rows] == p).sum() % 2 == 0 for p in set(patients[rows]))
        return float(len(rows))

    interval = patient_bootstrap(patients, rows_seen, resamples=50, seed=1)
    assert interval.value == 20 and interval.resamples == 50
    assert set(sizes) == {20}


def test_bootstrap_interval_is_seeded_covers_the_value_and_skips_undefined_resamples():
    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i}" for i in range(30)], 2)
    y = np.repeat(rng.integers(0, 2, 30), 2)
    score = np.clip(y * 0.4 + rng.normal(0.3, 0.2, 60), 0, 1)

    def auc(rows: np.ndarray) -> float:
        return roc_auc(y[rows], score[rows])

    first = patient_bootstrap(patients, auc, resamples=300, seed=3)
    again = patient_bootstrap(patients, auc, resamples=300, seed=3)
    assert first == again
    assert first.low < first.value < first.high <= 1.0
    # three patients: some resamples hold one class only; they do not count
    y3, score3 = np.array([0, 0, 1, 1, 1, 1]), np.array([0.1, 0.3, 0.6, 0.2, 0.8, 0.9])
    few = patient_bootstrap(patients[:6], lambda r: roc_auc(y3[r], score3[r]), resamples=200)
    assert 0 < few.resamples < 200
    table = interval_table({"AUC": first})
    assert list(table.columns) == ["value", "95% low", "95% high", "resamples"]
    assert table.loc["AUC", "value"] == round(first.value, 3)
