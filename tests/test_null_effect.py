"""The effect-bounded null (--null-max-effect TAU): shuffled backgrounds on which the substitution itself changes
the model's output by less than TAU (docs/statistics.md, section 3).

Checked against independent predictions of the model (the oracle), for chunk independence, and for
calibration null vs null on the real sim_torch model (the design's H0: the observed window is one more
background the rule accepts)."""

import numpy as np
import pytest
from scipy.stats import kstest

import kipoi_dfim
from kipoi_dfim.errors import InputError
from kipoi_dfim.null import bh_qvalues, effect_bounded_backgrounds, empirical_pvalues_upper, tail_pvalues, variant_null
from kipoi_dfim.settings import Settings
from kipoi_dfim.shuffle import dinucleotide_shuffle, variant_seeds
from kipoi_dfim.simulation import simulate_dataset
from kipoi_dfim.variants import Fasta, Variant, iter_chunks, windows

SIM = "model_specs/sim_torch"
VCF = "example_vcfs/sim/sim_variants.vcf"
FA = "example_vcfs/sim/sim_contigs.fa"
TAU = 0.5


@pytest.fixture(scope="module")
def model():
    return kipoi_dfim.load_model(SIM)


@pytest.fixture(scope="module")
def interacting(model):
    """The 20 interacting SNVs of the simulated example (a core base of GATA or the E-box, partner nearby)."""
    fa = Fasta(FA)
    vs = [v for _, chunk in iter_chunks(VCF, fa, model.seq_len, 64) for v in chunk
          if v.ok and (v.vcf_id or "").startswith(("int_gata", "int_tal1"))]
    X, Xalt = windows(vs, fa, model.seq_len)
    return vs, X, Xalt


def _effect(model, nref, nalt):
    return np.abs(model.predict(nalt)[:, 0].astype(np.float64) - model.predict(nref)[:, 0])


def test_kept_backgrounds_obey_the_bound_and_are_the_first_accepted_shuffles(model, interacting):
    vs, X, Xalt = interacting
    K = 8
    st = Settings(null_shuffles=K, null_max_effect=TAU, motifs="none")
    nref, nalt, eff = effect_bounded_backgrounds(model, X, Xalt, vs, K, [0], st)
    assert nref.shape == nalt.shape == (len(vs) * K, model.seq_len, 4)
    # the oracle: the model's own predictions of the kept windows, computed here independently
    np.testing.assert_allclose(eff, _effect(model, nref, nalt), atol=1e-4)
    assert eff.max() < TAU
    # the plain null of the same variants (seed stream 1) holds backgrounds the bound removes: shuffles that
    # rebuild a motif around the kept base, where the substitution has an effect of its own
    plain = dinucleotide_shuffle(X, n=K, seed=variant_seeds(0, vs, 1))  # (N, K, L, 4)
    for i, v in enumerate(vs):
        plain[i, :, v.offset] = X[i, v.offset]
    pa = plain.copy()
    for i, v in enumerate(vs):
        pa[i, :, v.offset] = Xalt[i, v.offset]
    peff = _effect(model, plain.reshape(-1, model.seq_len, 4), pa.reshape(-1, model.seq_len, 4)).reshape(len(vs), K)
    assert (peff >= TAU).sum() >= 3, peff.max()
    # without rejection in the first round, a variant's bounded null is its plain null, in draw order
    for i in np.flatnonzero((peff < TAU).all(1))[:3]:
        np.testing.assert_array_equal(nref[i * K: (i + 1) * K], plain[i])
    # with rejection, the accepted plain backgrounds come first, in draw order
    i = int(np.flatnonzero((peff >= TAU).any(1))[0])
    acc = plain[i][peff[i] < TAU]
    np.testing.assert_array_equal(nref[i * K: i * K + len(acc)], acc)


def test_bounded_backgrounds_do_not_depend_on_the_other_variants(model, interacting):
    vs, X, Xalt = interacting
    st = Settings(null_shuffles=4, null_max_effect=TAU, motifs="none")
    a = effect_bounded_backgrounds(model, X[:6], Xalt[:6], vs[:6], 4, [0], st)
    for i in (1, 4):
        b = effect_bounded_backgrounds(model, X[i: i + 1], Xalt[i: i + 1], vs[i: i + 1], 4, [0], st)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x[i * 4: (i + 1) * 4], y)


def test_bad_bound_is_an_error_naming_the_option():
    for bad in (0, -1.0, float("nan"), "x"):
        with pytest.raises(InputError, match="--null-max-effect"):
            Settings(null_max_effect=bad)


def test_bounded_null_is_calibrated_null_vs_null(model):
    """H0 of the design: the observed window is one more shuffled background that the rule accepts. 80 SNVs in
    simulated grammar sequences; observed = 1 accepted background (seed 7), null = 10 further accepted
    backgrounds of each (seed 0). As in tests/test_calibration.py: one-sided KS (never smaller than uniform),
    two-sided KS among maxAbsFIS > 0, no BH discovery."""
    n, k = 80, 10
    x, _, _ = simulate_dataset(n, seed=41)
    rng = np.random.default_rng(41)
    pos = rng.integers(15, 185, n)
    alt = (x[np.arange(n), pos].argmax(-1) + rng.integers(1, 4, n)) % 4
    xa = x.copy()
    xa[np.arange(n), pos] = np.eye(4, dtype=np.float32)[alt]
    vs = [Variant(record_index=i, alt_index=0, line=i + 1, chrom="s", pos=int(p) + 1,
                  ref="ACGT"[int(x[i, p].argmax())], alt="ACGT"[int(alt[i])], vcf_id=None, offset=int(p))
          for i, p in enumerate(pos)]
    st = Settings(method="deeplift", references="gc", null_shuffles=k, null_max_effect=TAU, motifs="none")
    obs = variant_null(model, x, xa, vs, [0], st.replace(seed=7), K=1)[0][0]
    null = variant_null(model, x, xa, vs, [0], st, K=k)[0][0]
    assert null.max() > 0.05
    on = obs > 0
    assert on.sum() > 40
    for pv in (empirical_pvalues_upper, tail_pvalues):
        p = pv(obs, null)
        assert kstest(p, "uniform", alternative="greater").pvalue > 0.01
        assert kstest(pv(obs[on], null[null > 0]), "uniform").pvalue > 0.01
        assert (bh_qvalues(p) < 0.05).sum() == 0


def test_option_reaches_the_pooled_null_and_output_is_chunk_and_batch_independent(model):
    kw = dict(method="grad_input", null="pooled", null_size=40, motifs="none", quiet=True)
    a = kipoi_dfim.score_variants(model, VCF, FA, chunk_size=3, null_max_effect=TAU, **kw)
    b = kipoi_dfim.score_variants(model, VCF, FA, chunk_size=64, batch_size=17, null_max_effect=TAU, **kw)
    np.testing.assert_array_equal(a["pval"].to_numpy(), b["pval"].to_numpy())
    plain = kipoi_dfim.score_variants(model, VCF, FA, chunk_size=64, **kw)
    assert a["pval"].notna().sum() > 30
    assert not np.array_equal(a["pval_empirical"].to_numpy(), plain["pval_empirical"].to_numpy())
