"""kipoi_dfim.distributions against the libraries it replaces: scipy.stats, scipy.optimize, statsmodels.

And the reason it exists: importing the scoring path loads none of scipy, statsmodels, pandas or h5py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import fmin
from scipy.stats import genpareto, norm
from statsmodels.stats.multitest import multipletests

from kipoi_dfim.distributions import bh_adjust, gpd_fit, gpd_logsf, nelder_mead, normal_sf
from kipoi_dfim.null import tail_pvalues


def _maxima_tail(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    """Exceedances of the k largest of m maxima of 30 |N(0, s)| values with a log-normal s (as tail_pvalues)."""
    srt = np.sort((np.abs(rng.normal(size=(m, 30))) * np.exp(0.5 * rng.normal(size=(m, 1)))).max(1))
    return srt[m - k:] - srt[m - k - 1]


def _samples() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [
        rng.exponential(2.5, 250),
        genpareto.rvs(0.3, scale=0.7, size=120, random_state=rng),
        genpareto.rvs(-0.2, scale=3.0, size=60, random_state=rng),
        _maxima_tail(rng, 1000, 250),
        _maxima_tail(rng, 200, 50),
        np.round(rng.exponential(1.0, 40), 1),  # ties, and exceedances of exactly 0 (outside the open support)
    ]


@pytest.mark.parametrize("i", range(6))
def test_gpd_fit_is_scipy_genpareto_fit(i):
    x = _samples()[i]
    c, _, scale = genpareto.fit(x, floc=0)
    # the same likelihood and the same Nelder-Mead steps: equal up to libm's last bits
    np.testing.assert_allclose(gpd_fit(x), (c, scale), rtol=1e-9, atol=1e-12)


def test_nelder_mead_is_scipy_fmin():
    def rosen(v):
        return float((1 - v[0]) ** 2 + 100 * (v[1] - v[0] ** 2) ** 2)

    for x0 in ([-1.2, 1.0], [0.0, 0.0], [3.0, -2.0]):  # 0: the 0.00025 start; all converge within the budget
        np.testing.assert_array_equal(nelder_mead(rosen, np.array(x0)), fmin(rosen, x0, disp=0))

    def slow(v):  # a budget-limited run: fmin stops at 400 calls (warnflag 1) before the tolerances are met
        return float(np.sum(np.abs(v - 1e5)) ** 0.5 + np.sin(v[0] * v[1]))

    np.testing.assert_array_equal(nelder_mead(slow, np.array([1.0, 2.0])), fmin(slow, [1.0, 2.0], disp=0))


@pytest.mark.parametrize("c", [0.0, 0.35, -0.25])
def test_gpd_logsf_is_scipy(c):
    x = np.r_[-1.0, 0.0, np.linspace(0.01, 30, 500), 1e6, np.nan]
    got, want = gpd_logsf(x, c, 1.7), genpareto.logsf(x, c, loc=0, scale=1.7)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))  # beyond the end point when c < 0
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-13, atol=1e-15)


def test_normal_sf_is_scipy_norm_sf_in_both_tails():
    z = np.r_[np.linspace(-40, 40, 2001), 0.3, -0.7, np.inf, -np.inf, np.nan]
    got, want = normal_sf(z), norm.sf(z)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-13, atol=0)
    assert normal_sf(37.5) > 0 and normal_sf(37.7) == 0 == norm.sf(37.7)  # where Cephes (scipy) underflows
    assert normal_sf(np.array([[1.0]])).shape == (1, 1)


def test_bh_adjust_is_statsmodels_fdr_bh():
    rng = np.random.default_rng(5)
    p = rng.uniform(size=3000) ** 4
    p[:300] = p[300:600]  # ties
    p[:5] = [0.0, 1.0, 1.0, 0.5, 0.0]
    np.testing.assert_array_equal(bh_adjust(p), multipletests(p, method="fdr_bh")[1])
    assert bh_adjust(np.array([])).shape == (0,)


def test_tail_pvalues_gpd_is_the_scipy_formula():
    """The plug-in GPD tail end to end (``predictive=False``): beyond the empirical switch, the scipy-fitted GPD
    tail (the default averages this sf over the fit's likelihood: tests/test_null.py)."""
    rng = np.random.default_rng(9)
    null = np.abs(rng.normal(size=(800, 30))).max(1)
    x = np.array([4.5, 5.0, 6.0, 8.0])
    M, k = len(null), 200  # k = clip(M // 4, 30, 250)
    srt = np.sort(null)
    u = srt[M - k - 1]
    c, _, scale = genpareto.fit(srt[M - k:] - u, floc=0)
    if c < 0:
        c, scale = 0.0, (srt[M - k:] - u).mean()
    emp = (1.0 + (srt[None] >= x[:, None]).sum(1)) / (1.0 + M)
    want = np.minimum(k / M * genpareto.sf(x - u, c, scale=scale), emp)
    np.testing.assert_allclose(tail_pvalues(x, null, predictive=False), want, rtol=1e-10)


def test_scoring_imports_no_statistics_or_table_stack():
    """score-variants' streaming path must stay light (benchmarks/README.md: peak RSS with the pooled null)."""
    code = ("import sys, kipoi_dfim.scoring, kipoi_dfim.cli\n"
            "print(' '.join(m for m in ('scipy', 'statsmodels', 'pandas', 'h5py', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_logsumexp_matches_scipy():
    """The predictive GPD tail p sums likelihood weights in log space; scipy.special is the oracle."""
    from scipy.special import logsumexp as scipy_lse

    from kipoi_dfim.distributions import logsumexp

    rng = np.random.default_rng(5)
    a = rng.normal(0, 300, size=(40, 7))  # large spread: naive exp overflows
    a[3] = -np.inf
    assert np.allclose(logsumexp(a, axis=0), scipy_lse(a, axis=0), rtol=1e-13, atol=0)
    assert np.allclose(logsumexp(a, axis=1), scipy_lse(a, axis=1), rtol=1e-13, atol=0)
    assert logsumexp(a[:, 0]) == pytest.approx(scipy_lse(a[:, 0]), rel=1e-13)
    assert logsumexp(np.full(3, -np.inf)) == -np.inf
