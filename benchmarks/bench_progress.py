"""How often the score-variants bar moves: every update of the bar of one real CLI run, timed.

Usage::

    python benchmarks/bench_progress.py                     # the demo: 123 SPI1 bQTLs, tal_gata_k562, K = 10
    python benchmarks/bench_progress.py -- model_specs/sim_torch --vcf example_vcfs/sim/sim_variants.vcf \\
        --fasta example_vcfs/sim/sim_contigs.fa --null-shuffles 10     # any score-variants arguments after --

Outputs go to a temporary folder. Printed: wall seconds, the number of updates and of records, whether the bar
was monotone and ended on the record count, the seconds between consecutive updates (median, 90th and 99th
percentile, maximum) and the seconds before the first one (model loading included).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from kipoi_dfim import scoring
from kipoi_dfim.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ["model_specs/tal_gata_k562", "--vcf", "example_vcfs/spi1_bqtls/spi1_bqtls.vcf",
        "--fasta", "example_vcfs/spi1_bqtls/spi1_bqtls_hg19_1kb.fa", "--null-shuffles", "10", "--seed", "0"]


def timed_updates(args: list[str]) -> tuple[float, float, list[tuple[float, float]]]:
    """Run ``kipoi-dfim score-variants ARGS`` in this process: (start, end, [(time, bar position)])."""
    events: list[tuple[float, float]] = []
    update = scoring.RecordBar.update

    def recording(self, n=1):
        out = update(self, n)
        if self.unit == "record":
            events.append((time.perf_counter(), float(self.n)))
        return out

    scoring.RecordBar.update = recording
    try:
        t0 = time.perf_counter()
        rc = main(["score-variants", *args])
        t1 = time.perf_counter()
    finally:
        scoring.RecordBar.update = update
    if rc:
        raise SystemExit(f"score-variants exited with {rc}")
    return t0, t1, events


def summary(t0: float, t1: float, events: list[tuple[float, float]]) -> str:
    ns = [n for _, n in events]
    gaps = sorted(b - a for (a, _), (b, _) in zip(events, events[1:], strict=False))

    def q(p: float) -> float:
        return gaps[min(len(gaps) - 1, int(p * len(gaps)))] if gaps else float("nan")

    return (f"wall {t1 - t0:.1f} s; {len(events)} updates for {ns[-1]:.0f} records; monotone "
            f"{ns == sorted(ns)}; seconds between updates: median {q(0.5):.2f}, p90 {q(0.9):.2f}, "
            f"p99 {q(0.99):.2f}, max {q(1.0):.2f}; first update after {events[0][0] - t0:.1f} s")


def run() -> None:
    extra = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else DEMO
    with tempfile.TemporaryDirectory(prefix="bench-progress-") as d:
        args = [*extra, "-o", f"{d}/out.vcf.gz", "--tsv", f"{d}/out.tsv"]
        print("kipoi-dfim score-variants " + " ".join(args), flush=True)
        print(summary(*timed_updates(args)))


if __name__ == "__main__":
    import os

    os.chdir(ROOT)
    run()
