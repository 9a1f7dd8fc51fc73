"""Throughput of ``kipoi_dfim.score_variants`` on a Basset-sized model, against the bare model cost it needs.

Usage::

    python benchmarks/bench_score_variants.py [--n-variants 24] [--method deeplift] [--n-refs 10]
        [--batch-size 64] [--targets 1] [--seed 0] [--repeats 1]

Builds a Basset-shaped PyTorch network with random weights (600 bp input; conv 300x19 / maxpool 3,
conv 200x11 / maxpool 4, conv 200x7 / maxpool 4, dense 1000, dense 1000, 164 sigmoid outputs), writes a
synthetic FASTA + VCF of SNVs in a temporary directory, and times ``score_variants`` end to end (VCF reading,
windows, shuffled references, importance, FIS summaries, ISM scores, TSV). It then times the model calls
that run needs, alone, on random one-hot inputs of the same shapes: one forward pass over the 2N reference
and alternate windows (ISM scores) and, per scored target, the importance calls over those 2N windows
(``model.deeplift`` with n_refs references per window for deeplift, ``model.gradient`` for grad_input /
integrated_gradients, ``model.predict`` on every single-base mutant for ism), in the same batch sizes. The
ratio score_variants time / bare time is the pipeline's overhead (1.0 = none). Wall time and process CPU time
(all threads; less sensitive to other jobs on a shared machine) are both reported. Peak RSS is the process's
maximum resident set size (resource.getrusage), i.e. including PyTorch itself.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

L = 600
N_OUT = 164


def basset(seed: int = 0):
    """A Basset-shaped nn.Sequential with random weights (no batch norm / dropout: inference cost only)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(4, 300, 19), nn.ReLU(), nn.MaxPool1d(3),
        nn.Conv1d(300, 200, 11), nn.ReLU(), nn.MaxPool1d(4),
        nn.Conv1d(200, 200, 7), nn.ReLU(), nn.MaxPool1d(4),
        nn.Flatten(),
        nn.Linear(200 * 10, 1000), nn.ReLU(),
        nn.Linear(1000, 1000), nn.ReLU(),
        nn.Linear(1000, N_OUT), nn.Sigmoid(),
    ).eval()


def write_inputs(d: Path, n: int, seed: int) -> tuple[Path, Path]:
    """One random contig with n SNVs 7 bp apart in its middle (every window is a full 600 bp)."""
    rng = np.random.default_rng(seed)
    length = L + 7 * n + 10
    seq = "".join(rng.choice(list("ACGT"), length))
    fa = d / "ref.fa"
    fa.write_text(">chr1\n" + "".join(seq[i: i + 60] + "\n" for i in range(0, length, 60)))
    lines = ["##fileformat=VCFv4.2", f"##contig=<ID=chr1,length={length}>",
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    for i in range(n):
        p0 = L // 2 + 7 * i
        r = seq[p0]
        a = "ACGT"[("ACGT".index(r) + 1 + i % 3) % 4]
        lines.append(f"chr1\t{p0 + 1}\tv{i}\t{r}\t{a}\t.\tPASS\t.")
    vcf = d / "in.vcf"
    vcf.write_text("\n".join(lines) + "\n")
    return vcf, fa


def _chunks(n: int, size: int):
    for a in range(0, n, size):
        yield a, min(n, a + size)


def bare_cost(m, n: int, method: str, n_refs: int, batch_size: int, targets: list[int], seed: int):
    """(wall, CPU) seconds of the model calls alone that score_variants makes for n SNVs.

    The inputs are drawn before the clock starts.
    """
    rng = np.random.default_rng(seed)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (2 * n, L))]
    refs = None
    if method == "deeplift":
        refs = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (2 * n, n_refs, L))]
    t0, c0 = time.perf_counter(), time.process_time()
    for a, b in _chunks(2 * n, batch_size):
        m.predict(x[a:b], output="raw")
    for t in targets:
        if method == "deeplift":
            for a, b in _chunks(2 * n, max(1, batch_size // n_refs)):
                m.deeplift(x[a:b], refs[a:b], t, hypothetical=True)
        elif method == "grad_input":
            for a, b in _chunks(2 * n, batch_size):
                m.gradient(x[a:b], t)
        elif method == "integrated_gradients":
            steps = 50  # attribution.integrated_gradients' default, zero baseline
            for a, b in _chunks(2 * n * steps, batch_size):
                m.gradient(x[np.arange(a, b) // steps] * 0.5, t)
        elif method == "ism":
            for a, b in _chunks(2 * n, batch_size):
                m.predict(x[a:b])
            for a, b in _chunks(2 * n * 3 * L, batch_size):
                m.predict(x[np.arange(a, b) % (2 * n)])
        else:
            raise ValueError(method)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-variants", type=int, default=24)
    p.add_argument("--method", default="deeplift", choices=["deeplift", "grad_input", "integrated_gradients", "ism"])
    p.add_argument("--n-refs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--targets", type=int, default=1, help="number of model outputs scored (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="alternate the two measurements; report the fastest")
    args = p.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    import kipoi_dfim

    m = kipoi_dfim.load_model(basset(args.seed), seq_len=L, layout="(4,L)", batch_size=args.batch_size)
    targets = list(range(args.targets))
    n = args.n_variants
    kw = dict(target=targets, method=args.method, n_refs=args.n_refs, batch_size=args.batch_size,
              seed=args.seed, quiet=True, return_table=False)
    scores, bares = [], []
    with tempfile.TemporaryDirectory(prefix="bench_dfim_") as tmp:
        d = Path(tmp)
        vcf, fa = write_inputs(d, n, args.seed)
        (d / "warm").mkdir()
        warm_vcf, warm_fa = write_inputs(d / "warm", 2, args.seed + 1)
        # first calls build kernels/caches: not part of either measurement
        kipoi_dfim.score_variants(m, warm_vcf, warm_fa, tsv=str(d / "warm.tsv"), **kw)
        bare_cost(m, 2, args.method, args.n_refs, args.batch_size, targets, args.seed)
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            kipoi_dfim.score_variants(m, vcf, fa, tsv=str(d / "out.tsv"), **kw)
            scores.append((time.perf_counter() - t0, time.process_time() - c0))
            bares.append(bare_cost(m, n, args.method, args.n_refs, args.batch_size, targets, args.seed))
        n_rows = sum(1 for _ in open(d / "out.tsv")) - 1
    # the fastest repeat is the least disturbed by other work on the machine
    t_score, c_score = min(scores)
    t_bare, c_bare = min(bares)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB

    print(f"model      Basset-sized PyTorch (600 bp, 164 outputs, random weights), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(f"settings   n_variants={n} method={args.method} n_refs={args.n_refs} batch_size={args.batch_size} "
          f"targets={args.targets} repeats={args.repeats}")
    print("                    wall s  variants/s      CPU s  variants/CPU-s")
    print(f"score_variants  {t_score:10.2f} {n / t_score:11.3f} {c_score:10.2f} {n / c_score:15.3f}"
          f"   ({n_rows} TSV rows)")
    print(f"bare model cost {t_bare:10.2f} {n / t_bare:11.3f} {c_bare:10.2f} {n / c_bare:15.3f}")
    print(f"ratio           {t_score / t_bare:10.2f} {'':11} {c_score / c_bare:10.2f}   "
          "(score_variants / bare forward+backward)")
    print(f"peak RSS        {rss_mb:8.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
