"""Null-vs-null calibration of the maxAbsFIS p-values over many replicate files (issue 13, point 3).

The generator of tests/test_calibration.py (maxima over 30 targets of |AR(1) Gaussians| with a per-variant
scale), run with more files than the test affords: for each null design (``per-variant``: K = 10 shuffles of
each of the file's variants; ``pooled``: M = 2,000 draws from variants not in the file) and p-value, the KS
uniformity p of one file of 1,000 null variants (K = 20), then over ``--files`` replicate files of 200 variants
(10 % with a true effect) the FDR of Benjamini-Hochberg at 5 % (mean false discovery proportion +- its
standard error), the share of true effects found, and over as many complete-null files the probability of
any discovery. p-values: ``empirical`` (1 + b) / (1 + M), ``gpd`` (the default tail p: the predictive GPD
tail), ``gpd_plugin`` (the GPD at its fitted parameters, the rule before), ``gev``. Usage::

    python scripts/calibration_study.py [--files 2000] [--seed 13] [--kinds empirical gpd gpd_plugin]

``--power NPZ ...`` instead re-evaluates saved ``scripts/power_study.py`` runs (``<config>.npz``; give the same
``--n-int/--n-bg/--n-dis`` and power seed) with each p-value rule, the null thinned to ``--null-k`` shuffles
per variant: the share of interacting variants at BH q < 0.05 in the file and alone among the negatives.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from scipy.stats import kstest

from kipoi_dfim.null import bh_qvalues, empirical_pvalues_upper, tail_pvalues

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from test_calibration import simulate_file  # noqa: E402  (one generator for the test and the study)

KINDS = ("empirical", "gpd", "gpd_plugin", "gev")


def pvals(kind: str, s: np.ndarray, null: np.ndarray) -> np.ndarray:
    """p-values of scores ``s`` against ``null`` by the rule ``kind``."""
    if kind == "empirical":
        return empirical_pvalues_upper(s, null)
    if kind == "gpd_plugin":
        return tail_pvalues(s, null, model="gpd", predictive=False)
    return tail_pvalues(s, null, model=kind)


def study(kind: str, pooled: bool, n_files: int, seed: int) -> dict:
    """KS p, FDR (+- s.e.), power and complete-null P(any discovery) (+- s.e.) of one rule and null design."""
    rng = np.random.default_rng(seed)
    s, null = simulate_file(rng, 1000, 20, pooled)
    ks = kstest(pvals(kind, s, null), "uniform").pvalue
    fdp, power, any_rej = [], [], []
    for _ in range(n_files):
        s, null = simulate_file(rng, 200, 10, pooled, n_signal=20)
        rej = bh_qvalues(pvals(kind, s, null)) < 0.05
        fdp.append(rej[20:].sum() / max(rej.sum(), 1))
        power.append(rej[:20].mean())
        s0, null0 = simulate_file(rng, 200, 10, pooled)
        any_rej.append((bh_qvalues(pvals(kind, s0, null0)) < 0.05).any())
    fdp, any_rej = np.array(fdp), np.array(any_rej, float)
    return {"null": "pooled" if pooled else "per-variant", "pvalue": kind, "ks_p": ks, "fdr": fdp.mean(),
            "fdr_se": fdp.std() / np.sqrt(n_files), "power": float(np.mean(power)), "p_any": any_rej.mean(),
            "p_any_se": any_rej.std() / np.sqrt(n_files)}


def power_rows(path: str, cls: np.ndarray, null_k: int, thin: int, kinds: list[str]) -> list[str]:
    """Table rows (config, K, statistic, rule: interacting / interacting alone %) of one saved power run."""
    z = np.load(path)
    name = os.path.basename(path)[: -len(".npz")]
    is_int = cls == "int"
    rows = []
    for st in ("maxabs", "signed", "span6", "maxfis", "span6_alts"):
        s = z[f"obs_{st}"]
        nv = z[f"null_{st}"].reshape(len(s), null_k)[:, :thin].ravel()
        cells = []
        for kind in kinds:
            p = pvals(kind, s, nv)
            q = bh_qvalues(p)
            alone = np.mean([bh_qvalues(np.r_[pi, p[~is_int]])[0] < 0.05 for pi in p[is_int]])
            cells.append(f"{100 * (q[is_int] < 0.05).mean():.0f} / {100 * alone:.0f}")
        rows.append(f"| {name} | {thin} ({len(nv)}) | {st} | " + " | ".join(cells) + " |")
    return rows


def power_main(a: argparse.Namespace) -> None:
    """Re-evaluate saved power-study runs with each p-value rule and thinned nulls."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from power_study import make_variants

    cls = make_variants(a.n_int, a.n_bg, a.power_seed, a.n_dis).cls.to_numpy()
    print("% at q < 0.05: interacting / interacting alone (sparse file)")
    print("| configuration | K (M) | statistic | " + " | ".join(a.kinds) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in a.kinds) + " |")
    for path in a.power:
        for thin in a.thin or [a.null_k]:
            print("\n".join(power_rows(path, cls, a.null_k, thin, a.kinds)), flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--kinds", nargs="+", default=["empirical", "gpd", "gpd_plugin"], choices=KINDS)
    ap.add_argument("--power", nargs="+", metavar="NPZ", help="re-evaluate saved power_study.py runs instead")
    ap.add_argument("--n-int", type=int, default=100)
    ap.add_argument("--n-bg", type=int, default=100)
    ap.add_argument("--n-dis", type=int, default=50)
    ap.add_argument("--power-seed", type=int, default=4, help="power_study.py's --seed")
    ap.add_argument("--null-k", type=int, default=20, help="power_study.py's --null-k of the saved runs")
    ap.add_argument("--thin", type=int, nargs="+", help="shuffles per variant kept (default: all)")
    a = ap.parse_args(argv)
    if a.power:
        return power_main(a)
    print(f"{a.files} files per cell, seed {a.seed}")
    print("| null | p-value | KS p | FDR of BH at 5 % (+- s.e.) | power | P(any discovery), complete null |")
    print("| --- | --- | --- | --- | --- | --- |")
    for pooled in (False, True):
        for kind in a.kinds:
            t0 = time.time()
            r = study(kind, pooled, a.files, a.seed)
            print(f"| {r['null']} | {r['pvalue']} | {r['ks_p']:.2f} | {r['fdr']:.4f} +- {r['fdr_se']:.4f} | "
                  f"{r['power']:.3f} | {r['p_any']:.4f} +- {r['p_any_se']:.4f} |  ({time.time() - t0:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
