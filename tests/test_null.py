"""Null statistics against scipy, statsmodels and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import kstest, norm
from statsmodels.stats.multitest import multipletests

from kipoi_dfim.errors import InputError
from kipoi_dfim.null import bh_qvalues, empirical_pvalues, gaussian_pvalues


def test_gaussian_by_hand():
    null = np.array([-1.0, 0.0, 1.0, 2.0, 3.0])  # mean 1, sd (ddof=1) sqrt(2.5)
    sd = math.sqrt(2.5)
    scores = np.array([1.0, 4.0, -3.0])
    z = (scores - 1.0) / sd
    np.testing.assert_allclose(gaussian_pvalues(scores, null), 2 * norm.sf(np.abs(z)), rtol=1e-12)
    np.testing.assert_allclose(gaussian_pvalues(scores, null, two_sided=False), norm.sf(z), rtol=1e-12)
    # by the erfc formula, independent of scipy's sf: p = erfc(|z| / sqrt 2)
    assert gaussian_pvalues(np.array([4.0]), null)[0] == pytest.approx(math.erfc(abs(3 / sd) / math.sqrt(2)))
    assert gaussian_pvalues(np.array([1.0]), null)[0] == pytest.approx(1.0)


def test_empirical_by_hand():
    null = np.array([-5.0, -1.0, 0.5, 2.0, 3.0, np.nan])  # NaN ignored: n_null = 5
    scores = np.array([2.0, -2.5, 10.0, 0.0])
    # two-sided: #|null| >= |s|: |2| -> {5, 2, 3} = 3; |-2.5| -> {5, 3} = 2; 10 -> 0; 0 -> 5
    np.testing.assert_allclose(empirical_pvalues(scores, null), [4 / 6, 3 / 6, 1 / 6, 6 / 6])
    # upper tail: #null >= s: 2 -> {2, 3} = 2; -2.5 -> 4; 10 -> 0; 0 -> 3
    np.testing.assert_allclose(empirical_pvalues(scores, null, two_sided=False), [3 / 6, 5 / 6, 1 / 6, 4 / 6])


def test_pooling_per_map_and_by_groups():
    rng = np.random.default_rng(0)
    null = rng.normal(size=(3, 40, 7)) * np.array([1.0, 5.0, 0.2])[:, None, None]
    scores = rng.normal(size=(3, 7))
    per_map = gaussian_pvalues(scores, null, pool=1)
    for m in range(3):
        np.testing.assert_allclose(per_map[m], gaussian_pvalues(scores[m], null[m]))
    emp = empirical_pvalues(scores, null, pool=1)
    for m in range(3):
        np.testing.assert_allclose(emp[m], empirical_pvalues(scores[m], null[m]))
    # the same per-map pooling expressed with labels
    g = (np.arange(3)[:, None], np.arange(3)[:, None, None])
    np.testing.assert_allclose(gaussian_pvalues(scores, null, groups=g), per_map)
    np.testing.assert_allclose(empirical_pvalues(scores, null, groups=g), emp)
    # global pooling differs from per-map pooling when the maps' nulls differ
    assert not np.allclose(gaussian_pvalues(scores, null), per_map)
    # per task across maps: labels along the last axis
    task_s, task_n = np.arange(7) % 2, np.arange(7) % 2
    pt = gaussian_pvalues(scores, null, groups=(task_s, task_n))
    np.testing.assert_allclose(pt[:, ::2], gaussian_pvalues(scores[:, ::2], null[..., ::2]))
    # a label without null gets NaN
    out = empirical_pvalues(np.array([1.0, 2.0]), np.array([0.0, 1.0]), groups=(np.array([0, 1]), np.array([0, 0])))
    assert out[0] == pytest.approx(2 / 3) and np.isnan(out[1])
    with pytest.raises(InputError):
        gaussian_pvalues(scores, null[:2], pool=1)


def test_nan_handling():
    null = np.array([0.0, 1.0, np.nan, -1.0, np.inf])
    s = np.array([np.nan, 1.0])
    for fn in (gaussian_pvalues, empirical_pvalues):
        p = fn(s, null)
        assert np.isnan(p[0]) and 0 < p[1] <= 1
    assert np.isnan(gaussian_pvalues(np.array([1.0]), np.array([2.0, 2.0]))).all()  # zero spread
    assert np.isnan(empirical_pvalues(np.array([1.0]), np.array([np.nan]))).all()  # empty null


def test_bh_against_statsmodels_and_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.20])
    # by hand: sorted 0.01, 0.03, 0.04, 0.20 -> p*m/rank = 0.04, 0.06, 0.0533, 0.20; cumulative min from the top
    np.testing.assert_allclose(bh_qvalues(p), [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.20])
    rng = np.random.default_rng(1)
    big = rng.uniform(size=(20, 15)) ** 3
    np.testing.assert_allclose(bh_qvalues(big).ravel(), multipletests(big.ravel(), method="fdr_bh")[1])


def test_bh_ignores_nan():
    p = np.array([0.01, np.nan, 0.04, 0.03, np.nan, 0.20])
    q = bh_qvalues(p)
    assert np.isnan(q[[1, 4]]).all()
    np.testing.assert_allclose(q[[0, 2, 3, 5]], bh_qvalues(np.array([0.01, 0.04, 0.03, 0.20])))
    assert np.isnan(bh_qvalues(np.array([np.nan, np.nan]))).all()
    with pytest.raises(InputError):
        bh_qvalues(np.array([0.5, 1.5]))


def test_scores_from_the_null_give_uniform_p():
    rng = np.random.default_rng(7)
    null = rng.normal(2.0, 3.0, size=5000)
    scores = rng.normal(2.0, 3.0, size=2000)
    assert kstest(gaussian_pvalues(scores, null), "uniform").pvalue > 1e-3
    assert kstest(gaussian_pvalues(scores, null, two_sided=False), "uniform").pvalue > 1e-3
    pe = empirical_pvalues(scores - 2.0, null - 2.0)  # centred at 0 for the two-sided |.| rule
    assert kstest(pe, "uniform").pvalue > 1e-3
    # and a shifted score distribution is detected
    assert np.median(gaussian_pvalues(scores + 6.0, null)) < 0.2
