"""Fuzzed VCF records through the real ``score-variants`` CLI: nothing lost, nothing misannotated.

Valid records of the simulated example are mutated (seeded) in every field the reader looks at -- REF/ALT
strings, positions (huge, negative, not numbers), contigs, junk and control characters in the other columns,
blank and comment lines among the records -- and the whole file is scored once with a fast method. The oracle
is the input itself: every record line comes back, in order, with one status per ALT; the TSV and the VCF agree
row by row; and bcftools (htslib, through pysam) reads every output without a warning or an error.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import urllib.parse

import numpy as np
import pysam
import pysam.bcftools
import pytest

from kipoi_dfim.output.tsv import read_tsv
from kipoi_dfim.variants import NOT_SCORED, STATUS_OK

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "model_specs", "sim_torch")
VCF = os.path.join(ROOT, "example_vcfs", "sim", "sim_variants.vcf")
FASTA = os.path.join(ROOT, "example_vcfs", "sim", "sim_contigs.fa")
STATUSES = set(NOT_SCORED) | {STATUS_OK}

_ALLELES = ["A", "C", "G", "T", "N", "a", "AC", "ACGT", "*", ".", "<DEL>", "<*>", "A[sim01:5[", "X", "AC,T",
            "A,C,G", "", "R", "A,*"]
_JUNK = ["", ".", "x\x01y", "a b", "\x7f", "é", "=;;", "K=1;K=2", "\x0b", "DP=abc", "1e309", "-", "\x1b[31m"]


def _positions(rng: np.random.Generator, pos: str) -> str:
    return str(rng.choice([pos, "0", "-5", "1", "400", "401", "194", str(2**31 + 194), str(2**32 + 194),
                           str(2**62 + 1), str(2**63 + 5), "1e3", "abc", "+5", "00194", ""]))


def mutate(rng: np.random.Generator, line: str) -> list[str]:
    """One fuzzed line (or a few: blank / comment lines may precede it) from a valid record line."""
    cols = line.split("\t")
    out = []
    r = rng.random()
    if r < 0.02:
        out.append("")
    elif r < 0.04:
        out.append("# a comment " + str(rng.integers(100)))
    elif r < 0.05:
        out.append("##meta=1")
    k = rng.integers(0, 8)
    if k == 0:
        cols[1] = _positions(rng, cols[1])
    elif k == 1:
        cols[3] = str(rng.choice(_ALLELES))
    elif k == 2:
        cols[4] = str(rng.choice(_ALLELES))
    elif k == 3:
        cols[0] = str(rng.choice(["sim01", "chrsim02", "sim99", "1", "x y", "sim03", "MT"]))
    elif k == 4:
        cols[int(rng.choice([2, 5, 6, 7]))] = str(rng.choice(_JUNK))
    elif k == 5:
        cols[7] += "\r" + str(rng.choice(_JUNK))  # a lone carriage return inside INFO
    elif k == 6:
        cols += [str(rng.choice(_JUNK))] * int(rng.integers(1, 3))
    out.append("\t".join(cols))
    return out


def make_fuzz_vcf(path: str, n: int, seed: int) -> list[str]:
    """Write ``n`` fuzzed records; returns the record lines (without blank/comment lines) in file order."""
    with open(VCF) as fh:
        lines = fh.read().splitlines()
    header = [ln for ln in lines if ln.startswith("#")]
    base = [ln for ln in lines if not ln.startswith("#")]
    rng = np.random.default_rng(seed)
    body, records = [], []
    for i in range(n):
        new = mutate(rng, base[i % len(base)])
        body += new
        records.append(new[-1])
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("\n".join(header + body) + "\n")
    return records


def _n_alts(alt: str) -> int:
    return 1 if alt in (".", "") else len(alt.split(","))


def _bcftools_clean(path: str) -> bytes:
    """bcftools view of ``path`` (bytes: htslib splits lines on \\n only); fails on any warning or error."""
    dst = path + ".bcftools.vcf"
    code = "import sys, pysam.bcftools as b; b.view('-o', sys.argv[2], sys.argv[1], catch_stdout=False)"
    r = subprocess.run([sys.executable, "-c", code, path, dst], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr.strip() == "", f"bcftools on {path}: rc {r.returncode}: {r.stderr[:800]}"
    with open(dst, "rb") as fh:
        return fh.read()


def run_fuzz(tmp_path, n: int, seed: int) -> None:
    vcf = str(tmp_path / "fuzz.vcf")
    records = make_fuzz_vcf(vcf, n, seed)
    out, tsv = str(tmp_path / "out.vcf.gz"), str(tmp_path / "out.tsv")
    env = dict(os.environ, PYTHONPATH=ROOT, TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "kipoi_dfim.cli", "score-variants", MODEL, "--vcf", vcf, "--fasta",
                        FASTA, "-o", out, "--tsv", tsv, "--method", "grad_input", "--window", "5", "--quiet",
                        "--chunk-size", "256"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr

    # TSV: every record in order, one row per ALT, each with a known status
    df = read_tsv(tsv)
    want_rec = np.repeat(np.arange(n), [_n_alts(rec.split("\t")[4]) for rec in records])
    np.testing.assert_array_equal(df["vcf_record"].to_numpy(int), want_rec)
    assert set(df["status"]) <= STATUSES, set(df["status"]) - STATUSES
    for k in np.nonzero(df["status"].to_numpy() == STATUS_OK)[0][:200]:  # scored rows are the records' alleles
        cols = records[int(df["vcf_record"].iloc[k])].split("\t")
        assert (df["chrom"].iloc[k], int(df["pos"].iloc[k]), df["ref"].iloc[k]) == (cols[0], int(cols[1]), cols[3])
        assert df["alt"].iloc[k] == cols[4].split(",")[int(df["alt_index"].iloc[k])]

    # VCF: the same records in the same order, DFIM_STATUS = the TSV's statuses per ALT
    with gzip.open(out, "rt", encoding="utf-8", newline="\n") as fh:
        body = [ln.rstrip("\n") for ln in fh if not ln.startswith("#")]
    assert len(body) == n
    statuses = df.groupby("vcf_record", sort=True)["status"].apply(list)
    with open(tsv) as fh:  # maxAbsFIS as the TSV prints it ('' when not scored)
        cells = [ln.rstrip("\n").split("\t") for ln in fh]
    k_rec, k_max = cells[0].index("vcf_record"), cells[0].index("max_abs_fis")
    maxabs: dict[int, list[str]] = {}
    for c in cells[1:]:
        maxabs.setdefault(int(c[k_rec]), []).append(c[k_max])
    for i, (line, rec) in enumerate(zip(body, records, strict=True)):
        got, want = line.split("\t"), rec.split("\t")
        info = dict(f.split("=", 1) for f in got[7].split(";") if f.startswith("DFIM_"))
        orig = dict(o.split(":", 1) for o in info.get("DFIM_ORIG", "").split(",") if o and not o.startswith("INFO"))
        for c, name in ((0, "CHROM"), (1, "POS"), (6, "FILTER")):  # replaced fields are kept in DFIM_ORIG
            assert (urllib.parse.unquote(orig[name]) if name in orig else got[c]) == want[c], (i, name, line, rec)
        assert got[2:6] == want[2:6], (i, line, rec)
        assert info["DFIM_STATUS"].split(",") == statuses[i], (i, line)
        if "DFIM_interaction_MAXABS" in info:  # the scores too: one value per ALT, the TSV's
            want_max = [m if m else "." for m in maxabs[i]]
            assert info["DFIM_interaction_MAXABS"].split(",") == want_max, (i, line)
        else:
            assert not any(maxabs[i]), (i, line)

    # bcftools reads both outputs without a word (the TSV is not a VCF; the annotated VCF and its index are)
    text = _bcftools_clean(out)
    assert sum(1 for ln in text.split(b"\n") if ln and not ln.startswith(b"#")) == n
    pysam.VariantFile(out).close()


def test_fuzz_2000_records(tmp_path):
    run_fuzz(tmp_path, 2000, seed=11)


@pytest.mark.skipif(os.environ.get("KIPOI_DFIM_SLOW") != "1", reason="10,000 records: KIPOI_DFIM_SLOW=1")
def test_fuzz_10000_records(tmp_path):
    run_fuzz(tmp_path, 10_000, seed=12)
