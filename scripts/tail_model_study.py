"""Which tail model extrapolates maxAbsFIS p-values below 1/M? A simulation (issue 13, point 2).

Null values are maxima over D = 30 target bases of |Gaussian-like| FIS values, as in DFIM's maxAbsFIS:

* ``iid``: max of 30 iid |N(0, 1)|; exact survival function 1 - (1 - 2 Phi(-x))^30.
* ``mixture``: the same with a per-variant scale sigma ~ LogNormal(0, 0.5) (a file-wide pooled null mixes
  variants whose FIS have different spreads); exact survival function by quadrature over sigma.
* ``ar1``: AR(1)-correlated Gaussians (rho = 0.8, neighbouring bases share importance) with the scale
  mixture; the truth is a 4-million-draw Monte Carlo (resolves p >= 1e-5).
* ``fis``: real null maxAbsFIS of the project's sim_torch model (DeepLIFT, 10 shuffled references) on
  dinucleotide-shuffled backgrounds of the 36 scored sim variants (``--fis-null``, written by
  ``scripts/power_study.py --save-null``); the truth is the empirical p of the values not used for the fit.

For each true p (1e-2 ... 1e-6) the score x_p = the true quantile is scored against R independent nulls of
size M with every model, and the error log10(p_hat / p_true) is summarised (median, 5-95 % range, share of
replicates anti-conservative by more than 3x). Usage::

    python scripts/tail_model_study.py [--reps 100] [--sizes 720 2000] [--fis-null /tmp/stats/fis_null.npy]
        [--kinds iid mixture ar1 fis] [--methods empirical gaussian gumbel gev gpd_plugin gpd]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import integrate, optimize
from scipy.stats import norm
from tqdm import tqdm

from kipoi_dfim.null import empirical_pvalues_upper, gaussian_pvalues, tail_pvalues

D = 30
SIG = 0.5
P_TRUE = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
METHODS = ("empirical", "gaussian", "gumbel", "gev", "gpd_plugin", "gpd")


def sf_iid(x: float, s: float = 1.0) -> float:
    """P(max of D iid |N(0, s^2)| >= x), computed as -expm1(D * log1p(-2 Phi(-x/s))) for accuracy."""
    return float(-np.expm1(D * np.log1p(-2 * norm.sf(x / s))))


def sf_mixture(x: float) -> float:
    """Exact sf of the scale mixture: integrate sf_iid over sigma ~ LogNormal(0, SIG) in log-sigma."""
    f = lambda z: sf_iid(x, float(np.exp(SIG * z))) * norm.pdf(z)  # noqa: E731
    return integrate.quad(f, -8, 8, limit=200, epsabs=1e-300, epsrel=1e-8)[0]


def draw(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n null maxima of the given kind."""
    z = rng.standard_normal((n, D))
    if kind == "ar1":
        rho = 0.8
        for j in range(1, D):
            z[:, j] = rho * z[:, j - 1] + np.sqrt(1 - rho**2) * z[:, j]
    if kind in ("mixture", "ar1"):
        z *= np.exp(SIG * rng.standard_normal((n, 1)))
    return np.abs(z).max(1)


def quantiles(kind: str, rng: np.random.Generator, fis: np.ndarray | None):
    """True upper quantiles x_p for each p (those the truth resolves) and a sampler of nulls of size M."""
    if kind in ("iid", "mixture"):
        sf = sf_iid if kind == "iid" else sf_mixture
        xs = {p: optimize.brentq(lambda x, p=p: np.log(sf(x)) - np.log(p), 0.1, 40, xtol=1e-10) for p in P_TRUE}
        return xs, lambda M: draw(kind, M, rng)
    if kind == "ar1":
        big = np.sort(np.concatenate([draw(kind, 500_000, rng) for _ in range(8)]))
        xs = {p: big[int(len(big) * (1 - p))] for p in P_TRUE if p * len(big) >= 40}
        return xs, lambda M: draw(kind, M, rng)
    # real FIS null: half for fitting (sub-sampled), half as the truth
    perm = rng.permutation(fis)
    fit_pool, truth = perm[: len(perm) // 2], np.sort(perm[len(perm) // 2:])
    xs = {p: truth[int(len(truth) * (1 - p))] for p in P_TRUE + (3e-3, 3e-4) if p * len(truth) >= 15}
    return xs, lambda M: rng.choice(fit_pool, size=min(M, len(fit_pool)), replace=False)


def phat(method: str, x: np.ndarray, null: np.ndarray) -> np.ndarray:
    if method == "empirical":
        return empirical_pvalues_upper(x, null)
    if method == "gaussian":
        return gaussian_pvalues(x, null, two_sided=False)
    if method == "gpd_plugin":  # the GPD at its fitted parameters (the rule before the predictive p)
        return tail_pvalues(x, null, model="gpd", predictive=False)
    return tail_pvalues(x, null, model=method)


def study(kind: str, M: int, reps: int, seed: int, fis: np.ndarray | None,
          methods: tuple[str, ...] = METHODS) -> list[dict]:
    rng = np.random.default_rng(seed)
    xs, sampler = quantiles(kind, rng, fis)
    ps = np.array(list(xs))
    x = np.array([xs[p] for p in ps])
    err = {m: [] for m in methods}
    for _ in tqdm(range(reps), desc=f"{kind} M={M}", leave=False):
        null = sampler(M)
        for m in methods:
            err[m].append(np.log10(np.maximum(phat(m, x, null), 1e-320)) - np.log10(ps))
    rows = []
    for m in methods:
        e = np.array(err[m])  # (reps, n_p)
        for j, p in enumerate(ps):
            rows.append({"null": kind, "M": len(sampler(M)) if kind == "fis" else M, "p_true": p, "method": m,
                         "median": np.median(e[:, j]), "q05": np.quantile(e[:, j], 0.05),
                         "q95": np.quantile(e[:, j], 0.95), "anti3x": float((e[:, j] < -np.log10(3)).mean())})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--sizes", type=int, nargs="+", default=[720, 2000])
    ap.add_argument("--kinds", nargs="+", default=["iid", "mixture", "ar1", "fis"])
    ap.add_argument("--fis-null", default="/tmp/stats/fis_null.npy")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    a = ap.parse_args(argv)
    import os

    import pandas as pd

    fis = np.load(a.fis_null) if os.path.exists(a.fis_null) else None
    rows = []
    for kind in a.kinds:
        if kind == "fis" and fis is None:
            print(f"skipping the real FIS null: {a.fis_null} not found (run scripts/power_study.py --save-null)")
            continue
        for M in a.sizes:
            rows += study(kind, M, a.reps, a.seed, fis, tuple(a.methods))
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    for (kind, M), g in df.groupby(["null", "M"], sort=False):
        print(f"\n## null={kind} M={M}: log10(p_hat/p_true) median [5%, 95%]; share anti-conservative > 3x")
        t = g.assign(cell=g.apply(lambda r: f"{r['median']:+.2f} [{r.q05:+.2f},{r.q95:+.2f}] {r.anti3x:.0%}",
                                  axis=1))
        print(t.pivot(index="method", columns="p_true", values="cell").loc[a.methods].to_string())


if __name__ == "__main__":
    main()
