"""The real example: SPI1 bQTLs (hg19 windows) scored with the paper's GATA1/GATA2/TAL1 K562 model via the CLI.

Oracles: kipoi's own KerasModel.predict_on_batch for the ISM scores (kipoi-veff formulas), DeepLIFT's
summation-to-delta for the importance, and the same numbers whatever the batch size.
"""

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kipoi_dfim
from kipoi_dfim.sequence import one_hot
from kipoi_dfim.variants import Fasta

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "model_specs" / "tal_gata_k562"
EX = ROOT / "example_vcfs" / "spi1_bqtls"
N_RECORDS = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("spi1")
    lines = (EX / "spi1_bqtls.vcf").read_text().splitlines()
    head = [ln for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if not ln.startswith("#")][:N_RECORDS]
    (d / "sub.vcf").write_text("\n".join(head + body) + "\n")
    cmd = [sys.executable, "-m", "kipoi_dfim.cli", "score-variants", str(MODEL), "--vcf", str(d / "sub.vcf"),
           "--fasta", str(EX / "spi1_bqtls_hg19_1kb.fa"), "-o", str(d / "out.vcf.gz"), "--tsv", str(d / "out.tsv"),
           "--n-refs", "4", "--null-shuffles", "2", "--batch-size", "7", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return d, pd.read_csv(d / "out.tsv", sep="\t")


def test_cli_scores_every_bqtl_for_every_task(run):
    d, df = run
    assert len(df) == N_RECORDS * 3
    assert set(df.target) == {"GATA1", "GATA2", "TAL1"}
    assert (df.status == "ok").all() and df["flags"].isna().all()  # QTL at index 500: no shift needed
    assert df.pval.between(0, 1).all() and df.qval.between(0, 1).all()
    assert (df.max_fis_offset.abs() <= 15).all() and (df.max_fis_offset != 0).all()
    with gzip.open(d / "out.vcf.gz", "rt") as fh:
        recs = [ln for ln in fh if not ln.startswith("#")]
    assert len(recs) == N_RECORDS
    assert all("DFIM_GATA1_MAXABS=" in r and "HG19=" in r for r in recs)


def test_ism_scores_equal_kipoi_predictions(run):
    _, df = run
    import kipoi
    from kipoi_veff.scores import Diff, Logit

    km = kipoi.get_model(str(MODEL), source="dir")
    fa = Fasta(EX / "spi1_bqtls_hg19_1kb.fa")
    first = df.drop_duplicates("variant_id")
    ref = one_hot([fa.fetch(c, 0, 1000) for c in first.chrom])
    alt = ref.copy()
    alt[:, 500] = one_hot("".join(first.alt))
    to_th = lambda x: x.transpose(0, 2, 1)[:, None]  # noqa: E731 - (N, 1, 4, L), the model's Theano layout
    pr = np.concatenate(km.predict_on_batch(to_th(ref)), axis=1)
    pa = np.concatenate(km.predict_on_batch(to_th(alt)), axis=1)
    for k, t in enumerate(["GATA1", "GATA2", "TAL1"]):
        sub = df[df.target == t].set_index("variant_id").loc[first.variant_id]
        np.testing.assert_allclose(sub.ref_pred, pr[:, k], rtol=1e-4)
        np.testing.assert_allclose(sub["diff"], Diff()(pr, pa)[:, k], rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(sub["logit"], Logit()(pr, pa)[:, k], rtol=1e-3, atol=1e-5)


def test_same_numbers_whatever_the_batch_size(run):
    d, df = run
    py = kipoi_dfim.score_variants(str(MODEL), d / "sub.vcf", EX / "spi1_bqtls_hg19_1kb.fa", n_refs=4,
                                   null_shuffles=2, batch_size=64, chunk_size=3, quiet=True)
    for col in ("max_abs_fis", "fis_at_max", "pval", "qval", "ref_pred", "logit"):
        np.testing.assert_allclose(py[col], df[col], rtol=2e-4, atol=1e-6, err_msg=col)
    assert list(py.max_fis_offset) == list(df.max_fis_offset)


def test_deeplift_on_the_real_model_sums_to_delta():
    m = kipoi_dfim.load_model(str(MODEL))
    fa = Fasta(EX / "spi1_bqtls_hg19_1kb.fa")
    x = one_hot([fa.fetch(c, 0, 1000) for c in list(fa.lengths)[:3]])
    refs = kipoi_dfim.dinucleotide_shuffle(x, 3, seed=0)
    for t in range(3):
        c = m.deeplift(x, refs, t)
        delta = m.predict(x)[:, t] - m.predict(refs.reshape(-1, 1000, 4))[:, t].reshape(3, 3).mean(1)
        np.testing.assert_allclose(c.sum((1, 2)), delta, rtol=1e-3, atol=1e-4)
        assert np.all(c[x == 0] == 0)  # contributions only at observed bases
