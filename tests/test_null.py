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


# -- tail model (issue 13): appended ------------------------------------------------------------------------

from scipy.stats import genpareto, gumbel_r  # noqa: E402

from kipoi_dfim.null import empirical_pvalues_upper, tail_pvalues  # noqa: E402


@pytest.mark.parametrize("model", ["gpd", "gev", "gumbel"])
def test_tail_equals_empirical_where_resolved_and_is_monotone_finite_positive(model):
    rng = np.random.default_rng(3)
    null = np.abs(rng.normal(size=(2000, 30))).max(1)
    scores = np.r_[np.linspace(0, null.max() * 1.5, 400), [50.0, 1e3, 1e6]]
    p = tail_pvalues(scores, null, model=model)
    emp = empirical_pvalues_upper(scores, null)
    b = (null[None] >= scores[:, None]).sum(1)  # counted by hand
    np.testing.assert_allclose(emp, (1 + b) / 2001)
    np.testing.assert_array_equal(p[b >= 10], emp[b >= 10])
    assert np.isfinite(p).all() and (p > 0).all()
    assert (np.diff(p) <= 0).all()  # non-increasing in the score, across the switch too
    assert (p[b < 10] <= emp[b < 10] * (1 + 1e-12)).all()  # never above the empirical p


def test_gpd_tail_recovers_an_exponential_and_a_pareto_tail():
    """Closed forms: Exp(1) has P(X > x) = exp(-x); a GPD(xi=0.2) has (1 + 0.2 x)^(-5). The plug-in fit is
    within 3x; the predictive p (default) is conservative, by the shape's uncertainty: at most 30x (1.5
    orders) at p = 1e-6, and never below the plug-in."""
    rng = np.random.default_rng(4)
    null = rng.exponential(size=5000)
    x = np.array([10.0, 12.0, 14.0])  # true p 4.5e-5 .. 8.3e-7, all beyond 1 / (1 + M)
    plug = tail_pvalues(x, null, model="gpd", predictive=False) / np.exp(-x)
    pred = tail_pvalues(x, null, model="gpd") / np.exp(-x)
    assert (plug > 1 / 3).all() and (plug < 3).all()
    assert (pred >= plug).all() and (pred < [5, 10, 30]).all()
    null = genpareto.rvs(0.2, size=5000, random_state=5)
    x = np.array([40.0, 80.0])
    plug = tail_pvalues(x, null, model="gpd", predictive=False) / genpareto.sf(x, 0.2)
    pred = tail_pvalues(x, null, model="gpd") / genpareto.sf(x, 0.2)
    assert (plug > 1 / 3).all() and (plug < 3).all()
    assert (pred >= plug).all() and (pred < 10).all()


def test_gpd_predictive_p_equals_numerical_integration_over_the_posterior():
    """Oracle: the predictive tail p by scipy's adaptive 2-D quadrature (dblquad) of the textbook GPD
    likelihood of the exceedances times the survival function, over shape in (0, 3] and log scale within +-3
    of the exceedances' mean (flat prior), independent of the module's grid (documented within 3 % at k = 60)."""
    from scipy import integrate

    rng = np.random.default_rng(12)
    null = rng.exponential(size=1000) * 2.0 + rng.random(1000)
    k, M = 60, 1000
    srt = np.sort(null)
    u, exc = srt[M - k - 1], srt[M - k:] - srt[M - k - 1]
    x = u + 25.0  # beyond every null value: the tail p is reported (smaller than 1 / (1 + M))
    ls0 = np.log(exc.mean())

    def loglik(xi, s):  # density (1 / s) (1 + xi y / s)^(-1 - 1 / xi)
        return -k * np.log(s) - (1 + 1 / xi) * np.log1p(xi * exc / s).sum()

    def integrand(ls, xi, with_sf):
        s = np.exp(ls)
        sf = (1 + xi * (x - u) / s) ** (-1 / xi) if with_sf else 1.0
        return np.exp(loglik(xi, s) - loglik(0.1, exc.mean())) * sf

    num, den = (integrate.dblquad(integrand, 1e-9, 3, ls0 - 3, ls0 + 3, args=(w,), epsabs=0, epsrel=1e-6)[0]
                for w in (True, False))
    oracle = k / M * num / den  # 2.96e-4 (the plug-in GPD p: 2.7e-5)
    assert oracle < 1 / (1 + M)
    np.testing.assert_allclose(tail_pvalues(np.array([x]), null, n_tail=k)[0], oracle, rtol=0.03)


def test_gumbel_and_gev_recover_a_gumbel_null():
    rng = np.random.default_rng(6)
    null = gumbel_r.rvs(loc=1.0, scale=0.5, size=5000, random_state=rng)
    x = np.array([6.0, 8.0])  # true p 4.5e-5, 8.3e-7
    for model in ("gumbel", "gev"):
        ratio = tail_pvalues(x, null, model=model) / gumbel_r.sf(x, loc=1.0, scale=0.5)
        assert (ratio > 1 / 3).all() and (ratio < 3).all(), model


def test_gaussian_fit_to_a_maximum_is_far_too_small_where_the_tail_model_is_not():
    """The issue's finding: a normal fitted to maxima puts p orders of magnitude too low."""
    rng = np.random.default_rng(8)
    scale = np.exp(0.5 * rng.normal(size=(20000, 1)))
    sample = (np.abs(rng.normal(size=(20000, 30))) * scale).max(1)
    null, truth = sample[:2000], np.sort(sample[2000:])
    x = truth[-18]  # true p ~ 1e-3 by the 18,000 held-out draws
    assert gaussian_pvalues(np.array([x]), null, two_sided=False)[0] < 1e-5
    assert 1e-4 < tail_pvalues(np.array([x]), null)[0] < 1e-2


def test_tail_small_null_pooling_nan_and_errors():
    rng = np.random.default_rng(9)
    small = rng.normal(size=20)  # fewer than 30 values: no fit, the empirical p
    s = np.array([0.0, 5.0, np.nan])
    np.testing.assert_array_equal(tail_pvalues(s, small), empirical_pvalues_upper(s, small))
    null = np.abs(rng.normal(size=(3, 500))) * np.array([[1.0], [4.0], [0.3]])
    scores = np.array([[2.0, 9.0], [2.0, 9.0], [2.0, 9.0]])
    pooled = tail_pvalues(scores, null, pool=1)
    for g in range(3):
        np.testing.assert_array_equal(pooled[g], tail_pvalues(scores[g], null[g]))
    assert pooled[1, 0] > pooled[0, 0] > pooled[2, 0]  # wider null, larger p
    assert np.isnan(tail_pvalues(np.array([1.0]), np.array([]))).all()
    with pytest.raises(InputError, match="tail model"):
        tail_pvalues(s, small, model="normal")
    with pytest.raises(InputError, match="min_exceed"):
        tail_pvalues(s, small, min_exceed=0)
