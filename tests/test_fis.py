"""FIS / DFIM against models with a known answer, against tangermeme's dependency_map, and the null."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm
from torch import nn

import kipoi_dfim
from kipoi_dfim import fis as F
from kipoi_dfim import null as N
from kipoi_dfim.sequence import background_frequencies, one_hot

MOTIF_A, MOTIF_B, MOTIF_C = "GATAAG", "CAGCTG", "TGACTC"
L = 60
SPANS = [(5, 11), (25, 31), (45, 51)]  # A, B, C


def motif_conv(motifs: list[str], bias: float = -5.5) -> nn.Conv1d:
    """One filter per motif: +1 at the consensus base; with bias -5.5 only an exact match is positive (0.5)."""
    conv = nn.Conv1d(4, len(motifs), len(motifs[0]))
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(bias)
        for i, m in enumerate(motifs):
            for j, c in enumerate(m):
                conv.weight[i, "ACGT".index(c), j] = 1.0
    return conv


def and_model(length: int = L) -> nn.Sequential:
    """out = 3 relu(2a + 2b - 1.5) + relu(c), a/b/c = max motif hit (0.5 for an exact match, else 0).

    A and B interact (the first unit only fires when both are present), C is purely additive. With
    gradient x input the answer is exact: each of A's 6 bases has importance 3*2*1 = 6 when B is present
    and 0 when B is destroyed, so FIS(B->A) = FIS(A->B) = 36; every pair with C has FIS 0.
    """
    lin1, lin2 = nn.Linear(3, 2), nn.Linear(2, 1)
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[2.0, 2.0, 0.0], [0.0, 0.0, 1.0]]))
        lin1.bias.copy_(torch.tensor([-1.5, 0.0]))
        lin2.weight.copy_(torch.tensor([[3.0, 1.0]]))
        lin2.bias.zero_()
    return nn.Sequential(motif_conv([MOTIF_A, MOTIF_B, MOTIF_C]), nn.ReLU(), nn.MaxPool1d(length - 5),
                         nn.Flatten(), lin1, nn.ReLU(), lin2)


def linear_model(length: int = L, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(4 * length, 2))


def random_net(length: int = 40, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(4, 6, 5, padding=2), nn.ReLU(), nn.Conv1d(6, 4, 5, padding=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * length, 2))


def planted(seed: int = 0, length: int = L, spans=SPANS, motifs=(MOTIF_A, MOTIF_B, MOTIF_C)) -> str:
    """Random background (no accidental motif hit) with the motifs at ``spans``."""
    rng = np.random.default_rng(seed)
    while True:
        s = list("".join(rng.choice(list("ACGT"), length)))
        for (a, b), m in zip(spans, motifs, strict=False):
            s[a:b] = m
        s = "".join(s)
        if all(s.count(m) == 1 for m in motifs[: len(spans)]) and not any(m in s for m in motifs[len(spans):]):
            return s


@pytest.fixture(scope="module")
def andm():
    return kipoi_dfim.load_model(and_model(), seq_len=L, layout="(4,L)")


# ------------------------------------------------------------------------------------------- basics
def test_fis_mutants_fill():
    a, b = np.array([[1.0, -2.0]]), np.array([[0.5, 1.0]])
    assert np.array_equal(F.fis(a, b), [[0.5, -3.0]])
    assert np.array_equal(F.fis(a, b, absolute=True), [[0.5, 3.0]])
    x = one_hot("ACGTN")
    m = F.mutants(x, 1)
    assert [s for s in kipoi_dfim.sequence.decode(m)] == ["AAGTN", "AGGTN", "ATGTN"]
    assert kipoi_dfim.sequence.decode(F.mutate(x, 0, "T")) == "TCGTN"
    with pytest.raises(ValueError, match="N"):
        F.mutants(x, 4)
    f = F.fill_span(x, 1, 3, gc=0.4)
    assert np.allclose(f[1], [0.3, 0.2, 0.2, 0.3]) and np.allclose(f[2], background_frequencies(0.4))
    assert np.array_equal(f[[0, 3, 4]], x[[0, 3, 4]])  # outside the span untouched, input not modified
    assert np.array_equal(F.fill_span(x, 1, 3, "zero")[1:3], np.zeros((2, 4)))


def test_max_fis_signed_and_abs():
    d = np.array([[[1.0, -5.0]], [[2.0, np.nan]], [[-3.0, np.nan]]]).transpose(1, 0, 2)  # (1, 3 mutants, 2)
    assert np.array_equal(F.max_fis(d), [[2.0, -5.0]])
    assert np.array_equal(F.max_fis(d, absolute=True), [[3.0, 5.0]])
    assert np.isnan(F.max_fis(np.full((1, 3, 1), np.nan))).all()


# ------------------------------------------------------------------------------------------- known answers
def test_element_map_and_model_grad_input_exact(andm):
    x = one_hot(planted(0))
    m = F.element_map(andm, x, 0, SPANS, method="grad_input")
    expect = np.array([[np.nan, 36.0, 0.0], [36.0, np.nan, 0.0], [0.0, 0.0, np.nan]])
    np.testing.assert_allclose(m, expect, atol=1e-5)
    # the same with the motif-level function, and with zero fill (the original code's mutation)
    mf = F.motif_fis(andm, x, 0, SPANS[1], [SPANS[0], SPANS[2]], method="grad_input")
    np.testing.assert_allclose(mf, [36.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(F.element_map(andm, x, 0, SPANS, "zero", method="grad_input"), expect, atol=1e-5)
    # element-by-base: B mutated removes 6 per A base, nothing elsewhere outside B
    eb = F.element_by_base_map(andm, x, 0, SPANS, method="grad_input")
    assert eb.shape == (3, L) and np.isnan(eb[1, 25:31]).all()
    np.testing.assert_allclose(eb[1, 5:11], 6.0, atol=1e-5)
    assert np.nansum(np.abs(eb[1])) == pytest.approx(36.0, abs=1e-4)


def test_element_map_and_model_deeplift(andm):
    x = one_hot(planted(1))
    m = F.element_map(andm, x, 0, SPANS, method="deeplift", n_refs=8, seed=4)
    # Destroying B switches the AND unit off in x' as in the references (no motif there), so A's DeepLIFT
    # contribution in x' is 0 and FIS(B->A) is all of A's contribution in x; the unit's total difference from
    # the references, 3 * relu(0.5) - 0 = 1.5, is shared by A and B (summation to delta).
    refs = F.shared_references(x, 8, 4)
    # precondition of the exact answers below: no reference holds a motif (a reference motif would carry
    # its own, legitimately mutation-dependent, contributions at its positions)
    assert not any(mo in r for r in kipoi_dfim.sequence.decode(refs) for mo in (MOTIF_A, MOTIF_B, MOTIF_C))
    imp = kipoi_dfim.importance(andm, x, 0, method="deeplift", references=refs)
    assert m[1, 0] == pytest.approx(imp[5:11].sum(), abs=1e-5)
    assert m[0, 1] == pytest.approx(imp[25:31].sum(), abs=1e-5)
    assert m[0, 1] + m[1, 0] == pytest.approx(1.5, abs=1e-5) and min(m[0, 1], m[1, 0]) > 0.3
    # C only feeds its own additive unit: its FIS is exactly 0 both ways
    np.testing.assert_allclose([m[0, 2], m[1, 2], m[2, 0], m[2, 1]], 0.0, atol=1e-4)
    # same seed, same answer, whatever the batch size
    m2 = F.element_map(andm, x, 0, SPANS, method="deeplift", n_refs=8, seed=4, batch_size=5)
    np.testing.assert_allclose(m, m2, rtol=1e-5, atol=1e-5)


def test_per_base_and_model(andm):
    x = one_hot(planted(2))
    sources = [6, 27, 47]  # inside A, B, C
    d = F.dfim_per_base(andm, x, 0, sources, method="grad_input")
    assert d.shape == (3, 3, L, 4)
    assert np.isnan(d[np.arange(3), :, sources]).all()  # the source position itself is masked
    pos = np.nansum(d, axis=-1)  # (S, 3, L)
    # any substitution in B kills the AND unit: every A base loses its importance 6 (and vice versa)
    np.testing.assert_allclose(pos[1][:, 5:11], 6.0, atol=1e-5)
    np.testing.assert_allclose(pos[0][:, 25:31], 6.0, atol=1e-5)
    # C interacts with nothing; a mutation in C changes only C's own bases
    np.testing.assert_allclose(pos[2][:, :45], 0.0, atol=1e-5)
    np.testing.assert_allclose(pos[:2, :, 45:51], 0.0, atol=1e-5)
    np.testing.assert_allclose(F.max_fis(pos, absolute=True)[0, 25:31], 6.0, atol=1e-5)
    # ism (no gradients): destroying B still removes all of A's importance
    di = np.nansum(F.dfim_per_base(andm, x, 0, [27], method="ism"), axis=-1)
    assert (di[0][:, 5:11] > 0).all() and np.allclose(di[0][:, 45:51], 0.0, atol=1e-5)


@pytest.mark.parametrize("method,kw", [
    ("grad_input", {}),
    ("ism", {}),
    ("deeplift", {"n_refs": 4}),
    ("integrated_gradients", {"steps": 8}),
])
def test_linear_model_has_no_interactions(method, kw):
    """An additive model: the importance of a base never depends on another base, FIS = 0 exactly."""
    m = kipoi_dfim.load_model(linear_model(), seq_len=L, layout="(4,L)")
    x = one_hot(planted(3))
    d = F.dfim_per_base(m, x, 1, [0, 17, 59], method=method, **kw)
    imp = kipoi_dfim.importance(m, x, 1, method=method, **kw)
    scale = np.abs(imp).max()
    assert scale > 1e-3
    assert np.nanmax(np.abs(d)) < 1e-5 * max(1.0, scale) * 10
    e = F.element_map(m, x, 1, SPANS, method=method, **kw) if method != "ism" else np.zeros((3, 3))
    assert np.nanmax(np.abs(e)) < 1e-4


def test_per_base_matches_tangermeme_dependency_map():
    """mean over the 3 substitutions of |sum_b FIS| == tangermeme's dependency map with plain saliency."""
    from tangermeme.dependency_map import dependency_map
    from tangermeme.saliency import saliency

    n = 40
    net = random_net(n)
    m = kipoi_dfim.load_model(net, seq_len=n, layout="(4,L)")
    rng = np.random.default_rng(5)
    x = one_hot("".join(rng.choice(list("ACGT"), n)))
    sources = list(range(10, 20))
    d = F.dfim_per_base(m, x, 1, sources, method="grad_input", mask_source=False)
    ours = np.abs(d.sum(-1)).mean(1)  # (S, L)
    X = torch.from_numpy(x.T[None].copy())
    dm = dependency_map(net, X, start=10, end=20, func=saliency, target=1, gradient_correction=False,
                        device="cpu")[0].numpy()  # (L, S): dm[j, i] = change at j from substituting 10 + i
    assert np.abs(ours).max() > 1e-3  # the random net does have interactions
    np.testing.assert_allclose(ours, dm.T, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------- aggregation
def test_aggregate_and_marginalise():
    t = pd.concat([
        F.fis_table(np.array([[np.nan, 1.0], [-3.0, np.nan]]), ["a", "b"], ["a", "b"], seq="s1"),
        F.fis_table(np.array([[np.nan, 3.0], [1.0, np.nan]]), ["a", "b"], ["a", "b"], seq="s2"),
    ])
    assert len(t) == 4  # the NaN diagonal is not a pair
    agg = F.aggregate_fis(t).set_index(["source", "target"])
    assert agg.loc[("a", "b"), "n"] == 2 and agg.loc[("a", "b"), "mean_fis"] == 2.0
    assert agg.loc[("b", "a"), "mean_fis"] == -1.0 and agg.loc[("b", "a"), "mean_abs_fis"] == 2.0
    pos = pd.DataFrame({"source": [10, 20, 10, 5], "target": [12, 22, 8, 5], "fis": [1.0, -3.0, 4.0, 9.0]})
    off = F.marginalise_offsets(pos).set_index("offset")
    assert off.loc[2, "n"] == 2 and off.loc[2, "mean_fis"] == -1.0 and off.loc[2, "mean_abs_fis"] == 2.0
    assert off.loc[-2, "mean_fis"] == 4.0 and off.loc[0, "n"] == 1


def test_per_base_table_identities(andm):
    x = one_hot(planted(2))
    d = F.dfim_per_base(andm, x, 0, [27], method="grad_input")
    tab = F.per_base_table(d, x, [27], seq="s")
    assert set(tab["mut_base"]) == set("ACGT") - {planted(2)[27]}
    assert (tab["source_base"] == planted(2)[27]).all() and 27 not in set(tab["target"])
    row = tab[(tab["target"] == 5)].iloc[0]
    assert row["target_base"] == MOTIF_A[0] and row["fis"] == pytest.approx(6.0, abs=1e-5)


# ------------------------------------------------------------------------------------------- null
def test_fis_null_is_the_map_of_shuffles():
    from kipoi_dfim.shuffle import dinucleotide_shuffle

    n = 40
    m = kipoi_dfim.load_model(random_net(n, seed=2), seq_len=n, layout="(4,L)")
    x = one_hot(planted(4, n, spans=[(5, 11), (20, 26)]))
    els = [(5, 11), (20, 26), (30, 36)]
    null = N.map_null(m, x, 0, elements=els, n_shuffles=3, seed=7, method="grad_input")
    assert null.shape == (3, 3, 3)
    sh = dinucleotide_shuffle(x, 3, seed=7)
    for k in range(3):
        assert not np.array_equal(sh[k], x)
        np.testing.assert_allclose(null[k], F.element_map(m, sh[k], 0, els, method="grad_input"), atol=1e-6)
    pb = N.map_null(m, x, 0, sources=[3, 8], n_shuffles=2, seed=7, method="grad_input")
    assert pb.shape == (2, 2, 3, n, 4)
    sh2 = dinucleotide_shuffle(x, 2, seed=7)
    np.testing.assert_allclose(pb[1], F.dfim_per_base(m, sh2[1], 0, [3, 8], method="grad_input"), atol=1e-6)


def test_fis_pvalues_pooling():
    rng = np.random.default_rng(0)
    scores = {("t0", "s1"): np.array([[np.nan, 3.0], [0.1, np.nan]]), ("t0", "s2"): np.array([1.0, -2.0]),
              ("t1", "s1"): np.array([0.5])}
    nulls = {k: rng.normal(size=(5,) + np.shape(v)) for k, v in scores.items()}
    nulls[("t0", "s1")][0, 0, 0] = np.nan

    def gauss(v, pool):
        pool = pool[~np.isnan(pool)]
        return 2 * norm.sf(np.abs((v - pool.mean()) / pool.std(ddof=1)))

    p = N.pooled_pvalues(scores, nulls, pool="per_map")
    assert np.isnan(p[("t0", "s1")][0, 0])
    assert p[("t0", "s1")][0, 1] == pytest.approx(gauss(3.0, nulls[("t0", "s1")].ravel()))
    p = N.pooled_pvalues(scores, nulls, pool="per_task")
    t0 = np.concatenate([nulls[("t0", "s1")].ravel(), nulls[("t0", "s2")].ravel()])
    assert p[("t0", "s2")][1] == pytest.approx(gauss(-2.0, t0))
    assert p[("t1", "s1")][0] == pytest.approx(gauss(0.5, nulls[("t1", "s1")].ravel()))
    p = N.pooled_pvalues(scores, nulls, pool="global", kind="empirical")
    allv = np.concatenate([v.ravel() for v in nulls.values()])
    allv = np.abs(allv[~np.isnan(allv)])
    assert p[("t1", "s1")][0] == pytest.approx((1 + (allv >= 0.5).sum()) / (1 + allv.size))
    q = N.pooled_qvalues(p)
    from statsmodels.stats.multitest import multipletests

    flat = np.concatenate([v.ravel() for v in p.values()])
    ok = ~np.isnan(flat)
    np.testing.assert_allclose(np.concatenate([v.ravel() for v in q.values()])[ok],
                               multipletests(flat[ok], method="fdr_bh")[1])


# ------------------------------------------------------------------------------------------- shipped sim models
SIM_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "model_specs"


@pytest.mark.parametrize("method", ["grad_input", "deeplift"])
@pytest.mark.parametrize("spec", ["sim_keras", "sim_torch"])
def test_sim_models_recover_interacting_pair(spec, method):
    """The paper's section 3.1 check: over all pairs of planted motifs in held-out simulated sequences, the
    element-map FIS ranks the interacting (GATA, TAL1) pairs above every other pair with AUROC >= 0.95."""
    from kipoi_dfim import simulation as sim

    d = SIM_DIR / spec
    if not (d / "model.yaml").exists():
        pytest.skip(f"{d} not built yet")
    model = kipoi_dfim.load_model(str(d))
    x, _, placements = sim.simulate_dataset(40, seq_len=model.seq_len, seed=90210, distractor_prob=0.7)
    labels, scores = [], []
    for i, sites in enumerate(placements):
        if len(sites) < 2:
            continue
        spans = [(s.start, s.end) for s in sites]
        m = F.element_map(model, x[i], 0, spans, method=method, n_refs=5, seed=i)
        truth = {(a.start, b.start) for a, b in sim.interacting_pairs(sites)}
        for p in range(len(sites)):
            for q in range(p + 1, len(sites)):
                pair = {(sites[p].start, sites[q].start), (sites[q].start, sites[p].start)}
                labels.append(int(bool(pair & truth)))
                scores.append(abs(m[p, q]) + abs(m[q, p]))
    labels = np.array(labels)
    assert labels.sum() >= 10 and (labels == 0).sum() >= 10
    assert sim.auroc(labels, np.array(scores)) >= 0.95
