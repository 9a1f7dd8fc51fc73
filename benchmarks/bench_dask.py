"""Throughput of ``score_variants`` on a Dask LocalCluster of 1 and 2 workers, against the single-process run.

Usage::

    python benchmarks/bench_dask.py [--records 400] [--workers 1 2] [--method deeplift] [--chunk-size 16]
        [--chunks-per-task 1] [--repeats 1]

Writes a random FASTA contig and a VCF of N SNVs in a temporary directory and scores it with the shipped
sim_torch Kipoi model (200 bp input, DeepLIFT with 10 shuffled references per window by default):

- **single**: ``score_variants(...)`` in this process (the bare baseline: no Dask at all), with PyTorch's
  default number of threads and with one thread (what each Dask worker gets).
- **dask N**: a ``LocalCluster`` of N single-threaded worker processes (``distributed.connect("local:N")``, what
  ``--dask local:N`` starts). Its fixed
  costs are timed apart: starting the cluster, and warming every worker as this process is warmed before
  its own runs (the model loaded, the scoring modules imported, one variant scored: the engine's plan and
  first-call costs). Then ``score_variants(..., client=...)`` is timed with warm workers (the per-chunk cost).

Printed per run: seconds, records/s, the speed-up over the single process, the CPU seconds spent (all threads
of this process, plus every worker process for Dask runs: the cost of distributing, which other jobs on the
machine hardly change), and the fixed costs. Every Dask
run's TSV is checked to be byte for byte the single-process one. On a shared machine the numbers move with
the other jobs (the load average is printed): use ``--repeats`` to keep the fastest of several runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kipoi_dfim import distributed as D
from kipoi_dfim.scoring import make_settings, score_variants

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "model_specs" / "sim_torch")


def write_inputs(d: Path, n: int, seed: int = 0) -> tuple[str, str]:
    """A random contig and a VCF of ``n`` SNVs at least 100 bp from its ends (the REF matches the FASTA)."""
    rng = np.random.default_rng(seed)
    length = 400 + 20 * n
    seq = "".join(rng.choice(list("ACGT"), length))
    (d / "ref.fa").write_text(">c1\n" + "\n".join(seq[i : i + 80] for i in range(0, length, 80)) + "\n")
    pos = np.sort(rng.choice(np.arange(200, length - 200), n, replace=False))
    with open(d / "in.vcf", "w") as fh:
        fh.write(f"##fileformat=VCFv4.2\n##contig=<ID=c1,length={length}>\n"
                 "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for i, p in enumerate(pos):
            r = seq[p - 1]
            fh.write(f"c1\t{p}\tv{i}\t{r}\t{'ACGT'[('ACGT'.index(r) + 1) % 4]}\t.\t.\t.\n")
    return str(d / "in.vcf"), str(d / "ref.fa")


def run_single(vcf: str, fa: str, tsv: str, opts: dict) -> dict[str, float]:
    t, c = time.perf_counter(), time.process_time()
    score_variants(MODEL, vcf, fa, tsv=tsv, quiet=True, return_table=False, **opts)
    return {"score": time.perf_counter() - t, "cpu": time.process_time() - c}


def run_dask(n: int, vcf: str, fa: str, tsv: str, opts: dict, per_task: int) -> dict[str, float]:
    """Start a LocalCluster of ``n`` workers, warm each as this process is warmed (load the model, import the
    scoring modules, build the engine's plan: one variant scored on the worker), then time the scoring alone."""
    t = time.perf_counter()
    with D.connect(f"local:{n}") as c:  # exactly what --dask local:N starts
        c.wait_for_workers(n)
        start = time.perf_counter() - t
        ref = D.model_ref(MODEL, None, make_settings(**opts))
        t = time.perf_counter()
        c.run(lambda: ref.load() and None)  # the per-worker fixed cost: import the backend, load the model
        c.run(run_single, vcf, fa, tsv + ".warm", {**opts, "variant_ids": ["v0"]})  # first-call costs, per worker
        load = time.perf_counter() - t
        t, cpu0, wcpu0 = time.perf_counter(), time.process_time(), c.run(time.process_time)
        score_variants(MODEL, vcf, fa, tsv=tsv, quiet=True, return_table=False, client=c, chunks_per_task=per_task,
                       **opts)
        score = time.perf_counter() - t
        wcpu = sum(c.run(time.process_time).values()) - sum(wcpu0.values())
        return {"start": start, "load": load, "score": score, "cpu": wcpu + time.process_time() - cpu0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=400)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--method", default="deeplift")
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--chunks-per-task", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--one-thread-only", action="store_true",
                    help="skip the single-process run with PyTorch's default threads (slow on a loaded machine)")
    args = ap.parse_args()
    opts = dict(method=args.method, chunk_size=args.chunk_size)
    n = args.records
    with tempfile.TemporaryDirectory() as d:
        vcf, fa = write_inputs(Path(d), n)
        print(f"{n} records, sim_torch, method {args.method}, chunk size {args.chunk_size}, "
              f"{args.chunks_per_task} chunk(s) per task; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        run_single(vcf, fa, f"{d}/warm.tsv", {**opts, "variant_ids": ["v0"]})  # imports, first model load
        threads, singles = torch.get_num_threads(), []
        if not args.one_thread_only:
            singles.append((f"single {threads} thr", min((run_single(vcf, fa, f"{d}/single.tsv", opts)
                                                          for _ in range(args.repeats)), key=lambda r: r["score"])))
        torch.set_num_threads(1)  # as in a Dask worker (LocalCluster sets OMP_NUM_THREADS=1 in each)
        singles.append(("single 1 thr", min((run_single(vcf, fa, f"{d}/single.tsv", opts) for _ in range(args.repeats)),
                                            key=lambda r: r["score"])))
        torch.set_num_threads(threads)
        single = singles[0][1]["score"]
        print(f"{'run':>16} {'seconds':>8} {'records/s':>10} {'speed-up':>9} {'CPU s':>7} {'cluster start s':>16} "
              f"{'warm-up s':>13}")
        for name, r in singles:
            print(f"{name:>16} {r['score']:>8.1f} {n / r['score']:>10.2f} {single / r['score']:>9.2f} "
                  f"{r['cpu']:>7.1f} {'-':>16} {'-':>13}")
        for w in args.workers:
            res = min((run_dask(w, vcf, fa, f"{d}/dask{w}.tsv", opts, args.chunks_per_task)
                       for _ in range(args.repeats)), key=lambda r: r["score"])
            same = Path(f"{d}/dask{w}.tsv").read_bytes() == Path(f"{d}/single.tsv").read_bytes()
            print(f"{'dask ' + str(w) + ' worker(s)':>16} {res['score']:>8.1f} {n / res['score']:>10.2f} "
                  f"{single / res['score']:>9.2f} {res['cpu']:>7.1f} {res['start']:>16.1f} {res['load']:>13.1f}"
                  f"   TSV {'identical' if same else 'DIFFERS'}")
        print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
