"""Importance methods against oracles: closed forms on hand-built models, brute force, tangermeme."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import kipoi_dfim
from kipoi_dfim.attribution import METHODS, gc_background, importance, register
from kipoi_dfim.errors import InputError
from kipoi_dfim.sequence import background_frequencies, one_hot
from kipoi_dfim.shuffle import dinucleotide_shuffle

L = 24


def random_one_hot(n: int, length: int = L, seed: int = 0) -> np.ndarray:
    return np.eye(4, dtype=np.float32)[np.random.default_rng(seed).integers(0, 4, (n, length))]


@pytest.fixture(scope="module")
def linear():
    """f_t(x) = sum W[t] * x + c_t over the flattened (L, 4) input: every method has a closed form."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(L * 4, 3))
    weights = module[1].weight.detach().numpy().reshape(3, L, 4).astype(np.float64)
    return kipoi_dfim.load_model(module, seq_len=L, layout="(L,4)"), weights


@pytest.fixture(scope="module")
def single_index():
    """f(x) = tanh(w . x): IG from any baseline b is (x - b) * w * (tanh(u1) - tanh(u0)) / (u1 - u0)."""
    torch.manual_seed(1)
    module = nn.Sequential(nn.Flatten(), nn.Linear(L * 4, 1), nn.Tanh())
    with torch.no_grad():
        module[1].weight.mul_(4.0)
    w = module[1].weight.detach().numpy().reshape(L, 4).astype(np.float64)
    b = float(module[1].bias.detach())
    return kipoi_dfim.load_model(module, seq_len=L, layout="(L,4)"), w, b


@pytest.fixture(scope="module")
def convnet():
    """Maxpool-free conv net with a final sigmoid (scored as the logit), channels-first like tangermeme."""
    torch.manual_seed(2)
    module = nn.Sequential(
        nn.Conv1d(4, 6, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(6, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * L, 2),
        nn.Sigmoid(),
    ).eval()
    logit = nn.Sequential(*list(module.children())[:-1]).eval()
    return kipoi_dfim.load_model(module, seq_len=L, layout="(4,L)"), logit


def torch_logit(logit: nn.Module, x: np.ndarray) -> np.ndarray:
    """Oracle forward pass straight through torch, (N, L, 4) -> (N, T)."""
    with torch.no_grad():
        return logit(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1)))).numpy().astype(np.float64)


def test_registry_has_the_four_methods_and_accepts_new_ones(linear):
    model, _ = linear
    assert {"grad_input", "deeplift", "integrated_gradients", "ism"} <= set(METHODS)

    @register("twice_grad_input")
    def twice(model, x, target, *, hypothetical, batch_size, seed, **kw):
        return 2 * METHODS["grad_input"](model, x, target, hypothetical=hypothetical, batch_size=batch_size, seed=seed)

    x = random_one_hot(3)
    try:
        np.testing.assert_allclose(
            importance(model, x, 0, "twice_grad_input"), 2 * importance(model, x, 0, "grad_input")
        )
    finally:
        del METHODS["twice_grad_input"]
    with pytest.raises(InputError, match="unknown importance method"):
        importance(model, x, 0, "nope")


def test_grad_input_equals_weights_times_input(linear):
    model, W = linear
    x = random_one_hot(5)
    x[1, 3] = 0  # an N position has no importance
    np.testing.assert_allclose(importance(model, x, 2, "grad_input"), W[2] * x, atol=1e-6)
    np.testing.assert_allclose(
        importance(model, x, 2, "grad_input", hypothetical=True), np.broadcast_to(W[2], x.shape), atol=1e-6
    )
    centred = W[2] - W[2].mean(-1, keepdims=True)
    np.testing.assert_allclose(importance(model, x, 2, "grad_input", center=True), centred * x, atol=1e-6)
    # single sequence in, single sequence out
    np.testing.assert_allclose(importance(model, x[0], 2, "grad_input"), W[2] * x[0], atol=1e-6)


@pytest.mark.parametrize("baseline", ["zeros", "uniform", "gc"])
def test_integrated_gradients_linear_closed_form(linear, baseline):
    model, W = linear
    x = random_one_hot(4, seed=3)
    b = {"zeros": np.zeros(4), "uniform": np.full(4, 0.25), "gc": background_frequencies(0.46)}[baseline]
    # exact for a linear model whatever the number of steps: per position sum_c (x - b)_c W_c at the base
    per_pos = ((x - b) * W[1]).sum(-1)
    expected = per_pos[..., None] * x
    np.testing.assert_allclose(
        importance(model, x, 1, "integrated_gradients", baseline=baseline, steps=3), expected, atol=1e-5
    )
    hyp = importance(model, x, 1, "integrated_gradients", baseline=baseline, steps=3, hypothetical=True)
    np.testing.assert_allclose(hyp, np.broadcast_to(W[1] - (W[1] * b).sum(-1, keepdims=True), x.shape), atol=1e-5)


def test_integrated_gradients_single_index_closed_form_and_completeness(single_index):
    model, w, bias = single_index
    x = random_one_hot(3, seed=4)
    base = gc_background(L)
    u1 = (x * w).sum((1, 2)) + bias
    u0 = (base * w).sum() + bias
    scale = (np.tanh(u1) - np.tanh(u0)) / (u1 - u0)
    per_pos = ((x - base) * w).sum(-1) * scale[:, None]
    ig = importance(model, x, 0, "integrated_gradients", baseline="gc", steps=200)
    np.testing.assert_allclose(ig, per_pos[..., None] * x, atol=2e-4)
    # completeness: sum = f(x) - f(baseline)
    np.testing.assert_allclose(ig.sum((1, 2)), np.tanh(u1) - np.tanh(u0), atol=2e-4)
    # too few steps is visibly worse (the test above can fail)
    coarse = importance(model, x, 0, "integrated_gradients", baseline="gc", steps=1)
    assert np.abs(coarse.sum((1, 2)) - (np.tanh(u1) - np.tanh(u0))).max() > 1e-2


def test_integrated_gradients_completeness_convnet_shuffled_baselines(convnet):
    model, logit = convnet
    x = random_one_hot(3, seed=5)
    refs = dinucleotide_shuffle(x, n=4, seed=9)
    ig = importance(model, x, 1, "integrated_gradients", baseline="shuffle", n_refs=4, steps=200, seed=9)
    f_x = torch_logit(logit, x)[:, 1]
    f_b = torch_logit(logit, refs.reshape(-1, L, 4))[:, 1].reshape(3, 4).mean(1)
    np.testing.assert_allclose(ig.sum((1, 2)), f_x - f_b, rtol=1e-3, atol=1e-4)
    # the same references given as an array give the same numbers
    ig_arr = importance(model, x, 1, "integrated_gradients", baseline=refs, steps=200)
    np.testing.assert_allclose(ig_arr, ig, atol=1e-6)


def test_deeplift_equals_tangermeme(convnet):
    from tangermeme.deep_lift_shap import deep_lift_shap

    model, logit = convnet
    x = random_one_hot(4, seed=6)
    refs = dinucleotide_shuffle(x, n=5, seed=11)  # what importance(seed=11, n_refs=5) draws
    X = torch.from_numpy(x.transpose(0, 2, 1).copy())
    R = torch.from_numpy(refs.transpose(0, 1, 3, 2).copy())
    for hyp in (False, True):
        ours = importance(model, x, 1, "deeplift", n_refs=5, seed=11, hypothetical=hyp)
        theirs = deep_lift_shap(logit, X, target=1, references=R, hypothetical=hyp, device="cpu", batch_size=7)
        np.testing.assert_allclose(ours, theirs.numpy().transpose(0, 2, 1), atol=1e-5)
    # summation-to-delta through the scored (logit) output
    ours = importance(model, x, 1, "deeplift", references=refs)
    f_x, f_r = torch_logit(logit, x)[:, 1], torch_logit(logit, refs.reshape(-1, L, 4))[:, 1].reshape(4, 5)
    np.testing.assert_allclose(ours.sum((1, 2)), f_x - f_r.mean(1), atol=1e-4)
    assert (ours[x == 0] == 0).all()


def test_deeplift_gc_and_zero_references_on_linear(linear):
    model, W = linear
    x = random_one_hot(3, seed=7)
    for refs, b in (("gc", background_frequencies(0.46)), ("zeros", np.zeros(4))):
        expected = ((x - b) * W[0]).sum(-1)[..., None] * x  # DeepLIFT is exact for a linear model
        np.testing.assert_allclose(importance(model, x, 0, "deeplift", references=refs), expected, atol=1e-5)


def test_ism_equals_brute_force(convnet):
    model, logit = convnet
    x = random_one_hot(2, seed=8)
    x[1, 5] = 0  # an N position: zero actual importance; all four bases are mutants there
    f0 = torch_logit(logit, x)[:, 0]
    F = np.empty((2, L, 4))
    for i in range(2):
        for t in range(L):
            for b in range(4):
                xm = x[i : i + 1].copy()
                xm[0, t] = np.eye(4)[b]
                F[i, t, b] = torch_logit(logit, xm)[0, 0]
    obs = x.astype(bool)
    mut_mean = np.where(obs, 0, F).sum(-1) / (4 - obs.sum(-1))
    expected = (f0[:, None] - mut_mean)[..., None] * x
    np.testing.assert_allclose(importance(model, x, 0, "ism", batch_size=13), expected, atol=1e-5)
    np.testing.assert_allclose(
        importance(model, x, 0, "ism", hypothetical=True), F - F.mean(-1, keepdims=True), atol=1e-5
    )


@pytest.mark.parametrize(
    "method,kw",
    [
        ("grad_input", {}),
        ("deeplift", {"n_refs": 3}),
        ("integrated_gradients", {"baseline": "shuffle", "n_refs": 2, "steps": 5}),
        ("ism", {}),
    ],
)
def test_batch_size_and_per_sequence_seeds(convnet, method, kw):
    model, _ = convnet
    x = random_one_hot(5, seed=10)
    a = importance(model, x, 0, method, batch_size=1, seed=3, **kw)
    b = importance(model, x, 0, method, batch_size=7, seed=3, **kw)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # per-sequence seeds: a sequence's result does not depend on its batch-mates
    seeds = np.array([17, 4, 99, 23, 5])
    full = importance(model, x, 0, method, seed=seeds, **kw)
    sub = importance(model, x[[3, 1]], 0, method, seed=seeds[[3, 1]], **kw)
    np.testing.assert_allclose(sub, full[[3, 1]], rtol=1e-5, atol=1e-6)
    if method in ("deeplift", "integrated_gradients"):  # and the seed matters where there is sampling
        assert not np.allclose(importance(model, x, 0, method, seed=4, **kw), a)


def test_ism_at_target_positions_equals_full_ism_there_with_fewer_model_calls():
    """--method ism: only the +-N target bases are mutated (3 x (2N+1) passes per window, not 3 x L)."""
    from kipoi_dfim.attribution import ism_shared
    from kipoi_dfim.settings import Settings

    rng = np.random.default_rng(1)
    L, N = 40, 3
    w = rng.normal(size=(L, 4)).astype(np.float32)
    calls = []

    class Counting:
        seq_len, targets, output, activation = L, ["a", "b"], "raw", None

        def target_index(self, t):
            return self.targets.index(t) if isinstance(t, str) else int(t)

        def predict(self, x, output=None):
            calls.append(len(x))
            s = (x * w).sum((1, 2))
            return np.stack([np.tanh(s), s ** 2], 1)

    x = one_hot(["".join(rng.choice(list("ACGT"), L)) for _ in range(N)])
    pos = np.zeros((N, L), bool)
    pos[:, 10:21] = True
    full = [importance(Counting(), x, t, "ism", batch_size=16) for t in (0, 1)]
    calls.clear()
    got = ism_shared(Counting(), x[None], None, [0, 1], Settings(method="ism", batch_size=16), positions=pos)
    assert sum(calls) == N + 3 * pos.sum()  # originals + 3 mutants per target base, shared by both targets
    for t in (0, 1):
        np.testing.assert_allclose(got[t, 0][:, 10:21], full[t][:, 10:21], rtol=1e-6)
        assert not got[t, 0][:, :10].any() and not got[t, 0][:, 21:].any()
