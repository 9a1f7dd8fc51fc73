"""What the null costs: a run without a null vs the pooled null (M backgrounds per file) vs the per-variant null
(K backgrounds per variant), on the same VCF, interleaved in one process, best of several repeats.

Usage::

    python benchmarks/bench_null.py [--n-variants 5000] [--null-size M] [--null-shuffles 10]
        [--method grad_input] [--repeats 2] [--skip-per-variant] [--null-max-effect 0.5]

The model is the shipped ``model_specs/sim_torch`` (200 bp); the VCF holds SNVs on random contigs written to a
temporary folder. The pooled null scores M backgrounds whatever the file size, so its cost ratio is about
``1 + M * c_null / (N * c_variant)``: a fixed cost that vanishes on large files, where the per-variant null
costs about ``1 + K`` times the plain run. ``--null-max-effect TAU`` adds the per-variant null with
effect-bounded backgrounds (extra cost: predicting the candidate shuffles). CPU time of the process is
reported beside wall time (the machine is shared; CPU time is less sensitive to other jobs).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import kipoi_dfim

ROOT = Path(__file__).resolve().parents[1]


def write_inputs(d: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """Contigs of 2 kb with an SNV every 20 bp in their middle (full 200 bp windows)."""
    rng = np.random.default_rng(seed)
    per = 50
    fa, vcf = d / "ref.fa", d / "in.vcf"
    lines, seqs = [], []
    for c in range((n + per - 1) // per):
        seq = "".join(rng.choice(list("ACGT"), 2000))
        seqs.append(f">c{c}\n{seq}\n")
        for k in range(min(per, n - c * per)):
            p = 500 + 20 * k
            alt = "ACGT"[("ACGT".index(seq[p]) + 1 + k % 3) % 4]
            lines.append(f"c{c}\t{p + 1}\tv{c}_{k}\t{seq[p]}\t{alt}\t.\t.\t.")
    fa.write_text("".join(seqs))
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "\n".join(lines) + "\n")
    return vcf, fa


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-variants", type=int, default=5000)
    ap.add_argument("--null-size", type=int, default=None, help="M (default: automatic, a sixth of the variants)")
    ap.add_argument("--null-shuffles", type=int, default=10)
    ap.add_argument("--method", default="grad_input")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-per-variant", action="store_true", help="the per-variant null takes (1+K)x as long")
    ap.add_argument("--skip-pooled", action="store_true")
    ap.add_argument("--null-max-effect", type=float, default=None, help="also the effect-bounded per-variant null")
    ap.add_argument("--references", default=None, help="DeepLIFT references (default: the method's own)")
    a = ap.parse_args(argv)
    m = kipoi_dfim.load_model(str(ROOT / "model_specs/sim_torch"))
    runs = {"none": {"null": "none"}, "pooled": {"null": "pooled", "null_size": a.null_size}}
    if not a.skip_per_variant:
        runs["per-variant"] = {"null": "per-variant", "null_shuffles": a.null_shuffles}
    if a.skip_pooled:
        del runs["pooled"]
    if a.null_max_effect is not None:
        runs["bounded"] = {"null": "per-variant", "null_shuffles": a.null_shuffles,
                           "null_max_effect": a.null_max_effect}
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        vcf, fa = write_inputs(Path(tmp), a.n_variants)
        for _ in range(a.repeats):
            for name, kw in runs.items():
                t = timed(lambda kw=kw: kipoi_dfim.score_variants(m, vcf, fa, method=a.method, quiet=True,
                                                                  references=a.references,
                                                                  return_table=False, **kw))
                best[name] = min(best.get(name, t), t, key=lambda x: x[0])
    print(f"{a.n_variants} variants, method {a.method}, sim_torch (200 bp), best of {a.repeats}")
    print(f"{'null':<24}{'wall s':>9}{'cpu s':>9}{'wall ratio':>12}{'cpu ratio':>11}")
    w0, c0 = best["none"]
    for name, (w, c) in best.items():
        m = a.null_size or "auto"
        label = name + (f" M={m}" if name == "pooled" else f" K={a.null_shuffles}" if name != "none" else "")
        label += f" TAU={a.null_max_effect:g}" if name == "bounded" else ""
        print(f"{label:<24}{w:9.1f}{c:9.1f}{w / w0:12.2f}{c / c0:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
