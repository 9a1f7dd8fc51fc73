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
from scipy.stats import genextreme, genpareto, gumbel_r, norm
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


# -- tail model for maxima (issue 13) -----------------------------------------------------------------------

TAIL_MODELS = ("gpd", "gev", "gumbel")
_TINY = np.finfo(np.float64).tiny  # the smallest p reported: never 0, always finite


def empirical_pvalues_upper(scores: np.ndarray, null: np.ndarray, **kw) -> np.ndarray:
    """Upper-tail empirical p-values ``(1 + b) / (1 + M)``, b = #null >= score, M = #finite null values.

    Why: for maxAbsFIS (a maximum of absolute values, large when significant) only the upper tail counts;
    this is :func:`empirical_pvalues` with ``two_sided=False`` under the name the statistics docs use.
    ``pool=`` / ``groups=`` as in the module docstring.
    """
    return empirical_pvalues(scores, null, two_sided=False, **kw)


def tail_pvalues(
    scores: np.ndarray,
    null: np.ndarray,
    model: str = "gpd",
    *,
    min_exceed: int = 10,
    n_tail: int | None = None,
    pool: str | int = "global",
    groups: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Upper-tail p-values of a maximum-type score: empirical where the null resolves them, a tail model beyond.

    Why: the empirical p ``(1 + b) / (1 + M)`` cannot go below ``1 / (1 + M)`` and, with few exceedances b, is
    noisy; a Gaussian fitted to a maximum (right-skewed) puts far too little mass in the tail (p = 1e-217 where
    the null says 0.01). So where ``b >= min_exceed`` the empirical p is returned as is; below, the p-value is
    extrapolated by a tail model fitted to the null (Knijnenburg et al. 2009, Bioinformatics 25:i161):

    * ``"gpd"`` (default, chosen by simulation, see docs/statistics.md): a generalized Pareto distribution
      fitted by maximum likelihood to the ``n_tail`` largest null values above the threshold u (the next
      one), ``p = (n_tail / M) * GPD.sf(x - u)``; the shape is constrained to ``>= 0`` (exponential or heavier
      tail: conservative, and a maximum of Gaussian-like values has an exponential-type tail, shape 0).
      ``n_tail`` default ``clip(M // 4, 30, 250)``.
    * ``"gev"`` / ``"gumbel"``: ``scipy.stats.genextreme`` / ``gumbel_r`` fitted to all null values; a GEV fit
      with a bounded upper tail (scipy ``c > 0``, which would give p = 0 beyond the endpoint) is refitted as
      Gumbel.

    Beyond the switch the p-value is ``min(tail p, empirical p)``: never larger than what the M null values
    already show (a tail fitted too heavy, e.g. to a mixture of shuffles that leave the model off and a few
    that switch it on, would otherwise give a score above every null value a larger p than 1/(1 + M)). Both
    are non-increasing in the score, so p is monotone across the switch too; it is floored at the smallest
    positive double (never 0, always finite). A null too small for a fit (fewer than 30 values, or a
    constant tail) keeps the empirical p.

    Parameters
    ----------
    scores, null : array_like
        Observed maxima and null maxima; ``pool`` / ``groups`` as in the module docstring.
    model : {"gpd", "gev", "gumbel"}
    min_exceed : int
        Number of null values >= score from which the empirical p is trusted.
    n_tail : int, optional
        Exceedances used by the GPD fit.

    Returns
    -------
    ndarray float64 of ``scores.shape``; NaN where the score is NaN or the null is empty.
    """
    if model not in TAIL_MODELS:
        raise InputError(f"tail model must be one of {', '.join(TAIL_MODELS)}, got {model!r}")
    if int(min_exceed) < 1:
        raise InputError(f"min_exceed must be >= 1, got {min_exceed}")

    def fn(s: np.ndarray, nv: np.ndarray) -> np.ndarray:
        return _tail_p(s, nv, model, int(min_exceed), n_tail)

    return _apply(scores, null, pool, groups, fn)


def _tail_p(s: np.ndarray, nv: np.ndarray, model: str, min_exceed: int, n_tail: int | None) -> np.ndarray:
    """Empirical p where >= min_exceed null values reach the score, else the capped tail-model p."""
    M = len(nv)
    if M == 0:
        return np.full(s.shape, np.nan)
    srt = np.sort(nv)
    b = M - np.searchsorted(srt, s, side="left")
    p = (1.0 + b) / (1.0 + M)
    far = np.isfinite(s) & (b < min_exceed)
    if far.any() and M >= 30 and srt[-1] > srt[0]:
        logp = _tail_logsf(s[far], srt, model, n_tail)
        if logp is not None:
            # never above the empirical p of the same score: that p is valid on its own, and a fitted tail
            # heavier than the null's own top values (a shape fitted to a mixture of "model off" and "model
            # on" shuffles) must not undo what the M null values already show
            p[far] = np.clip(np.exp(np.minimum(logp, np.log(p[far]))), _TINY, None)
    return np.where(np.isnan(s), np.nan, p)


def _tail_logsf(x: np.ndarray, srt: np.ndarray, model: str, n_tail: int | None) -> np.ndarray | None:
    """log P(X >= x) under the tail model fitted to the sorted null ``srt``; None if the fit is degenerate."""
    M = len(srt)
    if model == "gpd":
        k = int(np.clip(M // 4, 30, 250)) if n_tail is None else int(n_tail)
        k = min(max(k, 10), M - 1)
        u = srt[M - k - 1]
        exc = srt[M - k:] - u
        if not exc.max() > 0:
            return None
        c, _, scale = genpareto.fit(exc, floc=0)
        if c < 0:  # bounded tail: refit as exponential (shape 0), conservative beyond the largest null value
            c, scale = 0.0, float(exc.mean())
        return np.log(k / M) + genpareto.logsf(np.maximum(x - u, 0.0), c, loc=0, scale=scale)
    if model == "gev":
        params = genextreme.fit(srt)
        if params[0] <= 0:  # scipy's c <= 0: Gumbel or heavier tail
            out = genextreme.logsf(x, *params)
            return np.where(np.isfinite(out), out, np.log(_TINY))
    params = gumbel_r.fit(srt)  # gumbel, or a GEV with a bounded tail (c > 0) refitted as Gumbel (conservative)
    out = gumbel_r.logsf(x, *params)
    return np.where(np.isfinite(out), out, np.log(_TINY))
