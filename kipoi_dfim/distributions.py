"""The few distribution functions the null's p- and q-values need, in numpy and the standard library.

Why not scipy.stats / statsmodels: importing them costs ~90 MB of resident memory (scipy.stats 64 MB,
statsmodels' multitest 30 MB more; scipy.special alone 27 MB, scipy.optimize 40 MB), more than the whole
streaming pipeline of ``score-variants`` uses, for five short formulas. The results are the same as those
libraries' (tests/test_distributions.py checks each against them):

* :func:`normal_sf`: ``scipy.stats.norm.sf`` (= ``scipy.special.ndtr(-z)``, the same erf/erfc branches);
* :func:`bh_adjust`: ``statsmodels.stats.multitest.multipletests(p, method="fdr_bh")[1]``, the same operations;
* :func:`gpd_logsf`: ``scipy.stats.genpareto.logsf(x, c, loc=0, scale=scale)``;
* :func:`gpd_fit`: ``scipy.stats.genpareto.fit(x, floc=0)``: the same penalised negative log-likelihood,
  minimised by :func:`nelder_mead`, the same Nelder-Mead steps as ``scipy.optimize.fmin`` from the same start.

The only differences are in the last bits of ``log1p``/``erfc`` (libm's here, Cephes' in scipy), i.e. relative
1e-15 in a p-value. Callers own the statistics: :mod:`kipoi_dfim.null` (p-values, q-values, tail model).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["normal_sf", "bh_adjust", "gpd_logsf", "gpd_nll", "gpd_fit", "nelder_mead", "logsumexp"]

_SQRT1_2 = math.sqrt(0.5)
_MAXLOG = math.log(np.finfo(np.float64).max)  # Cephes' erfc is 0 where exp(-x^2) would be subnormal
_LOGXMAX = float(np.log(np.finfo(np.float64).max))  # scipy.stats' penalty per value outside the support


def _map(fn: Callable[[float], float], x: np.ndarray) -> np.ndarray:
    """``fn`` of every element of the 1-D float64 ``x`` (libm through ``math``: ~0.1 us an element)."""
    return np.fromiter(map(fn, x.tolist()), dtype=np.float64, count=len(x))


def normal_sf(z: np.ndarray | float) -> np.ndarray:
    """Upper tail ``P(Z > z)`` of the standard normal, float64, elementwise; NaN gives NaN.

    Computed as scipy computes it (``ndtr(-z)``, Cephes' branches): ``0.5 + 0.5 erf(x)`` for ``|x| < 1/sqrt 2``,
    else ``0.5 erfc(|x|)`` (or 1 minus it), ``x = -z / sqrt 2``, and 0 where Cephes' erfc underflows
    (``x^2 > log(max double)``, z > 37.7). Accurate to a few ulp in both tails.

    Parameters
    ----------
    z : array_like
        Standard scores.

    Returns
    -------
    ndarray float64 of ``z``'s shape.
    """
    a = np.asarray(z, dtype=np.float64)
    x = (-a * _SQRT1_2).ravel()
    ax = np.abs(x)
    y = np.empty_like(x)
    small = ax < _SQRT1_2
    y[small] = 0.5 + 0.5 * _map(math.erf, x[small])
    big = ~small
    with np.errstate(invalid="ignore"):  # NaN stays NaN
        yb = np.where(ax[big] * ax[big] > _MAXLOG, 0.0, 0.5 * _map(math.erfc, ax[big]))
        y[big] = np.where(x[big] > 0, 1.0 - yb, yb)
    return y.reshape(a.shape)


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) of a 1-D array of p-values in [0, 1], none NaN.

    ``q_(i) = min_{j >= i} p_(j) m / j`` over the sorted p-values, capped at 1, returned in input order.

    Parameters
    ----------
    p : array_like, shape (m,)

    Returns
    -------
    ndarray float64, shape (m,).
    """
    p = np.asarray(p, dtype=np.float64)
    n = len(p)
    order = np.argsort(p)  # ties get equal q whatever their order
    q = p[order]
    # in place, 24 bytes a p-value at most beside the input (a genome's worth of rows is millions)
    ecdf = np.arange(1, n + 1, dtype=np.float64)
    ecdf /= float(n)
    q /= ecdf
    del ecdf
    np.minimum.accumulate(q[::-1], out=q[::-1])
    np.minimum(q, 1.0, out=q)
    out = np.empty_like(q)
    out[order] = q
    return out


def logsumexp(a: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """``log(sum(exp(a)))`` along ``axis`` without overflow (``scipy.special.logsumexp``'s result).

    Shifted by the maximum along the axis; an all ``-inf`` slice gives ``-inf``.
    """
    a = np.asarray(a, dtype=np.float64)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return out.item() if axis is None else np.squeeze(out, axis=axis)


def gpd_logsf(x: np.ndarray, c: float, scale: float) -> np.ndarray:
    """log P(X > x) of the generalized Pareto distribution with shape ``c``, location 0 and ``scale``.

    ``-log1p(c x / scale) / c`` (``-x / scale`` for ``c = 0``), ``-inf`` beyond a bounded tail's end point
    (``c < 0``), 0 below 0. Parameters as scipy's ``genpareto(c, loc=0, scale=scale)``.
    """
    y = np.asarray(x, dtype=np.float64) / scale
    with np.errstate(divide="ignore", invalid="ignore"):
        out = -y if c == 0 else -np.log1p(c * y) / c
    out = np.where(y <= 0, 0.0, out)
    if c < 0:
        out = np.where(y >= -1.0 / c, -np.inf, out)
    return np.where(np.isnan(y), np.nan, out)


def gpd_nll(theta: np.ndarray, x: np.ndarray) -> float:
    """scipy.stats' penalised negative log-likelihood of the GPD ``(c, scale) = theta``, location 0.

    Values outside the open support ``(0, end)`` are dropped and cost ``100 log(max double)`` each, so the
    minimiser is steered back into the support instead of meeting ``inf``.
    """
    c, scale = theta[0], theta[1]
    if not np.isfinite(c) or scale <= 0:
        return math.inf
    y = x / scale
    end = -1.0 / c if c < 0 else np.inf
    inside = (0 < y) & (y < end)
    n_bad = int(y.size - np.count_nonzero(inside))
    if n_bad:
        y = y[inside]
    if c != 0:
        cp1 = c + 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            logpdf = -(cp1 * np.log1p(c * y) if cp1 != 0 else np.zeros_like(y)) / c
    else:
        logpdf = -y
    finite = np.isfinite(logpdf)
    n_bad += int(finite.size - np.count_nonzero(finite))
    return float(-np.sum(logpdf[finite]) + n_bad * _LOGXMAX * 100 + len(x) * np.log(scale))


def gpd_fit(x: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood ``(shape c, scale)`` of a GPD with location 0, as ``scipy.stats.genpareto.fit(x, floc=0)``.

    scipy's starting point for this fit is ``c = 1, scale = 1`` (its moment estimates are infinite at c = 1
    and fall back to 1), minimised by Nelder-Mead with ``xtol = ftol = 1e-4``.

    Parameters
    ----------
    x : array_like, shape (n,)
        Exceedances over the threshold (>= 0), all finite.

    Returns
    -------
    (c, scale) : tuple of float
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    c, scale = nelder_mead(lambda th: gpd_nll(th, x), np.array([1.0, 1.0]))
    return float(c), float(scale)


class _CallLimit(Exception):
    """The function-call budget of :func:`nelder_mead` is spent (ends the step where it happens)."""


def nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, xatol: float = 1e-4,
                fatol: float = 1e-4) -> np.ndarray:
    """Minimise ``f`` by the Nelder-Mead simplex method, step for step as ``scipy.optimize.fmin``'s defaults.

    Initial simplex: ``x0`` and ``x0`` with one coordinate scaled by 1.05 (0.00025 where it is 0); reflection 1,
    expansion 2, contraction 0.5, shrink 0.5; at most ``200 n`` iterations and function calls (a step cut short
    by the last call keeps what it had done); stops when every vertex is within ``xatol`` of the best in every
    coordinate and within ``fatol`` in value.

    Returns
    -------
    ndarray: the best vertex.
    """
    x0 = np.asarray(x0, dtype=np.float64).ravel()
    n = len(x0)
    sim = np.repeat(x0[None], n + 1, axis=0)
    for k in range(n):
        sim[k + 1, k] = 1.05 * x0[k] if x0[k] != 0 else 0.00025
    max_calls = max_iter = 200 * n
    calls = [0]

    def fc(x: np.ndarray) -> float:
        if calls[0] >= max_calls:
            raise _CallLimit
        calls[0] += 1
        return float(f(x.copy()))

    fsim = np.array([fc(s) for s in sim])
    order = np.argsort(fsim)
    sim, fsim = sim[order], fsim[order]
    iterations = 1
    while calls[0] < max_calls and iterations < max_iter:
        if np.max(np.abs(sim[1:] - sim[0])) <= xatol and np.max(np.abs(fsim[0] - fsim[1:])) <= fatol:
            break
        try:
            _nm_step(fc, sim, fsim)
            iterations += 1
        except _CallLimit:
            pass
        order = np.argsort(fsim)
        sim, fsim = sim[order], fsim[order]
    return sim[0]


def _nm_step(fc: Callable[[np.ndarray], float], sim: np.ndarray, fsim: np.ndarray) -> None:
    """One Nelder-Mead iteration on the sorted simplex, in place (reflect, expand, contract or shrink)."""
    n = sim.shape[1]
    xbar = np.add.reduce(sim[:-1], 0) / n
    xr = 2 * xbar - sim[-1]
    fxr = fc(xr)
    if fxr < fsim[0]:
        xe = 3 * xbar - 2 * sim[-1]
        fxe = fc(xe)
        sim[-1], fsim[-1] = (xe, fxe) if fxe < fxr else (xr, fxr)
    elif fxr < fsim[-2]:
        sim[-1], fsim[-1] = xr, fxr
    else:
        if fxr < fsim[-1]:  # outside contraction
            xc = 1.5 * xbar - 0.5 * sim[-1]
            fxc = fc(xc)
            accept = fxc <= fxr
        else:  # inside contraction
            xc = 0.5 * xbar + 0.5 * sim[-1]
            fxc = fc(xc)
            accept = fxc < fsim[-1]
        if accept:
            sim[-1], fsim[-1] = xc, fxc
        else:  # shrink towards the best vertex
            for j in range(1, n + 1):
                sim[j] = sim[0] + 0.5 * (sim[j] - sim[0])
                fsim[j] = fc(sim[j])
