"""The pooled null (--null pooled): M backgrounds for the whole file, stratified by substitution class, chosen
from the seed and the file only (never from chunking), scored with the same code as the per-variant null."""

import numpy as np
import pytest

import kipoi_dfim
from kipoi_dfim.null import PooledNullSampler, substitution_class
from kipoi_dfim.variants import Variant

SIM = "model_specs/sim_torch"
VCF = "example_vcfs/sim/sim_variants.vcf"
FA = "example_vcfs/sim/sim_contigs.fa"


def _variants(n, rng):
    out = []
    for i in range(n):
        ref = "ACGT"[i % 4] if i % 10 else "AC"
        alt = "ACGT"[(i // 4 + 1 + i) % 4] if len(ref) == 1 else "GT"
        if alt == ref:
            alt = "ACGT"[("ACGT".index(ref) + 1) % 4]
        out.append(Variant(record_index=i, alt_index=0, line=i + 10, chrom="c", pos=i + 1, ref=ref, alt=alt,
                           vcf_id=None))
    return out


def test_sampler_is_exact_stratified_and_independent_of_how_the_file_is_offered():
    vs = _variants(500, np.random.default_rng(0))
    a = PooledNullSampler(60, seed=4)
    a.offer(vs)
    b = PooledNullSampler(60, seed=4)
    for k in range(0, 500, 7):  # other chunks
        b.offer(vs[k : k + 7])
    da, db = a.draws(), b.draws()
    assert [(v.record_index, k) for v, k in da] == [(v.record_index, k) for v, k in db]
    assert sum(k for _, k in da) == 60
    # proportional allocation per class (largest remainders)
    counts = {}
    for v in vs:
        counts[substitution_class(v)] = counts.get(substitution_class(v), 0) + 1
    got = {}
    for v, k in da:
        got[substitution_class(v)] = got.get(substitution_class(v), 0) + k
    for c, n in counts.items():
        assert abs(got.get(c, 0) - 60 * n / 500) < 1
    # another seed, another draw
    c = PooledNullSampler(60, seed=5)
    c.offer(vs)
    assert [v.record_index for v, _ in c.draws()] != [v.record_index for v, _ in da]


def test_small_file_cycles_its_variants():
    vs = _variants(8, np.random.default_rng(0))
    s = PooledNullSampler(20, seed=0)
    s.offer(vs)
    assert sum(k for _, k in s.draws()) == 20


@pytest.fixture(scope="module")
def sim_model():
    return kipoi_dfim.load_model(SIM)


def test_pooled_null_output_is_chunk_independent_and_matches_its_definition(sim_model):
    kw = dict(method="grad_input", null="pooled", null_size=30, quiet=True)
    a = kipoi_dfim.score_variants(sim_model, VCF, FA, chunk_size=3, **kw)
    b = kipoi_dfim.score_variants(sim_model, VCF, FA, chunk_size=64, **kw)
    np.testing.assert_array_equal(a["pval_empirical"].to_numpy(), b["pval_empirical"].to_numpy())
    ok = a["status"] == "ok"
    assert a.loc[ok, "pval_empirical"].notna().all()
    # empirical p = (1 + #null >= score) / (1 + M), M = 30
    k = a.loc[ok, "pval_empirical"] * 31
    assert np.allclose(k, np.round(k), atol=1e-3)
    # interacting variants are far out in the null; background ones are not
    truth = dict(line.split("\t")[:6:5] for line in open("example_vcfs/sim/sim_truth.tsv").read().splitlines()[1:])
    cls = a["variant_id"].map(truth)
    assert a.loc[ok & (cls == "interacting"), "pval_empirical"].median() < 0.1
    assert a.loc[ok & (cls == "background"), "pval_empirical"].median() > 0.2
