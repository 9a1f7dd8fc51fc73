"""Peak memory of score_variants against the number of VCF records: the VCF is streamed, not read whole.

Writes a synthetic VCF of N SNVs on one random contig and scores it with a tiny PyTorch model (100 bp input,
gradient x input, so the model costs little and the pipeline's own memory shows), in a child process per N,
and prints the peak resident set size of each. Bounded streaming shows as a flat RSS when N grows.

    python benchmarks/bench_streaming_memory.py --records 10000 100000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from torch import nn
import kipoi_dfim
torch.manual_seed(0)
L = 100
net = nn.Sequential(nn.Conv1d(4, 8, 9), nn.ReLU(), nn.MaxPool1d(4), nn.Flatten(), nn.Linear(8 * 23, 1), nn.Sigmoid())
m = kipoi_dfim.load_model(net, seq_len=L)
d = sys.argv[1]
t = time.time()
kipoi_dfim.score_variants(m, d + "/in.vcf", d + "/ref.fa", out=d + "/out.vcf.gz", tsv=d + "/out.tsv",
                          method="grad_input", quiet=True, return_table=False, batch_size=256, chunk_size=256,
                          null=sys.argv[2], motifs=sys.argv[3])
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.time() - t, "peak_rss_mb": rss}))
"""


def write_inputs(d: Path, n: int, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    contig = max(1000, 2 * n + 200)
    seq = "".join(rng.choice(list("ACGT"), contig))
    (d / "ref.fa").write_text(">c1\n" + "\n".join(seq[i : i + 80] for i in range(0, contig, 80)) + "\n")
    pos = np.sort(rng.choice(np.arange(100, contig - 100), n, replace=False))
    with open(d / "in.vcf", "w") as fh:
        fh.write(f"##fileformat=VCFv4.2\n##contig=<ID=c1,length={contig}>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for i, p in enumerate(pos):
            r = seq[p - 1]
            a = "ACGT"[("ACGT".index(r) + 1) % 4]
            fh.write(f"c1\t{p}\tv{i}\t{r}\t{a}\t.\t.\t.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--null", default="pooled", choices=["none", "pooled"], help="null of the run (default pooled)")
    ap.add_argument("--motifs", default="jaspar", help="motif annotation (default jaspar; none to skip)")
    args = ap.parse_args()
    print(f"{'records':>10} {'seconds':>9} {'records/s':>10} {'peak RSS MB':>12}")
    for n in args.records:
        with tempfile.TemporaryDirectory() as d:
            write_inputs(Path(d), n)
            t = time.time()
            r = subprocess.run([sys.executable, "-c", CHILD, d, args.null, args.motifs], capture_output=True, text=True,
                               check=True)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"{n:>10} {res['seconds']:>9.1f} {n / res['seconds']:>10.0f} {res['peak_rss_mb']:>12.0f}"
                  f"   (wall incl. start-up {time.time() - t:.0f} s)")


if __name__ == "__main__":
    main()
