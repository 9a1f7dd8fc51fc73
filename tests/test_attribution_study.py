"""scripts/attribution_study.py (issue 13 point 5) at a tiny size: its data, its scores and its metrics.

Oracles: the planted motif read back from the decoded sequences; ISM by plain torch forward passes of every
single-base mutant (no kipoi_dfim code); scikit-learn's ``roc_auc_score`` for the motif-detection AUROC; a
second run of the script with another batch size for the numbers of the table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from kipoi_dfim import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import attribution_study as study  # noqa: E402


@pytest.mark.parametrize("name", list(study.MOTIFS))
def test_datasets_carry_their_motif(name):
    x, y, mask = study.make_dataset(name, 40, 300, seed=7)
    motif = study.MOTIFS[name]
    seqs = ["".join("ACGT"[j] for j in row) for row in x.argmax(-1)]
    assert (x.sum(-1) == 1).all() and 5 < y.sum() < 35
    assert not mask[y == 0].any()
    copies = 3 if name == "recurrent" else 1  # one copy per 100 bp block
    for i in np.flatnonzero(y):
        ends = np.flatnonzero(np.diff(np.r_[0, mask[i].astype(int), 0]))
        starts = ends[::2]
        if name != "lowest":  # poly-A copies can touch random A's, the mask still spans whole copies
            assert len(starts) == copies
        for s in starts:
            assert seqs[i][s: s + 30] == motif
        assert mask[i].sum() == 30 * copies
    # sequence i depends only on (seed, i): a smaller data set is a prefix of a larger one
    x2, y2, _ = study.make_dataset(name, 10, 300, seed=7)
    np.testing.assert_array_equal(x2, x[:10])
    np.testing.assert_array_equal(y2, y[:10])


def _ism_oracle(net: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logit of every single-base mutant by plain torch: actual f(x) - mean(3 mutants), and H = f - mean(4)."""
    logit = torch.nn.Sequential(*list(net)[:-1]).eval()
    N, L, _ = x.shape
    F = np.zeros((N, L, 4))
    with torch.no_grad():
        for i in range(N):
            muts = np.repeat(x[i][None], 4 * L, axis=0)
            for t in range(L):
                muts[4 * t: 4 * t + 4, t] = np.eye(4)
            F[i] = logit(torch.from_numpy(muts.transpose(0, 2, 1).copy()))[:, 0].numpy().reshape(L, 4)
    f0 = (F * x).sum(-1, keepdims=True)
    actual = (f0 - (F.sum(-1, keepdims=True) - f0) / 3) * x
    return actual, F - F.mean(-1, keepdims=True)


def test_scores_ism_matches_brute_force_and_batch_size():
    torch.manual_seed(3)
    L = 40
    net = study.make_cnn(L, n_filters=6, width=5)
    x, _, _ = study.make_dataset("low", 3, L, seed=1)
    actual_o, hyp_o = _ism_oracle(net, x)
    for bs in (7, 128):
        model = load_model(net, seq_len=L, layout="(4,L)", batch_size=bs)
        actual, hyp = study.scores(model, x, "ism", 0, bs)
        np.testing.assert_allclose(actual, actual_o, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(hyp, hyp_o, rtol=1e-4, atol=1e-5)


def test_evaluate_against_sklearn():
    rng = np.random.default_rng(0)
    N, L = 4, 50
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (N, L))]
    mask = np.zeros((N, L), bool)
    mask[:, 10:20] = True
    hyp = rng.normal(size=(N, L, 4)).astype(np.float32)
    hyp[:, 10:15] += 5 * x[:, 10:15]  # the observed base wins at 5 of the 10 motif positions (at least)
    actual = hyp * x
    res = study.evaluate(actual, hyp, x, mask)
    per_pos = actual.sum(-1)
    aucs = [roc_auc_score(mask[i], per_pos[i]) for i in range(N)]
    assert res["auroc"] == pytest.approx(np.mean(aucs), abs=1e-12)
    assert res["auroc_se"] == pytest.approx(np.std(aucs, ddof=1) / 2, abs=1e-12)
    assert res["auroc_pooled"] == pytest.approx(roc_auc_score(mask.ravel(), per_pos.ravel()), abs=1e-12)
    match = [hyp[i, t].argmax() == x[i, t].argmax() for i in range(N) for t in range(10, 20)]
    assert res["avg_match_pct"] == pytest.approx(100 * np.mean(match))
    per_seq = 100 * np.mean(np.reshape(match, (N, 10)), axis=1)
    assert res["avg_match_se"] == pytest.approx(np.std(per_seq, ddof=1) / 2)
    assert res["avg_match_pct"] >= 50


@pytest.fixture
def _torch_state():
    """main() sets torch's thread count and deterministic mode for the process: put them back afterwards."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)


@pytest.mark.usefixtures("_torch_state")
def test_script_table_does_not_depend_on_batch_size(tmp_path):
    """Two tiny runs (training, every method family, figures) with batch sizes 5 and 512: the same table."""
    args = ["--n-seqs", "240", "--seq-len", "60", "--n-eval", "4", "--datasets", "lowest", "--max-epochs", "2",
            "--methods", "ig_shuffle", "deeplift_gc", "grad_input", "ism"]
    tables = []
    for bs in (5, 512):
        out = tmp_path / f"bs{bs}"
        study.main([*args, "--batch-size", str(bs), "--out", str(out)])
        tables.append(pd.read_csv(out / "attribution_study.tsv", sep="\t"))
        assert (out / "attribution_lowest.png").stat().st_size > 10_000
        run = json.loads((out / "run.json").read_text())
        assert run["wall_s"] > 0 and run["args"]["batch_size"] == bs
        assert "| ism | " in (out / "tables.md").read_text()
    a, b = tables
    assert list(a["method"]) == ["ig_shuffle", "deeplift_gc", "grad_input", "ism"]
    for col in ("auroc", "auroc_pooled", "avg_match_pct", "auroc_se", "avg_match_se", "test_bacc", "epochs"):
        np.testing.assert_allclose(a[col], b[col], rtol=0, atol=1e-9, err_msg=col)
    assert ((a["auroc"] > 0) & (a["auroc"] <= 1)).all()
