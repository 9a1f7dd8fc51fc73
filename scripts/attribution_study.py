"""Attribution study: which importance method finds a planted motif? (issue 13, point 5)

Reproduces the experiments of "Interpreting Sequence-based Deep Learning Models for Genomic Data" (integrated
gradients on DeepG-style CNNs) with this project's methods, on CPU, seeded:

* five data sets of random 600 bp sequences (uniform i.i.d. bases), 50 % carrying a 30 bp motif: high entropy
  (GGTTCGACACGAGTATAGCTAGTATACTCCG), medium (TATAGCGCAGCCCTTATGGAGAGTCCATGA), low (TATAG x 6), lowest (A x 30),
  each once at a random position, and ``recurrent``: the high-entropy motif recurring about every 100 bp;
* per data set a small PyTorch CNN (conv 32 x 15 bp -> ReLU -> global max-pool -> dense -> sigmoid), trained
  until the balanced accuracy on a validation split exceeds 99 %, reported on a held-out test split;
* each method through ``kipoi_dfim.attribution.importance`` on the model loaded by ``kipoi_dfim.load_model``:
  integrated gradients with baselines zeros / uniform (0.25) / GC (0.46) / dinucleotide shuffle, DeepLIFT with
  the same four references, grad x input and ISM; scored on positive test sequences by motif detection (AUROC
  of the per-position importance, motif vs non-motif positions, per sequence then averaged) and Avg.Match%
  (share of motif positions where the base with the largest hypothetical score is the motif's base);
* figures: per-locus summed importance along one sequence with the motif shaded, and a logo per method.

Usage::

    python scripts/attribution_study.py --out /tmp/attr            # full: 10,000 sequences, 100 evaluated
    python scripts/attribution_study.py --quick --out /tmp/attr_q  # 2,000 sequences, 10 evaluated
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from kipoi_dfim import load_model
from kipoi_dfim.attribution import importance
from kipoi_dfim.simulation import auroc

MOTIFS = {
    "high": "GGTTCGACACGAGTATAGCTAGTATACTCCG"[:30],
    "medium": "TATAGCGCAGCCCTTATGGAGAGTCCATGA",
    "low": "TATAG" * 6,
    "lowest": "A" * 30,
    "recurrent": "GGTTCGACACGAGTATAGCTAGTATACTCCG"[:30],
}
METHODS = {
    "ig_zeros": ("integrated_gradients", {"baseline": "zeros"}),
    "ig_uniform": ("integrated_gradients", {"baseline": "uniform"}),
    "ig_gc": ("integrated_gradients", {"baseline": "gc"}),
    "ig_shuffle": ("integrated_gradients", {"baseline": "shuffle", "n_refs": 5}),
    "deeplift_zeros": ("deeplift", {"references": "zeros"}),
    "deeplift_uniform": ("deeplift", {"references": "uniform"}),
    "deeplift_gc": ("deeplift", {"references": "gc"}),
    "deeplift_shuffle": ("deeplift", {"references": "shuffle", "n_refs": 10}),
    "grad_input": ("grad_input", {}),
    "ism": ("ism", {}),
}


def make_dataset(name: str, n: int, L: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-hot (n, L, 4) float32, labels (n,), motif mask (n, L) bool. Sequence i uses SeedSequence([seed, i])."""
    motif = np.array(["ACGT".index(c) for c in MOTIFS[name]])
    m = len(motif)
    codes = np.empty((n, L), np.int64)
    mask = np.zeros((n, L), bool)
    y = np.zeros(n, np.int64)
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        codes[i] = rng.integers(0, 4, L)
        y[i] = int(rng.random() < 0.5)
        if not y[i]:
            continue
        if name == "recurrent":  # one copy in each 100 bp block, at a random offset
            starts = [b + int(rng.integers(0, 100 - m + 1)) for b in range(0, L - 99, 100)]
        else:
            starts = [int(rng.integers(0, L - m + 1))]
        for s in starts:
            codes[i, s: s + m] = motif
            mask[i, s: s + m] = True
    return np.eye(4, dtype=np.float32)[codes], y, mask


def make_cnn(L: int, n_filters: int = 32, width: int = 15) -> nn.Sequential:
    """Conv -> ReLU -> global max-pool -> dense -> sigmoid: module nonlinearities only (for DeepLIFT's rules)."""
    return nn.Sequential(
        nn.Conv1d(4, n_filters, width), nn.ReLU(), nn.MaxPool1d(L - width + 1), nn.Flatten(),
        nn.Linear(n_filters, 1), nn.Sigmoid(),
    )


def balanced_accuracy(y: np.ndarray, prob: np.ndarray) -> float:
    pred = prob >= 0.5
    return float(0.5 * (pred[y == 1].mean() + (~pred[y == 0]).mean()))


def train(x: np.ndarray, y: np.ndarray, seed: int, max_epochs: int) -> tuple[nn.Module, dict]:
    """Adam, BCE, batch 64; 80/10/10 split; stops once validation balanced accuracy > 0.99 (max_epochs)."""
    torch.manual_seed(seed)
    n = len(x)
    tr, va, te = slice(0, int(0.8 * n)), slice(int(0.8 * n), int(0.9 * n)), slice(int(0.9 * n), n)
    xt = torch.from_numpy(x.transpose(0, 2, 1).copy())
    yt = torch.from_numpy(y.astype(np.float32))
    net = make_cnn(x.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    hist = []
    for _ in range(max_epochs):
        net.train()
        idx = torch.randperm(tr.stop, generator=g)
        for b in range(0, len(idx), 64):
            j = idx[b: b + 64]
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy(net(xt[j])[:, 0], yt[j])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            bacc = balanced_accuracy(y[va], net(xt[va])[:, 0].numpy())
        hist.append(bacc)
        if bacc > 0.99:
            break
    with torch.no_grad():
        test_bacc = balanced_accuracy(y[te], net(xt[te])[:, 0].numpy())
    return net, {"epochs": len(hist), "val_bacc": hist[-1], "test_bacc": test_bacc, "test_slice": (te.start, te.stop)}


def scores(model, x: np.ndarray, method: str, seed: int, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(actual, hypothetical) importance (N, L, 4) of one method, from a single hypothetical run."""
    fn, kw = METHODS[method]
    if fn == "integrated_gradients":
        kw = {**kw, "steps": 32}
    hyp = importance(model, x, 0, fn, hypothetical=True, batch_size=batch_size, seed=seed, **kw)
    # gradient methods: actual = hypothetical * x; ISM: H[t, x_t] = 3/4 of the actual score (attribution.ism)
    actual = hyp * x * (4.0 / 3.0 if fn == "ism" else 1.0)
    return actual, hyp


def evaluate(actual: np.ndarray, hyp: np.ndarray, x: np.ndarray, mask: np.ndarray) -> dict:
    """Motif-detection AUROC (per sequence, averaged; and pooled) and Avg.Match% over motif positions.

    ``auroc_se`` and ``avg_match_se``: standard errors over sequences (of the per-sequence AUROC and match %).
    """
    per_pos = actual.sum(-1)
    aucs = [auroc(mask[i].astype(int), per_pos[i]) for i in range(len(x))]
    match = hyp.argmax(-1) == x.argmax(-1)
    per_seq = [100 * match[i][mask[i]].mean() for i in range(len(x))]
    se = float(np.std(aucs, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
    se_match = float(np.std(per_seq, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
    return {"auroc": float(np.mean(aucs)), "auroc_pooled": auroc(mask.ravel().astype(int), per_pos.ravel()),
            "avg_match_pct": float(100 * match[mask].mean()), "auroc_se": se, "avg_match_se": se_match}


def plot_example(name: str, x: np.ndarray, mask: np.ndarray, res: dict, out: str) -> list[str]:
    """Per-locus summed importance (motif shaded) and a logo around the first motif copy, one row per method."""
    import logomaker
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    spans = np.flatnonzero(np.diff(np.r_[0, mask.astype(int), 0]))
    starts, ends = spans[::2], spans[1::2]
    k = len(res)
    fig, axes = plt.subplots(k, 2, figsize=(13, 1.25 * k), gridspec_kw={"width_ratios": [3, 1.3]})
    lo, hi = max(int(starts[0]) - 8, 0), min(int(ends[0]) + 8, len(x))
    for r, (meth, actual) in enumerate(res.items()):
        ax = axes[r, 0]
        ax.plot(actual.sum(-1), lw=0.6, color="k")
        for s, e in zip(starts, ends, strict=True):
            ax.axvspan(s - 0.5, e - 0.5, color="tab:orange", alpha=0.3, lw=0)
        ax.set_ylabel(meth, rotation=0, ha="right", va="center", fontsize=7)
        ax.tick_params(labelsize=6)
        df = pd.DataFrame(actual[lo:hi], columns=list("ACGT"), index=np.arange(lo, hi))
        logomaker.Logo(df, ax=axes[r, 1], color_scheme="classic")
        axes[r, 1].axvspan(starts[0] - 0.5, ends[0] - 0.5, color="tab:orange", alpha=0.15, lw=0)
        axes[r, 1].tick_params(labelsize=6)
    axes[0, 0].set_title(f"{name}: per-locus summed importance (motif shaded)", fontsize=8)
    axes[0, 1].set_title("logo around the motif", fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, f"attribution_{name}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)  # palette PNG: a quarter the size
    return [path]


def markdown_tables(df: pd.DataFrame, methods: list[str], datasets: list[str]) -> str:
    """The doc's tables (training, AUROC, Avg.Match%, seconds) as markdown, methods x data sets."""
    cols = [d for d in datasets if d in set(df["dataset"])]
    head = "| {} | {} |\n| --- |{}\n".format("{}", " | ".join(cols), " --- |" * len(cols))
    first = df.groupby("dataset").first()
    out = [head.format("data set")
           + "| test balanced accuracy | " + " | ".join(f"{100 * first.test_bacc[d]:.1f} %" for d in cols) + " |\n"
           + "| epochs | " + " | ".join(str(first.epochs[d]) for d in cols) + " |\n"]
    for col, se, fmt, sefmt in (("auroc", "auroc_se", "{:.3f}", "{:.4f}"), ("avg_match_pct", "avg_match_se", "{:.1f}",
                                "{:.2f}"), ("seconds", None, "{:.1f}", "")):
        piv = df.pivot(index="method", columns="dataset", values=col)
        err = df.pivot(index="method", columns="dataset", values=se) if se else None

        def cell(m: str, d: str, piv=piv, err=err, fmt=fmt, sefmt=sefmt) -> str:
            return fmt.format(piv.loc[m, d]) + ("" if err is None else " ± " + sefmt.format(err.loc[m, d]))

        rows = [f"| {m} | " + " | ".join(cell(m, d) for d in cols) + " |" for m in methods if m in piv.index]
        out.append(f"{col}:\n\n" + head.format("method") + "\n".join(rows) + "\n")
    return "\n".join(out)


def run_dataset(d: int, name: str, a: argparse.Namespace) -> list[dict]:
    t0 = time.time()
    x, y, mask = make_dataset(name, a.n_seqs, a.seq_len, seed=a.seed + 1000 * d)
    net, info = train(x, y, a.seed + d, a.max_epochs)
    model = load_model(net, seq_len=a.seq_len, layout="(4,L)", batch_size=a.batch_size)
    te = np.arange(*info["test_slice"])
    pos = te[y[te] == 1][: a.n_eval]
    rows, example = [], {}
    for meth in tqdm(a.methods, desc=name, leave=False):
        t1 = time.time()
        actual, hyp = scores(model, x[pos], meth, a.seed, a.batch_size)
        rows.append({"dataset": name, "method": meth, **evaluate(actual, hyp, x[pos], mask[pos]),
                     "seconds": round(time.time() - t1, 1), "test_bacc": info["test_bacc"], "epochs": info["epochs"]})
        example[meth] = actual[0]
    plot_example(name, x[pos[0]], mask[pos[0]], example, a.out)
    print(json.dumps({"dataset": name, **{k: v for k, v in info.items() if k != "test_slice"},
                      "seconds": round(time.time() - t0)}), flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/attribution_study")
    ap.add_argument("--n-seqs", type=int, default=10_000)
    ap.add_argument("--seq-len", type=int, default=600)
    ap.add_argument("--n-eval", type=int, default=100, help="positive test sequences scored per method")
    ap.add_argument("--max-epochs", type=int, default=15)
    ap.add_argument("--datasets", nargs="+", default=list(MOTIFS), choices=list(MOTIFS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=128,
                    help="model inputs per forward/backward call (ISM mutants, IG points, DeepLIFT pairs)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared machine)")
    ap.add_argument("--quick", action="store_true", help="2,000 sequences, 10 evaluated")
    a = ap.parse_args(argv)
    if a.quick:
        a.n_seqs, a.n_eval = 2000, 10
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    os.makedirs(a.out, exist_ok=True)
    t0, cpu0, load0 = time.time(), time.process_time(), os.getloadavg()
    rows = []
    for name in a.datasets:  # a data set's seeds come from its place in MOTIFS, not in --datasets
        rows += run_dataset(list(MOTIFS).index(name), name, a)
        df = pd.DataFrame(rows)  # written after every data set, so a partial run leaves its results
        df.to_csv(os.path.join(a.out, "attribution_study.tsv"), sep="\t", index=False)
    run = {"wall_s": round(time.time() - t0, 1), "cpu_s": round(time.process_time() - cpu0, 1),
           "loadavg_start": [round(v, 2) for v in load0], "loadavg_end": [round(v, 2) for v in os.getloadavg()],
           "n_cpus": os.cpu_count(), "args": vars(a)}
    with open(os.path.join(a.out, "run.json"), "w") as fh:
        json.dump(run, fh, indent=1)
    with open(os.path.join(a.out, "tables.md"), "w") as fh:
        fh.write(markdown_tables(df, a.methods, a.datasets))
    pd.set_option("display.width", 200)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for col in ("auroc", "avg_match_pct"):
        print(f"\n{col}:\n" + df.pivot(index="method", columns="dataset", values=col)
              .loc[a.methods, a.datasets].to_string(float_format=lambda v: f"{v:.3f}"))
    print(json.dumps({k: v for k, v in run.items() if k != "args"}))


if __name__ == "__main__":
    main()
