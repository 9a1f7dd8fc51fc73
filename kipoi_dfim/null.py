"""Statistics of the shuffled null: Gaussian and empirical p-values, Benjamini-Hochberg q-values.

DFIM's significance (Greenside et al. 2018) compares a score (FIS, maxAbsFIS) with the same score computed
on dinucleotide-shuffled inputs. This module is numpy-only: it never sees a model.

Pooling: which null values form the null distribution of which score.

* ``pool="global"`` (default): every null value, one distribution for all scores.
* ``pool=k`` (int): the first ``k`` axes of ``scores`` and ``null`` are aligned and each index of them has its
  own null, pooled over all remaining axes. E.g. per map: ``scores`` (M, D), ``null`` (M, S, D), ``pool=1``;
  per map and task: ``scores`` (M, T, D), ``null`` (M, T, S, D), ``pool=2``.
* ``groups=(score_labels, null_labels)``: integer/string labels broadcastable to ``scores.shape`` and
  ``null.shape``; a score is compared with the null values carrying its label (e.g. per task across maps).
  A score whose label has no null value gets NaN.

NaN in ``scores`` gives NaN; NaN (and inf) in ``null`` is ignored.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests

from kipoi_dfim.errors import InputError

__all__ = ["gaussian_pvalues", "empirical_pvalues", "bh_qvalues"]


def gaussian_pvalues(
    scores: np.ndarray,
    null: np.ndarray,
    two_sided: bool = True,
    *,
    pool: str | int = "global",
    groups: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """P-values of ``scores`` under a normal distribution fitted to the null (mean, sd with ddof=1).

    Why a Gaussian: with a few shuffles per variant the empirical p-value cannot go below 1/(1+n_null); the
    paper fits a normal to the null FIS to rank strong interactions. ``two_sided``: ``2 * sf(|z|)``;
    otherwise the upper tail ``sf(z)`` (use it for non-negative statistics such as maxAbsFIS).
    A null with fewer than 2 finite values or zero spread gives NaN.

    Parameters
    ----------
    scores, null : array_like
        Observed scores and null scores; see the module docstring for ``pool`` and ``groups``.

    Returns
    -------
    ndarray float64 of ``scores.shape``.
    """

    def fit(s: np.ndarray, nv: np.ndarray) -> np.ndarray:
        if len(nv) < 2:
            return np.full(s.shape, np.nan)
        mu, sd = nv.mean(), nv.std(ddof=1)
        if not sd > 0:
            return np.full(s.shape, np.nan)
        z = (s - mu) / sd
        return 2.0 * norm.sf(np.abs(z)) if two_sided else norm.sf(z)

    return _apply(scores, null, pool, groups, fit)


def empirical_pvalues(
    scores: np.ndarray,
    null: np.ndarray,
    two_sided: bool = True,
    *,
    pool: str | int = "global",
    groups: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Empirical p-values ``(1 + #null at least as extreme) / (1 + n_null)``.

    The +1 (Davison & Hinkley; North et al. 2002) counts the observed score as one draw of the null, so a
    p-value is never 0 and is valid (P(p <= a) <= a) when the score comes from the null. ``two_sided``
    measures extremeness by absolute value, ``|null| >= |score|`` (FIS nulls are centred at 0); otherwise
    ``null >= score`` (upper tail). An empty null gives NaN.

    Returns
    -------
    ndarray float64 of ``scores.shape``.
    """

    def count(s: np.ndarray, nv: np.ndarray) -> np.ndarray:
        if len(nv) == 0:
            return np.full(s.shape, np.nan)
        if two_sided:
            s, nv = np.abs(s), np.abs(nv)
        srt = np.sort(nv)
        at_least = len(srt) - np.searchsorted(srt, s, side="left")
        p = (1.0 + at_least) / (1.0 + len(srt))
        return np.where(np.isnan(s), np.nan, p)

    return _apply(scores, null, pool, groups, count)


def bh_qvalues(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values over all finite entries of ``pvalues`` (any shape); NaN stays NaN.

    Uses ``statsmodels.stats.multitest.multipletests(method="fdr_bh")`` so the numbers match what reviewers
    compute themselves; NaN entries (untested variants) neither get a q-value nor count as tests.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        if (p[ok] < 0).any() or (p[ok] > 1).any():
            raise InputError("p-values must lie in [0, 1]")
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return q


# -- pooling ------------------------------------------------------------------------------------------------


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def _apply(scores, null, pool, groups, fn) -> np.ndarray:
    """Run ``fn(scores_subset (1-D), finite null values (1-D)) -> p`` for each pooled group."""
    s = np.asarray(scores, dtype=np.float64)
    nl = np.asarray(null, dtype=np.float64)
    out = np.full(s.shape, np.nan)
    if groups is not None:
        if pool != "global":
            raise InputError("give either pool= or groups=, not both")
        try:
            gs = np.broadcast_to(np.asarray(groups[0]), s.shape)
            gn = np.broadcast_to(np.asarray(groups[1]), nl.shape)
        except (ValueError, TypeError, IndexError) as e:
            raise InputError(
                f"groups must be (score_labels, null_labels) broadcastable to {s.shape} and {nl.shape}"
            ) from e
        for g in np.unique(gs):
            m = gs == g
            out[m] = fn(s[m], _finite(nl[gn == g]))
        return out
    if pool == "global":
        return fn(s.ravel(), _finite(nl)).reshape(s.shape) if s.size else out
    if isinstance(pool, int | np.integer) and not isinstance(pool, bool) and pool >= 0:
        k = int(pool)
        if s.ndim < k or nl.ndim < k or s.shape[:k] != nl.shape[:k]:
            raise InputError(f"pool={k}: the first {k} axes of scores {s.shape} and null {nl.shape} must match")
        G = int(np.prod(s.shape[:k]))
        s2 = s.reshape(G, -1)
        n2 = nl.reshape(G, -1)
        out2 = out.reshape(G, -1)
        for g in range(G):
            out2[g] = fn(s2[g], _finite(n2[g]))
        return out2.reshape(s.shape)
    raise InputError(f"pool must be 'global' or a number of leading axes, got {pool!r}")
