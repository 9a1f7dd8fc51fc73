"""The PyTorch shared engine's backward pass cropped to the positions DFIM reads (deeplift_torch_crop).

Oracles: the same engine without a crop (every position; itself checked against the pairwise engines,
tangermeme, shap and hand derivations in tests/test_deeplift.py and tests/test_deeplift_shared.py), and
summation-to-delta on the full input multipliers for the per-pair sums the cropped engine checks at its
boundary layer.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_deeplift_shared import inputs as shared_inputs  # tests/ is on sys.path under pytest

from kipoi_dfim import attribution
from kipoi_dfim.backend import deeplift_torch as dlt
from kipoi_dfim.backend import load_model
from kipoi_dfim.backend.common import AdapterBase
from kipoi_dfim.errors import InputError

L = 64


def basset_like() -> nn.Module:
    """Conv / relu / tiled max-pool three times (the last pool leaves a remainder), then dense layers."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(4, 12, 7), nn.ReLU(), nn.MaxPool1d(3),
        nn.Conv1d(12, 10, 5), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(10, 8, 3), nn.ReLU(), nn.MaxPool1d(2),
        nn.Flatten(), nn.Linear(8 * 2, 16), nn.ReLU(), nn.Linear(16, 3), nn.Sigmoid(),
    ).eval()


class Mixed(nn.Module):
    """Padded convolutions, eval-mode batch norm, dropout, an unfused relu, a sigmoid (float64 secant), a
    softplus before a pool (no fusion), and an unsqueeze into a Conv2d over (B, C, 1, L)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.c1, self.bn, self.drop = nn.Conv1d(4, 8, 5, padding=2), nn.BatchNorm1d(8), nn.Dropout(0.3)
        self.c2 = nn.Conv1d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 6, (1, 5), padding=(0, 3))
        self.c4 = nn.Conv1d(6, 6, 3)
        self.d = nn.Linear(6 * 10, 2)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        h = torch.sigmoid(self.drop(self.bn(self.c1(x))))
        h = F.max_pool1d(F.relu(self.c2(h)), 2)
        h = F.relu(self.c3(h.unsqueeze(2))).squeeze(2)
        h = F.max_pool1d(F.softplus(self.c4(h)), 3)
        return self.d(h.flatten(1))


class Skip(nn.Module):
    """The input feeds two branches: nothing below the merge is a chain, so no crop (the full walk)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.a, self.b = nn.Conv1d(4, 6, 3, padding=1), nn.Conv1d(4, 6, 5, padding=2)
        self.d = nn.Linear(6 * L, 2)

    def forward(self, x):
        return self.d((F.relu(self.a(x)) + F.relu(self.b(x))).flatten(1))


def inputs(n: int = 3, r: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, L, 4) reference and alternate windows one base apart, (N, R, L, 4) dinucleotide shuffles."""
    return shared_inputs(n, r, seed, length=L)


def scored(net: nn.Module) -> nn.Module:
    """The module the engine runs: the adapter's (B, L, 4) -> logits wrapper."""
    model = load_model(net, seq_len=L, layout="(4,L)", batch_size=16)
    return model, model._scored(model.output)


SPANS = [(20, 45), (0, 9), (50, 64), (31, 32)]


@pytest.mark.parametrize("make", [basset_like, Mixed], ids=["basset_like", "mixed"])
@pytest.mark.parametrize("span", SPANS, ids=[f"{a}-{b}" for a, b in SPANS])
def test_crop_equals_full_walk_inside_span(make, span):
    x, refs = inputs()
    _, module = scored(make())
    full = dlt.deeplift_shared_torch(module, x, refs, [0, 1], batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # summation-to-delta at the boundary holds for every pair
        cropped = dlt.deeplift_shared_torch(module, x, refs, [0, 1], batch_size=16, span=span)
    a, b = span
    scale = np.abs(full[..., a:b, :]).max()
    assert scale > 0
    np.testing.assert_allclose(cropped[..., a:b, :], full[..., a:b, :], rtol=0, atol=1e-5 * scale)
    assert not cropped[..., :a, :].any() and not cropped[..., b:, :].any()


def test_chain_found_where_expected():
    x, _ = inputs(1)
    _, module = scored(basset_like())
    plan = dlt._shared_plan(module, torch.from_numpy(x[:1, 0]))
    crop = plan.crop((20, 45))
    got = [(link.kind, link.need_out) for link in crop.links]
    # permute, contiguous, to; conv 7 (valid) widens to the left by 6; pool 3 rounds out; conv 5 needs
    # (0, 15) of its 15 outputs; the next relu -> pool would need all its input: it stays in the full walk
    assert got == [("layout", (20, 45))] * 3 + [("conv", (14, 45)), ("relupool", (4, 15)), ("conv", (0, 15))]
    assert crop.top == crop.links[-1].step.name
    mixed = dlt._shared_plan(scored(Mixed())[1], torch.from_numpy(x[:1, 0])).crop((20, 45))
    got = [(link.kind, link.need_out) for link in mixed.links[3:]]
    assert got == [("conv", (18, 47)), ("layout", (18, 47)), ("layout", (18, 47)), ("rescale", (18, 47)),
                   ("conv", (17, 48)), ("relupool", (8, 24)), ("layout", (8, 24)), ("conv", (7, 27)),
                   ("rescale", (7, 27)), ("layout", (7, 27)), ("conv", (5, 27)), ("rescale", (5, 27)),
                   ("pool", (1, 9))]  # padded convs; Conv2d (1, 5) padded (0, 3); the squeeze (found by running
    # it on a slice), softplus -> pool 3 unfused; the flatten ends the chain
    _, skip = scored(Skip())
    assert dlt._shared_plan(skip, torch.from_numpy(x[:1, 0])).crop((20, 45)) is None
    assert plan.crop((0, L)) is None  # the whole input: nothing to cut


def test_skip_model_runs_full_walk_with_span():
    x, refs = inputs()
    _, module = scored(Skip())
    full = dlt.deeplift_shared_torch(module, x, refs, [1])
    with_span = dlt.deeplift_shared_torch(module, x, refs, [1], span=(10, 20))
    np.testing.assert_array_equal(with_span, full)


@pytest.mark.parametrize("make", [basset_like, Mixed], ids=["basset_like", "mixed"])
def test_boundary_sums_are_summation_to_delta_at_the_input(make):
    """The per-pair sums the cropped engine checks equal sum(m (x - r)) over every input position of the
    full walk: the check covers the same quantity, at the boundary layer."""
    x, refs = inputs(2, 3)
    _, module = scored(make())
    plan = dlt._shared_plan(module, torch.from_numpy(x[:1, 0]))
    crop = plan.crop((20, 45))
    n, k, r = 2, 2, 3
    rows = torch.from_numpy(np.concatenate([x.reshape(n * k, L, 4), refs.reshape(n * r, L, 4)]))
    pairs = dlt._Pairs(0, n, torch.tensor([0, 1]), n, k, r)
    acts, _ = plan.forward(rows, n * k, check_pools=True, k=k)
    m, none = plan.backward(acts, pairs)
    assert none is None
    m = m.numpy().reshape(n, k, 2, r, L, 4)
    want = np.einsum("nktrlc,nkrlc->nktr", m.astype(np.float64), (x[:, :, None] - refs[:, None]).astype(np.float64))
    acts, _ = plan.forward(rows, n * k, check_pools=True, k=k, crop=crop)
    _, sums = plan.backward(acts, pairs, crop)
    got = sums.numpy().reshape(n, k, 2, r)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert np.abs(want).max() > 1e-3


def test_adapter_span_and_pairwise_oracle():
    """Through the adapter: the cropped scores equal the pairwise engine's (no shared forward, no crop)."""
    x, refs = inputs()
    model, _ = scored(basset_like())
    got = model.deeplift_shared(x, refs, [2, 0], span=(25, 40))
    slow = AdapterBase._deeplift_shared(model, x, refs, [2, 0])
    scale = np.abs(slow[..., 25:40, :]).max()
    np.testing.assert_allclose(got[..., 25:40, :], slow[..., 25:40, :], rtol=0, atol=1e-5 * scale)
    with pytest.raises(InputError, match="span"):
        model.deeplift_shared(x, refs, [0], span=(40, 30))


def test_read_span_covers_targets_and_maps_flank():
    pos = np.zeros((2, 600), bool)
    pos[0, 285:316] = True
    pos[1, 290:321] = True
    assert attribution.read_span(pos, 15) == (250, 356)  # +-50 around each variant (maps flank)
    assert attribution.read_span(pos[:, :330][:, ::1], 15) == (250, 330)
    assert attribution.read_span(np.zeros((1, 50), bool), 15) is None
    wide = np.zeros((1, 600), bool)
    wide[0, 200:401] = True
    assert attribution.read_span(wide, 100) == (200, 401)  # window above 50: no widening


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_score_variants_same_numbers_with_and_without_crop(tmp_path, monkeypatch, framework):
    """A DeepLIFT score-variants run on the shipped PyTorch and Keras models (SNVs, indels, multi-base
    records) gives the same TSV numbers and maps tracks (+-50 bp) as with the crop turned off (every
    position)."""
    import os

    import pandas as pd

    from kipoi_dfim.backend import deeplift_keras_shared as dks
    from kipoi_dfim.output.maps import MapsFile
    from kipoi_dfim.scoring import score_variants

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = os.path.join(root, "model_specs", f"sim_{framework}")
    vcf = os.path.join(root, "example_vcfs", "sim", "sim_variants.vcf")
    fasta = os.path.join(root, "example_vcfs", "sim", "sim_contigs.fa")
    kw = dict(method="deeplift", n_refs=3, seed=4, quiet=True, return_table=False, null_shuffles=2)
    calls = []
    engine, name = (dlt, "deeplift_shared_torch") if framework == "torch" else (dks, "deeplift_shared_keras")
    real = getattr(engine, name)
    monkeypatch.setattr(engine, name, lambda *a, **k: calls.append(k.get("span")) or real(*a, **k))
    score_variants(spec, vcf, fasta, tsv=str(tmp_path / "crop.tsv"), maps=str(tmp_path / "crop.h5"), **kw)
    assert calls and all(s is not None and s[1] - s[0] < 200 for s in calls)  # the crop was asked for
    if framework == "keras":  # and the model has a chain to crop (conv 7 / pool 2 / conv 9 / pool 89)
        from kipoi_dfim.backend import load_model as load
        from kipoi_dfim.backend.deeplift_keras_crop import find_chain

        assert len(find_chain(load(spec)._scored("logit")).steps) == 4
    monkeypatch.setattr(attribution, "read_span", lambda *a, **k: None)
    score_variants(spec, vcf, fasta, tsv=str(tmp_path / "full.tsv"), maps=str(tmp_path / "full.h5"), **kw)
    a, b = pd.read_csv(tmp_path / "crop.tsv", sep="\t"), pd.read_csv(tmp_path / "full.tsv", sep="\t")
    assert (a["status"] == "ok").sum() > 30 and list(a["status"]) == list(b["status"])
    for col in ["max_abs_fis", "fis_at_max", "pval"]:
        np.testing.assert_allclose(a[col], b[col], rtol=1e-4, atol=1e-7, equal_nan=True)
    assert list(a["max_fis_offset"].fillna(-999)) == list(b["max_fis_offset"].fillna(-999))
    with MapsFile(tmp_path / "crop.h5") as mc, MapsFile(tmp_path / "full.h5") as mf:
        assert len(mc) == len(mf) > 30
        for i in range(len(mc)):
            rc, rf = mc.row(i), mf.row(i)
            for key in ("imp_ref", "imp_alt", "fis"):
                np.testing.assert_allclose(rc[key], rf[key], rtol=1e-4, atol=1e-7, equal_nan=True)
