"""score_variants end to end on a hand-built model whose FIS is known in closed form.

The model is bilinear: f(x) = a(x) * b(x) with a = sum over region A of Wa * x and b likewise over region B.
With gradient x input, C_X[t] = Wb[t, x_t] * a(x) for t in B, so mutating a base s in A from r to g gives
FIS(t) = C_X[t] - C_X'[t] = -Wb[t, x_t] * (Wa[s, g] - Wa[s, r]) for t in B, and exactly 0 everywhere else.
"""

import csv
import gzip
import os
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pysam
import pysam.bcftools  # noqa: F401 - registers pysam.bcftools
import pytest
import torch
from torch import nn

import kipoi_dfim
from kipoi_dfim.output.tsv import TSV_COLUMNS
from kipoi_dfim.sequence import ALPHABET, one_hot

L = 60
A = range(20, 26)
B = range(32, 38)


class Bilinear(nn.Module):
    def __init__(self, wa, wb):
        super().__init__()
        self.wa = nn.Parameter(torch.tensor(wa))
        self.wb = nn.Parameter(torch.tensor(wb))

    def forward(self, x):  # (N, 4, L)
        a = (x * self.wa).sum((1, 2))
        b = (x * self.wb).sum((1, 2))
        return (a * b)[:, None]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("scoring")
    rng = np.random.default_rng(0)
    wa = np.zeros((4, L), np.float32)
    wb = np.zeros((4, L), np.float32)
    wa[:, list(A)] = rng.normal(size=(4, len(A)))
    wb[:, list(B)] = rng.normal(size=(4, len(B)))
    model = Bilinear(wa, wb)
    seq = "".join(rng.choice(list("ACGT"), L))
    (d / "ref.fa").write_text(f">c1\n{seq}\n")
    records = []
    for k, pos0 in enumerate([21, 23, 5, 50]):  # two in A, two in the background
        r = seq[pos0]
        g = ALPHABET[(ALPHABET.index(r) + 1 + k % 3) % 4]
        records.append(("c1", pos0 + 1, f"v{k}", r, g, f"ORIG={k}"))
    records.append(("c1", 40, "indel1", seq[39], seq[39] + "A", "ORIG=4"))
    records.append(("c1", 22, "multi", seq[21], ",".join(b for b in ALPHABET if b != seq[21]), "ORIG=5"))
    records.sort(key=lambda r: r[1])  # a sorted VCF gets a tabix index
    header = ["##fileformat=VCFv4.2", f"##contig=<ID=c1,length={L}>",
              '##INFO=<ID=ORIG,Number=1,Type=Integer,Description="record number">',
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    body = [f"{c}\t{p}\t{i}\t{r}\t{a}\t50\tPASS\t{info}" for c, p, i, r, a, info in records]
    (d / "in.vcf").write_text("\n".join(header + body) + "\n")
    return {"dir": d, "model": model, "wa": wa, "wb": wb, "seq": seq, "records": records}


def _expected(case, pos0, g):
    seq, wa, wb = case["seq"], case["wa"], case["wb"]
    r = seq[pos0]
    delta = wa[ALPHABET.index(g), pos0] - wa[ALPHABET.index(r), pos0]
    fis = np.zeros(L)
    for t in B:
        fis[t] = -wb[ALPHABET.index(seq[t]), t] * delta
    win = [t for t in range(pos0 - 15, pos0 + 16) if t != pos0 and 0 <= t < L]
    k = max(win, key=lambda t: abs(fis[t]))
    return abs(fis[k]), k - pos0, seq[k], fis[k]


def _score(case, **kw):
    m = kipoi_dfim.load_model(case["model"], seq_len=L, layout="(4,L)")
    d = case["dir"]
    return kipoi_dfim.score_variants(m, str(d / "in.vcf"), str(d / "ref.fa"), method="grad_input", quiet=True, **kw)


def test_fis_matches_closed_form_and_no_record_is_dropped(case):
    d = case["dir"]
    df = _score(case, out=str(d / "out.vcf.gz"), tsv=str(d / "out.tsv"), maps=str(d / "out.h5"))
    assert list(df.columns[: len(TSV_COLUMNS)]) == list(TSV_COLUMNS)
    assert list(df.variant_id) == ["v2", "v0", "multi", "multi", "multi", "v1", "indel1", "v3"]
    assert list(df.status) == ["ok"] * 8
    snv = (df.status == "ok") & (df.alt.str.len() == 1)
    for _, row in df[snv].iterrows():
        pos0 = int(row.pos) - 1
        exp_abs, exp_off, exp_base, exp_fis = _expected(case, pos0, row.alt)
        assert row.max_abs_fis == pytest.approx(exp_abs, rel=1e-4, abs=1e-6)
        if exp_abs > 0:
            assert (row.max_fis_offset, row.max_fis_base) == (exp_off, exp_base)
            assert row.fis_at_max == pytest.approx(exp_fis, rel=1e-4)
    bg = df[df.variant_id.isin(["v2", "v3"])]
    assert (bg.max_abs_fis == 0).all()  # background bases interact with nothing
    # ISM diff = f(alt) - f(ref) from the model itself
    x = one_hot(case["seq"])[None]
    f = kipoi_dfim.load_model(case["model"], seq_len=L).predict
    for _, row in df[snv].iterrows():
        xa = x.copy()
        xa[0, int(row.pos) - 1] = one_hot(row.alt)[0]
        assert row["diff"] == pytest.approx(float(f(xa)[0, 0] - f(x)[0, 0]), rel=1e-4, abs=1e-6)
    # the insertion right of A and B moves only bases with zero weights: aligned FIS and ISM diff are exactly 0
    ins = df.set_index("variant_id").loc["indel1"]
    assert ins.max_abs_fis == pytest.approx(0, abs=1e-7) and ins["diff"] == pytest.approx(0, abs=1e-7)
    # without a null there are no p-values
    assert df.pval.isna().all() and df.qval.isna().all()


def test_vcf_output_keeps_records_and_bcftools_reads_it(case):
    d = case["dir"]
    _score(case, out=str(d / "o2.vcf.gz"), tsv=str(d / "o2.tsv"))
    assert os.path.exists(d / "o2.vcf.gz.tbi")
    with open(d / "in.vcf") as fh:
        src = [ln.rstrip("\n").split("\t") for ln in fh if not ln.startswith("#")]
    with gzip.open(d / "o2.vcf.gz", "rt") as fh:
        lines = fh.read().splitlines()
    out = [ln.split("\t") for ln in lines if not ln.startswith("#")]
    assert len(out) == len(src)
    for a, b in zip(src, out, strict=True):
        assert a[:7] == b[:7]
        assert b[7].startswith(a[7] + ";DFIM_STATUS=")
    indel = out[4][7]
    assert out[4][2] == "indel1"
    assert "DFIM_STATUS=ok" in indel and "DFIM_T0_MAXABS=0;" in indel  # indels are scored (aligned)
    assert out[2][2] == "multi"
    multi = dict(kv.split("=") for kv in out[2][7].split(";"))
    assert multi["DFIM_STATUS"] == "ok,ok,ok" and len(multi["DFIM_T0_MAXABS"].split(",")) == 3
    tsv = pd.read_csv(d / "o2.tsv", sep="\t")
    assert [float(v) for v in multi["DFIM_T0_MAXABS"].split(",")] == pytest.approx(
        list(tsv[tsv.variant_id == "multi"].max_abs_fis), rel=1e-5)
    # bcftools (htslib's own parser) reads every record and prints no warning
    err = d / "bcftools.err"
    with open(err, "w") as fh:
        r = subprocess.run([sys.executable, "-c", "import pysam.bcftools as b, sys; "
                            f"sys.stdout.write(b.view('-H', {str(d / 'o2.vcf.gz')!r}))"],
                           stdout=subprocess.PIPE, stderr=fh, text=True, check=True)
    assert len(r.stdout.splitlines()) == len(src)
    assert "warn" not in err.read_text().lower(), err.read_text()
    assert list(pysam.VariantFile(str(d / "o2.vcf.gz")).fetch("c1", 20, 30))  # tabix index works


def test_same_seed_same_output_whatever_batch_and_chunk_size(case):
    a = _score(case, null_shuffles=3, batch_size=1, chunk_size=1, all_alts=True)
    b = _score(case, null_shuffles=3, batch_size=64, chunk_size=100, all_alts=True)
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)
    assert a.pval.notna().sum() == 8 and a.qval.notna().sum() == 8
    c = _score(case, null_shuffles=3, seed=1, all_alts=True)
    assert not np.allclose(a.pval.dropna(), c.pval.dropna())  # the seed matters


def test_maps_h5_contract(case):
    d = case["dir"]
    df = _score(case, tsv=str(d / "m.tsv"), maps=str(d / "m.h5"), null_shuffles=2)
    with h5py.File(d / "m.h5") as h:
        n = len(df[df.status == "ok"])
        D = h["offsets"].shape[0]
        assert h.attrs["window"] == 15 and D == 2 * h.attrs["flank"] + 1
        for k in ("seq_ref", "seq_alt", "imp_ref", "imp_alt"):
            assert h[k].shape == (n, D, 4)
        assert h["fis"].shape == h["fis_pval"].shape == (n, D)
        rows = h["tsv_row"][:]
        np.testing.assert_allclose(h["max_abs_fis"][:], df.max_abs_fis.values[rows], rtol=1e-5)
        np.testing.assert_allclose(h["pval"][:], df.pval.values[rows], rtol=1e-4)
        fis = h["fis"][:]
        expect = (h["imp_ref"][:] - h["imp_alt"][:]).sum(-1)
        centre = int(np.where(h["offsets"][:] == 0)[0][0])
        assert np.isnan(fis[:, centre]).all()
        keep = ~np.isnan(fis)
        np.testing.assert_allclose(fis[keep], expect[keep], atol=1e-6)
        assert [s.decode() if isinstance(s, bytes) else s for s in h["variant_id"][:]] == list(
            df.variant_id.values[rows])


def test_cli_runs_and_reports_bad_input(case, tmp_path):
    d = case["dir"]
    model_path = str(tmp_path / "bilinear.pt")
    torch.save(case["model"], model_path)
    r = subprocess.run([sys.executable, "-m", "kipoi_dfim.cli", "score-variants", model_path, "--vcf",
                        str(d / "in.vcf"), "--fasta", str(tmp_path / "missing.fa"), "-o", str(tmp_path / "x.vcf")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "error" in r.stderr and "missing.fa: FASTA file not found" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "x.vcf")
    # a pickled module whose class cannot be imported: named, not a traceback
    r = subprocess.run([sys.executable, "-m", "kipoi_dfim.cli", "score-variants", model_path, "--vcf",
                        str(d / "in.vcf"), "--fasta", str(d / "ref.fa"), "-o", str(tmp_path / "x.vcf")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "bilinear.pt: cannot load the pickled torch module" in r.stderr, r.stderr


def test_tsv_written_atomically_on_failure(case, tmp_path):
    out = tmp_path / "t.tsv"
    out.write_text("old\n")
    with pytest.raises(kipoi_dfim.errors.InputError):
        _score(case, tsv=str(out), window=0)
    assert out.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["t.tsv"]
    with open(case["dir"] / "in.vcf") as fh:
        assert sum(1 for _ in csv.reader(fh)) > 0


def test_bgzipped_vcf_input_and_missing_fai(case, tmp_path):
    d = case["dir"]
    gz = tmp_path / "in.vcf.gz"
    pysam.tabix_compress(str(d / "in.vcf"), str(gz))
    fa = tmp_path / "ref.fa"
    fa.write_text((d / "ref.fa").read_text())  # no .fai: it is built
    m = kipoi_dfim.load_model(case["model"], seq_len=L, layout="(4,L)")
    a = kipoi_dfim.score_variants(m, str(gz), str(fa), method="grad_input", quiet=True)
    b = _score(case)
    pd.testing.assert_frame_equal(a, b)
    assert os.path.exists(str(fa) + ".fai")


@pytest.mark.parametrize("method,kw", [("integrated_gradients", {"steps": 8}),
                                       ("integrated_gradients", {"baseline": "shuffle", "steps": 4, "n_refs": 2}),
                                       ("ism", {})])
def test_every_method_scores_variants(case, method, kw):
    m = kipoi_dfim.load_model(case["model"], seq_len=L, layout="(4,L)")
    d = case["dir"]
    df = kipoi_dfim.score_variants(m, str(d / "in.vcf"), str(d / "ref.fa"), method=method, quiet=True, **kw)
    ok = df[df.status == "ok"]
    # a background base interacts with nothing whatever the method; motif-A bases interact with motif B
    assert (ok[ok.variant_id.isin(["v2", "v3"])].max_abs_fis.abs() < 1e-5).all()
    a = ok[ok.variant_id.isin(["v0", "v1"])]
    assert (a.max_abs_fis > 1e-3).all()
    assert all(int(p) - 1 + int(o) in B for p, o in zip(a.pos, a.max_fis_offset, strict=True))


def test_rc_averages_ism_scores_with_the_reverse_complement(case):
    df = _score(case, rc=True)
    fwd = _score(case)
    f = kipoi_dfim.load_model(case["model"], seq_len=L).predict
    x = one_hot(case["seq"])[None]
    x_rc = x[:, ::-1, ::-1].copy()
    ok = df[df.status == "ok"]
    expected_ref = (f(x)[0, 0] + f(x_rc)[0, 0]) / 2
    assert ok.ref_pred.values == pytest.approx(np.full(len(ok), expected_ref), rel=1e-5)
    for _, row in ok.iterrows():
        xa = x.copy()
        xa[0, int(row.pos) - 1] = one_hot(row.alt)[0]
        exp_alt = (f(xa)[0, 0] + f(xa[:, ::-1, ::-1].copy())[0, 0]) / 2
        assert row.alt_pred == pytest.approx(float(exp_alt), rel=1e-5)
    # the DFIM columns do not depend on --rc
    pd.testing.assert_series_equal(df.max_abs_fis, fwd.max_abs_fis)


@pytest.mark.parametrize("pvalue, words", [("tail", "GPD tail model"), ("empirical", "(empirical (1+b)/(1+M))"),
                                           ("gaussian", "Gaussian fit")])
def test_vcf_header_names_the_pvalue_test(pvalue, words):
    """The INFO description of _P says which test made the p-values (it said "Gaussian fit" for every test)."""
    from kipoi_dfim.output.vcf import info_header_lines

    lines = info_header_lines(["t1"], 15, "deeplift", with_null=True, pvalue=pvalue)
    (p_line,) = [h for h in lines if "ID=DFIM_t1_P," in h]
    assert words in p_line
    assert ("Gaussian" in p_line) == (pvalue == "gaussian")
