"""Power and calibration of DFIM variant statistics on the project's simulated grammar (issue 13, point 4).

Variants are SNVs in fresh 200 bp sequences of the grammar (kipoi_dfim.simulation, GATA x TAL1 pair, GC 0.46
background): ``int`` breaks a core base of a pair motif (its partner lies within +-15 bp), ``bg`` hits plain
background >= 20 bp from every planted motif in a sequence that carries the pair (the model is "on", only the
variant is irrelevant), as in example_vcfs/sim. FIS is computed exactly as ``score-variants`` does: importance
of the reference window and of its mutants with the same references, FIS(t) = sum_b (C_X - C_X')[t, b], the
null = the same variant on K dinucleotide-shuffled backgrounds (variant base kept) pooled over the file
(M = N x K values per statistic). Statistics over the +-15 bp window (variant excluded):

* ``maxabs``: max |FIS| (the pipeline's maxAbsFIS);
* ``signed``: max FIS (a broken motif takes importance away from its partner: FIS > 0);
* ``span6``: the largest sum of FIS over 6 consecutive target bases (one motif width; the partner-span sum
  without knowing where the partner is);
* ``maxfis``: max over targets of the paper's maxFIS(t) = max over the three alternative bases of FIS;
* ``span6_alts``: ``span6`` of maxFIS(t).

p-values: the Gaussian fit (current pipeline), the empirical (1 + b) / (1 + M) and the GPD tail model
(kipoi_dfim.null.tail_pvalues); q-values by BH over the file (``int_q05``, ``bg_q05``, ``dis_q05``: shares of
each class at q < 0.05) and, for a sparse file, over each interacting variant alone with all negatives
(``int_alone_q05``: 1 signal among 1 + n_dis + n_bg tests). Usage::

    python scripts/power_study.py [--quick] [--n-int 60 --n-bg 60 --null-k 10] [--configs ...] [--out DIR]
    python scripts/power_study.py --save-null /tmp/stats/fis_null.npy   # large real null for the tail study
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd
from tqdm import tqdm

from kipoi_dfim import load_model
from kipoi_dfim.attribution import importance
from kipoi_dfim.null import bh_qvalues, empirical_pvalues_upper, gaussian_pvalues, tail_pvalues
from kipoi_dfim.sequence import one_hot
from kipoi_dfim.shuffle import dinucleotide_shuffle
from kipoi_dfim.simulation import DISTRACTORS, INTERACTING_PAIR, MOTIFS, auroc, simulate_sequence

W = 15
STATS = ("maxabs", "signed", "span6", "maxfis", "span6_alts")
# name -> (method, options); "shuffle" references are drawn here and shared by a window and its mutants
CONFIGS = {
    "grad_input": ("grad_input", {}),
    "deeplift_shuffle": ("deeplift", {"references": "shuffle", "n_refs": 5}),
    "deeplift_gc": ("deeplift", {"references": "gc"}),
    "deeplift_uniform": ("deeplift", {"references": "uniform"}),
    "deeplift_zeros": ("deeplift", {"references": "zeros"}),
    "ig_zeros": ("integrated_gradients", {"baseline": "zeros", "steps": 16}),
    "ig_uniform": ("integrated_gradients", {"baseline": "uniform", "steps": 16}),
    "ig_gc": ("integrated_gradients", {"baseline": "gc", "steps": 16}),
    "ig_shuffle": ("integrated_gradients", {"baseline": "shuffle", "n_refs": 3, "steps": 16}),
}


def make_variants(n_int: int, n_bg: int, seed: int, n_dis: int = 0, n_lone: int = 0) -> pd.DataFrame:
    """SNVs with known class in fresh sequences; one variant per sequence (rows: seq, pos, alt, cls).

    ``int``: a core base of a pair motif; ``dis``: a core base of a distractor (CTCF-like or AP-1) motif, a
    motif the model ignores (negative control); ``bg``: plain background >= 20 bp from every motif (these three
    in positive sequences); ``lone``: a core base of the single GATA or TAL1 motif of a negative sequence (a
    variant with an effect on the output but no partner: the main-effect-without-interaction control). The lone
    variants come last, so adding them leaves the other rows of a seed unchanged.
    """
    rows = []
    i = 0
    wanted = ["int"] * n_int + ["dis"] * n_dis + ["bg"] * n_bg + ["lone"] * n_lone
    while len(rows) < len(wanted):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        i += 1
        want = wanted[len(rows)]
        seq, sites = simulate_sequence(0 if want == "lone" else 1, rng, distractor_prob=1.0 if want == "dis" else 0.5)
        partner = None
        if want in ("int", "dis", "lone"):
            names = DISTRACTORS if want == "dis" else INTERACTING_PAIR
            cand = [m for m in sites if m.name in names]
            s = cand[int(rng.integers(len(cand)))]
            cons = MOTIFS[s.name] if s.strand == "+" else _revcomp_iupac(MOTIFS[s.name])
            core = [s.start + j for j, c in enumerate(cons) if c in "ACGT"]
            pos = int(rng.choice(core))
            if want == "int":
                partner = [m for m in sites if m.name in INTERACTING_PAIR and m is not s][0]
        else:
            busy = np.zeros(len(seq), bool)
            for m in sites:
                busy[max(0, m.start - 20): m.end + 20] = True
            free = np.flatnonzero(~busy[W: len(seq) - W]) + W
            if len(free) == 0:
                continue
            pos, partner = int(rng.choice(free)), None
        if not W <= pos < len(seq) - W:
            continue
        alt = str(rng.choice([b for b in "ACGT" if b != seq[pos]]))
        rows.append({"seq": seq, "pos": pos, "ref": seq[pos], "alt": alt, "cls": want,
                     "partner_start": partner.start if partner else -1, "partner_end": partner.end if partner else -1})
    return pd.DataFrame(rows)


def _revcomp_iupac(s: str) -> str:
    comp = {"A": "T", "C": "G", "G": "C", "T": "A", "W": "W", "S": "S", "R": "Y", "Y": "R", "K": "M", "M": "K"}
    return "".join(comp[c] for c in reversed(s))


def fis_tracks(model, X: np.ndarray, pos: np.ndarray, cfg: tuple, seeds: np.ndarray, batch: int = 256) -> np.ndarray:
    """FIS of each window against each of its three mutants at ``pos``: (N, 3, L), mutant bases in ACGT order
    skipping the observed one. References (shuffles) are shared by a window and its mutants."""
    method, opts = cfg
    opts = dict(opts)
    N, L, _ = X.shape
    out = np.zeros((N, 3, L), np.float32)
    step = max(1, batch // 4)
    for a in range(0, N, step):
        Xc, pc = X[a: a + step], pos[a: a + step]
        n = len(Xc)
        muts = np.repeat(Xc[:, None], 3, axis=1)
        for j in range(n):
            obs = int(Xc[j, pc[j]].argmax())
            for g, b in enumerate([b for b in range(4) if b != obs]):
                muts[j, g, pc[j]] = np.eye(4, dtype=np.float32)[b]
        allx = np.concatenate([Xc[:, None], muts], axis=1).reshape(n * 4, L, 4)
        kw = dict(opts)
        key = "references" if method == "deeplift" else "baseline"
        if opts.get(key) == "shuffle":
            refs = dinucleotide_shuffle(Xc, n=opts["n_refs"], seed=seeds[a: a + step])  # (n, R, L, 4)
            kw[key] = np.repeat(refs, 4, axis=0)
            kw.pop("n_refs")
        C = importance(model, allx, 0, method, batch_size=batch, **kw).reshape(n, 4, L, 4).sum(-1)
        out[a: a + n] = C[:, :1] - C[:, 1:]
    return out


def summaries(F: np.ndarray, pos: np.ndarray, alt_g: np.ndarray) -> dict[str, np.ndarray]:
    """The five statistics of each FIS track set F (N, 3, L) around ``pos``; ``alt_g`` picks the ALT's mutant."""
    N = len(F)
    idx = pos[:, None] + np.arange(-W, W + 1)[None]  # (N, 2W+1)
    G = np.take_along_axis(F, idx[:, None, :].repeat(3, 1), axis=2)  # (N, 3, 2W+1)
    G[:, :, W] = np.nan
    fa = G[np.arange(N), alt_g]
    mf = G.max(1)
    return {"maxabs": np.nanmax(np.abs(fa), 1), "signed": np.nanmax(fa, 1), "span6": _span(fa, 6),
            "maxfis": np.nanmax(mf, 1), "span6_alts": _span(mf, 6)}


def _span(a: np.ndarray, k: int) -> np.ndarray:
    """Largest sum over k consecutive target bases (the variant's own position counts as 0)."""
    b = np.nan_to_num(a)
    c = np.concatenate([np.zeros((len(b), 1)), np.cumsum(b, 1)], 1)
    return (c[:, k:] - c[:, :-k]).max(1)


def _arrays(var: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-hot windows, variant positions and the ALT's index among the three mutant bases."""
    X = one_hot(list(var.seq))
    pos = var.pos.to_numpy()
    obs_base = X[np.arange(len(X)), pos].argmax(-1)
    alt_b = np.array(["ACGT".index(a) for a in var.alt])
    return X, pos, alt_b - (alt_b > obs_base)


def null_backgrounds(X: np.ndarray, pos: np.ndarray, K: int, seed: int) -> np.ndarray:
    """K dinucleotide shuffles of each window with the variant base kept: (N * K, L, 4)."""
    bg = dinucleotide_shuffle(X, n=K, seed=np.array([np.random.SeedSequence([seed, i, 1]).generate_state(1)[0]
                                                     for i in range(len(X))], np.uint64))  # (N, K, L, 4)
    bg[np.arange(len(X)), :, pos] = X[np.arange(len(X)), pos][:, None]
    return bg.reshape(-1, *X.shape[1:])


def run_config(model, name: str, var: pd.DataFrame, K: int, seed: int) -> tuple[dict, dict]:
    """Observed and pooled-null statistics of one method/reference configuration."""
    X, pos, alt_g = _arrays(var)
    cfg = CONFIGS[name]
    seeds = np.array([np.random.SeedSequence([seed, i, 0]).generate_state(1)[0] for i in range(len(X))], np.uint64)
    obs = summaries(fis_tracks(model, X, pos, cfg, seeds), pos, alt_g)
    B = null_backgrounds(X, pos, K, seed)
    npos, nalt = np.repeat(pos, K), np.repeat(alt_g, K)
    nseeds = np.array([np.random.SeedSequence([seed, i, 2 + k]).generate_state(1)[0]
                       for i in range(len(X)) for k in range(K)], np.uint64)
    Fn = np.concatenate([fis_tracks(model, B[a: a + 64], npos[a: a + 64], cfg, nseeds[a: a + 64])
                         for a in tqdm(range(0, len(npos), 64), desc=f"{name} null", leave=False)])
    null = summaries(Fn, npos, nalt)
    null.update(background_outputs(model, var, K, seed))
    return obs, null


def background_outputs(model, var: pd.DataFrame, K: int, seed: int, batch: int = 512) -> dict[str, np.ndarray]:
    """On each null background: ``effect`` = |f(ALT) - f(REF)| of the scored logit (what ``--null-max-effect``
    bounds, kipoi_dfim.null.effect_bounded_backgrounds) and ``logit`` = max(f(REF), f(ALT)) (is the model
    "on"?). Forward passes only: recomputed cheaply for saved runs that lack them."""
    X, pos, alt_g = _arrays(var)
    B = null_backgrounds(X, pos, K, seed)
    npos, nalt = np.repeat(pos, K), np.repeat(alt_g, K)
    Ba = B.copy()
    for j in range(len(B)):
        obs = int(B[j, npos[j]].argmax())
        Ba[j, npos[j]] = np.eye(4, dtype=np.float32)[[b for b in range(4) if b != obs][nalt[j]]]
    f = [np.concatenate([model.predict(A[a: a + batch])[:, 0] for a in range(0, len(A), batch)]).astype(np.float64)
         for A in (B, Ba)]
    return {"effect": np.abs(f[1] - f[0]), "logit": np.maximum(f[0], f[1])}


def evaluate(var: pd.DataFrame, obs: dict, null: dict, designs: tuple = (None,)) -> list[dict]:
    """Share of each class at q < 0.05 per null design, statistic and p-value model, and the int-vs-bg AUROC.

    ``designs``: None is the plain shuffled null; ``("effect", TAU)`` keeps only the backgrounds on which the
    substitution changes the logit by less than TAU (``--null-max-effect``), ``("logit", T)`` those on which
    the model's logit stays below T in both windows (the model is "off"). The kept backgrounds are i.i.d. draws
    of the conditional null, as the pipeline's redraws are. Sparse file (``*_alone``): each interacting (or
    lone-motif) variant tested alone with the background and distractor variants.
    """
    cls = var.cls.to_numpy()
    is_int, is_lone = cls == "int", cls == "lone"
    neg_only = (cls == "bg") | (cls == "dis")
    rows = []
    for design in designs:
        keep = np.ones(len(null["maxabs"]), bool) if design is None else null[design[0]] < design[1]
        label = "shuffle" if design is None else f"{design[0]}<{design[1]:g}"
        for st in STATS:
            s, nv = obs[st], null[st][keep]
            tests = (("gaussian", gaussian_pvalues(s, nv, two_sided=False)),
                     ("empirical", empirical_pvalues_upper(s, nv)), ("gpd", tail_pvalues(s, nv)))
            for pm, p in tests:
                q = bh_qvalues(p)
                neg = p[neg_only]
                rows.append({"design": label, "M": int(keep.sum()),
                             "stat": st, "pvalue": pm, "int_q05": _share(q, cls == "int"),
                             "int_alone_q05": _alone(p[is_int], neg), "bg_q05": _share(q, cls == "bg"),
                             "dis_q05": _share(q, cls == "dis"), "lone_q05": _share(q, is_lone),
                             "lone_alone_q05": _alone(p[is_lone], neg),
                             "auroc": auroc(is_int[neg_only | is_int].astype(int), s[neg_only | is_int]),
                             "min_p": float(np.nanmin(p))})
    return rows


def _share(q: np.ndarray, sel: np.ndarray) -> float:
    return float((q[sel] < 0.05).mean()) if sel.any() else np.nan


def _alone(p_signal: np.ndarray, p_neg: np.ndarray) -> float:
    """Share of ``p_signal`` at q < 0.05 when each is tested alone with all of ``p_neg`` (a sparse file)."""
    if not len(p_signal):
        return np.nan
    return float(np.mean([bh_qvalues(np.r_[pi, p_neg])[0] < 0.05 for pi in p_signal]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="model_specs/sim_torch")
    ap.add_argument("--n-int", type=int, default=60)
    ap.add_argument("--n-bg", type=int, default=60)
    ap.add_argument("--n-dis", type=int, default=30)
    ap.add_argument("--n-lone", type=int, default=0, help="lone-motif variants (main effect, no partner)")
    ap.add_argument("--null-max-effect", type=float, nargs="*", default=[],
                    help="also evaluate the effect-bounded null with these TAU (logit units; docs/statistics.md)")
    ap.add_argument("--null-max-logit", type=float, nargs="*", default=[],
                    help="also evaluate the 'model off' null: backgrounds whose logit stays below these values")
    ap.add_argument("--null-k", type=int, default=10)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="20 + 20 variants, K = 5, three configurations")
    ap.add_argument("--out", default="/tmp/stats/power")
    ap.add_argument("--ig-steps", type=int, default=16, help="integrated-gradients steps")
    ap.add_argument("--evaluate", nargs="+", metavar="NPZ",
                    help="only rebuild the table from saved <config>.npz files (same variant options)")
    ap.add_argument("--save-null", help="write a large maxAbsFIS null (deeplift_gc, K = 50) to this .npy and exit")
    a = ap.parse_args(argv)
    model = load_model(a.model, target=0)
    os.makedirs(a.out, exist_ok=True)
    if a.save_null:
        var = make_variants(a.n_int, a.n_bg, a.seed, a.n_dis)
        _, null = run_config(model, "deeplift_gc", var, 50, a.seed)
        np.save(a.save_null, null["maxabs"].astype(np.float64))
        print(f"wrote {len(null['maxabs'])} null maxAbsFIS values to {a.save_null}")
        return
    if a.quick:
        a.n_int, a.n_bg, a.n_dis, a.null_k, a.configs = 20, 20, 10, 5, ["grad_input", "deeplift_gc", "deeplift_shuffle"]
    for name in CONFIGS:
        if CONFIGS[name][0] == "integrated_gradients":
            CONFIGS[name][1]["steps"] = a.ig_steps
    var = make_variants(a.n_int, a.n_bg, a.seed, a.n_dis, a.n_lone)
    designs = (None, *[("effect", t) for t in a.null_max_effect], *[("logit", t) for t in a.null_max_logit])
    if a.evaluate:
        return report(var, a, [evaluate_npz(model, var, path, designs, a.null_k, a.seed) for path in a.evaluate])
    rows = []
    for name in a.configs:
        t0 = time.time()
        obs, null = run_config(model, name, var, a.null_k, a.seed)
        np.savez(os.path.join(a.out, f"{name}.npz"), **{f"obs_{k}": v for k, v in obs.items()},
                 **{f"null_{k}": v for k, v in null.items()})
        secs = round(time.time() - t0)
        rows.append([{"config": name, **r, "seconds": secs} for r in evaluate(var, obs, null, designs)])
        print(json.dumps({"config": name, "seconds": round(time.time() - t0)}), flush=True)
    report(var, a, rows)


def evaluate_npz(model, var: pd.DataFrame, path: str, designs: tuple, K: int, seed: int) -> list[dict]:
    """Rows of the table from a saved ``<config>.npz`` (observed and null statistics; the same variant options
    and ``--null-k`` as the run that wrote it). Background outputs missing from older files are recomputed."""
    z = np.load(path)
    obs = {k: z[f"obs_{k}"] for k in STATS}
    null = {k: z[f"null_{k}"] for k in STATS}
    if len(null["maxabs"]) != len(var) * K:
        raise SystemExit(f"{path}: {len(null['maxabs'])} null values, expected {len(var)} variants x K = {K}")
    if designs != (None,):
        null.update({k: z[f"null_{k}"] for k in ("effect", "logit") if f"null_{k}" in z})
        if "logit" not in null:
            null.update(background_outputs(model, var, K, seed))
    name = os.path.basename(path)[: -len(".npz")]
    if designs != (None,):
        print(calibration(null, len(var), K, designs).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return [{"config": name, **r} for r in evaluate(var, obs, null, designs)]


def calibration(null: dict, n: int, K: int, designs: tuple, reps: int = 3) -> pd.DataFrame:
    """Null vs null with the real model's null values: "observed" = background j of each variant (a file of n
    null variants, j = 0..reps-1), null = the other K - 1 backgrounds, the GPD tail p. For each design, the
    observed draws either from the plain shuffles or from the backgrounds the design accepts (its own H0)."""
    rows = []
    for design in designs[1:]:
        acc = (null[design[0]] < design[1]).reshape(n, K)
        for st in ("maxabs", "span6_alts"):
            v = null[st].reshape(n, K)
            for j in range(reps):
                rest, racc = np.delete(v, j, 1), np.delete(acc, j, 1)
                for h0, o in (("plain shuffle", v[:, j]), ("accepted", v[acc[:, j], j])):
                    p = tail_pvalues(o, rest[racc])
                    rows.append({"design": f"{design[0]}<{design[1]:g}", "stat": st, "rep": j, "H0 windows": h0,
                                 "n": len(o), "p<0.05": np.mean(p < 0.05), "p<0.01": np.mean(p < 0.01),
                                 "p<1e-3": np.mean(p < 1e-3), "BH discoveries": int((bh_qvalues(p) < 0.05).sum())})
    return pd.DataFrame(rows)


def report(var: pd.DataFrame, a: argparse.Namespace, rows: list[list[dict]]) -> None:
    df = pd.DataFrame([r for rr in rows for r in rr])
    df.to_csv(os.path.join(a.out, "power.tsv"), sep="\t", index=False)
    pd.set_option("display.width", 200)
    print(f"{a.n_int} interacting + {a.n_dis} distractor + {a.n_bg} background + {a.n_lone} lone-motif variants")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
