"""The original dfim workflow (kipoi_dfim.legacy) on hand-built models with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_fis import SPANS, and_model, linear_model, planted

import kipoi_dfim
from kipoi_dfim import legacy as lg
from kipoi_dfim.sequence import one_hot

L = 60


@pytest.fixture(scope="module")
def andm():
    return kipoi_dfim.load_model(and_model(), seq_len=L, layout="(4,L)")


@pytest.fixture(scope="module")
def seqs():
    return np.stack([one_hot(planted(0)), one_hot(planted(1))])


def element_dict(n_seqs: int) -> dict:
    names = ["A", "B", "C"]
    d = {}
    for s in range(n_seqs):
        for i, (a, b) in enumerate(SPANS):
            others = [j for j in range(3) if j != i]
            d[f"seq_{s}_{names[i]}"] = {
                "seq": s, "mut_start": a, "mut_end": b, "mut_name": names[i],
                "resp_start": [SPANS[j][0] for j in others], "resp_end": [SPANS[j][1] for j in others],
                "resp_names": [names[j] for j in others],
            }
    return d


def test_element_workflow_known_answer(andm, seqs):
    mut = element_dict(2)
    arr, key = lg.generate_mutants_and_key(seqs, mut)
    assert arr.shape == (2 * 4, L, 4) and list(key["array_ind"]) == list(range(8))
    assert (key["label"] == "original").sum() == 2
    row = key[key["mut_key"] == "seq_1_B"].iloc[0]
    assert row["label"] == "seq_1_B;seq_1_loc25-31" and (arr[row["array_ind"], 25:31] == 0).all()  # zero fill
    scores = lg.compute_importance(andm, arr, [0], score_type="gradient_input", mutated_seq_key=key)
    delta = lg.compute_delta_profiles(scores, key, mut, [0], [0, 1])
    prof = delta[0][1]["seq_1_B;seq_1_loc25-31"]["resp_A_5to11"]
    np.testing.assert_allclose(prof["delta_profile"].sum(-1), 6.0, atol=1e-5)  # each A base loses 3*2*1
    # signed sums over bases and positions: the per-element FIS of eq. 2
    dfim = lg.compute_dfim(delta, [0, 1], [0], operations=[np.sum, np.sum], operation_axes=[1, 0],
                           absolute_value=False)
    for s in (0, 1):
        m = dfim[0][s]
        assert list(m.index) == [5, 25, 45] and list(m.columns) == [5, 25, 45]
        expect = [[-1, 36, 0], [36, -1, 0], [0, 0, -1]]  # diagonal_value -1 where no pair was computed
        np.testing.assert_allclose(m.to_numpy(), expect, atol=1e-4)
    # the original's defaults: |delta|, sum over letters, max over positions -> 6 per A base
    d2 = lg.compute_dfim(delta, [0], [0], annotate=True)
    assert d2[0][0].loc["B", "A"] == pytest.approx(6.0, abs=1e-5) and d2[0][0].loc["A", "C"] == pytest.approx(0)


def test_per_base_workflow(andm, seqs):
    mut = {"b": {"seq": 0, "mut_start": 26, "mut_end": 28, "mut_name": "B", "resp_start": [5], "resp_end": [11],
                 "resp_names": ["A"]}}
    arr, key = lg.generate_mutants_and_key(seqs, mut, per_base_map=True)
    assert len(arr) == 1 + 2 * 3
    s = planted(0)
    assert set(key["orig_letter"][1:]) <= {s[26], s[27]} and f"seq_0_{s[26]}to" in key["label"].iloc[1]
    scores = lg.compute_importance(andm, arr, [0], score_type="gradient_input", mutated_seq_key=key)
    delta = lg.compute_delta_profiles(scores, key, mut, [0], [0])
    dfim = lg.compute_dfim(delta, [0], [0], per_base_map=True, mutated_seq_key=key, operations=None,
                           absolute_value=False)
    a = dfim[0][0]["b"]
    assert a.shape == (2, 4, 4, 6, 4)
    for p, pos in enumerate((26, 27)):
        o = "ACGT".index(s[pos])
        for m in range(4):
            expect = 0.0 if m == o else 6.0  # any substitution in B switches the AND unit off
            np.testing.assert_allclose(a[p, o, m].sum(-1), expect, atol=1e-5)
        assert np.all(a[p, [k for k in range(4) if k != o]] == 0)  # letters that were not the original


def test_deeplift_shares_references_with_mutants():
    """With the key, a mutant gets its original's references: an additive model then has delta 0 exactly."""
    m = kipoi_dfim.load_model(linear_model(), seq_len=L, layout="(4,L)")
    seqs = np.stack([one_hot(planted(3))])
    mut = {"x": {"seq": 0, "mut_start": 10, "mut_end": 11, "mut_name": "x", "resp_start": [0], "resp_end": [L],
                 "resp_names": ["all"]}}
    arr, key = lg.generate_mutants_and_key(seqs, mut, per_base_map=True)
    scores = lg.compute_importance(m, arr, [1], score_type="deeplift", num_refs_per_seq=3, mutated_seq_key=key)
    assert np.abs(scores[1]).max() > 1e-3
    delta = lg.compute_delta_profiles(scores, key, mut, [1], [0])
    for lab in delta[1][0].values():
        for r in lab.values():
            assert np.abs(r["delta_profile"]).max() < 1e-5
    with pytest.raises(ValueError, match="deeplift 0.4"):
        lg.compute_importance(m, arr, [1], score_type="guided_backprop")


def test_assign_pval_levels():
    real = {"t0": {0: pd.DataFrame([[1.0, 5.0]])}, "t1": {0: pd.DataFrame([[2.0]])}}
    null = {"t0": {0: pd.DataFrame([[0.0, 2.0], [3.0, -1.0]])}, "t1": {0: pd.DataFrame([[4.0, 6.0]])}}
    # per map: t0 null without the diagonal value 0 -> [2, 3, -1]; one-sided (1 + #null >= v) / (1 + n)
    p = lg.assign_pval(real, null, null_level="per_map")
    np.testing.assert_allclose(p["t0"][0].to_numpy(), [[3 / 4, 1 / 4]])
    np.testing.assert_allclose(p["t1"][0].to_numpy(), [[3 / 3]])
    p = lg.assign_pval(real, null, null_level="global")  # [2, 3, -1, 4, 6]
    np.testing.assert_allclose(p["t0"][0].to_numpy(), [[5 / 6, 2 / 6]])
    np.testing.assert_allclose(p["t1"][0].to_numpy(), [[5 / 6]])
    p = lg.assign_pval(real, null, null_level="per_task", null_type="fit_gaussian")
    from scipy.stats import norm

    v = np.array([2.0, 3.0, -1.0])
    assert p["t0"][0].iloc[0, 1] == pytest.approx(norm.sf((5 - v.mean()) / v.std(ddof=1)))
