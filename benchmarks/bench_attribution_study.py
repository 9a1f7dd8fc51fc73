"""What scripts/attribution_study.py spends its time on: training and ISM, by torch thread count and batch size.

All settings interleaved in one process, best of ``--repeats`` rounds, wall and process-CPU seconds (CPU counts
every thread, spin-waiting included). Training: one epoch (Adam, batch 64) of the study's CNN on ``--n-train``
sequences of the ``lowest`` data set. ISM: ``kipoi_dfim.attribution.importance(..., "ism")`` of ``--n-ism``
sequences (3 x 600 mutants each) through ``load_model(net, batch_size=B)`` with importance batch B.

    python benchmarks/bench_attribution_study.py              # ~2-5 min on the shared 2-core machine
    python benchmarks/bench_attribution_study.py --quick      # 1 round, smaller
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))

import attribution_study as study  # noqa: E402

from kipoi_dfim import load_model  # noqa: E402


def _timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=2000, help="training sequences (one epoch on 80 %)")
    ap.add_argument("--n-ism", type=int, default=4, help="sequences scored by ISM")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 512, 2048])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="500 training sequences, 2 ISM sequences, 1 round")
    a = ap.parse_args(argv)
    if a.quick:
        a.n_train, a.n_ism, a.repeats = 500, 2, 1
    torch.use_deterministic_algorithms(True)
    load0 = os.getloadavg()
    x, y, _ = study.make_dataset("lowest", max(a.n_train, a.n_ism), 600, seed=3000)
    torch.manual_seed(0)
    net = study.make_cnn(600)
    best: dict[tuple, tuple[float, float]] = {}
    for _ in range(a.repeats):
        for th in a.threads:
            torch.set_num_threads(th)
            t = _timed(lambda: study.train(x[: a.n_train], y[: a.n_train], 3, 1))
            key = ("train 1 epoch", th, 64)
            best[key] = min(best.get(key, t), t)
            for bs in a.batch_sizes:
                model = load_model(net, seq_len=600, layout="(4,L)", batch_size=bs)
                t = _timed(lambda model=model, bs=bs: study.scores(model, x[: a.n_ism], "ism", 0, bs))
                key = ("ism", th, bs)
                best[key] = min(best.get(key, t), t)
    print(f"loadavg start {load0}, end {os.getloadavg()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"training: {int(0.8 * a.n_train)} sequences, 1 epoch; ISM: {a.n_ism} sequences x 1800 mutants; "
          f"best of {a.repeats}\n")
    print("| step | threads | batch | wall s | CPU s | wall ratio to 1 thread, same batch |")
    print("|---|---|---|---|---|---|")
    for (step, th, bs), (w, c) in sorted(best.items()):
        ref = best.get((step, a.threads[0], bs), (np.nan, np.nan))[0]
        print(f"| {step} | {th} | {bs} | {w:.2f} | {c:.2f} | {w / ref:.2f} |")


if __name__ == "__main__":
    main()
