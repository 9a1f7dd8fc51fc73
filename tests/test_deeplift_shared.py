"""``deeplift_shared``: K windows per variant against shared references, T targets, in one call.

Oracles: the pairwise engines (every window against every reference in a paired batch, the path
``deeplift`` took before the shared engines; they are themselves checked against tangermeme, shap and hand
derivations in tests/test_deeplift.py), and model outputs from ``predict`` (summation-to-delta: the actual
contributions of a window sum to f(window) - mean_r f(reference_r) for every target).
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kipoi_dfim.attribution import shuffled_references
from kipoi_dfim.backend import deeplift_keras_shared as dlks
from kipoi_dfim.backend import deeplift_torch as dlt
from kipoi_dfim.backend import load_model
from kipoi_dfim.backend.common import AdapterBase
from kipoi_dfim.errors import InputError

L = 30
TARGETS = [2, 0]


class TorchNet(nn.Module):
    """conv-relu-maxpool (tiled: the fused rule), conv + F.relu + F.max_pool1d with overlapping windows
    (the general rule), tanh (float64 secant), sigmoid output (removed for logits), 3 outputs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = nn.Conv1d(4, 8, 5), nn.Conv1d(8, 6, 3)
        self.block = nn.Sequential(self.c1, nn.ReLU(), nn.MaxPool1d(2))
        self.d1, self.d2 = nn.Linear(6 * 5, 10), nn.Linear(10, 3)

    def forward(self, x):
        h = self.block(x)
        h = F.max_pool1d(F.relu(self.c2(h)), 3, 2)
        h = torch.tanh(self.d1(h.flatten(1)))
        return torch.sigmoid(self.d2(h))


def keras_net():
    """The Keras counterpart (channels last): fused-activation conv + tiled pool, Activation + strided pool."""
    keras.utils.set_random_seed(0)
    lay = keras.layers
    return keras.Sequential([
        keras.Input((L, 4)),
        lay.Conv1D(8, 5, activation="relu"), lay.MaxPooling1D(2),
        lay.Conv1D(6, 3), lay.Activation("relu"), lay.MaxPooling1D(3, strides=2),
        lay.Flatten(), lay.Dense(10, activation="tanh"), lay.Dense(3), lay.Activation("sigmoid"),
    ])


def inputs(n: int = 3, r: int = 3, seed: int = 0, length: int = L) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, length, 4) reference/alternate windows one base apart, (N, R, length, 4) dinucleotide
    shuffles."""
    rng = np.random.default_rng(seed)
    ref = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (n, length))]
    alt = ref.copy()
    alt[:, length // 2] = np.roll(alt[:, length // 2], 1, axis=-1)
    refs = shuffled_references(ref, r, [np.random.default_rng([seed, i]) for i in range(n)])
    return np.stack([ref, alt], 1), refs


def assert_close(a, b, rtol=1e-5):
    """Equal within rtol of the largest magnitude."""
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-12)
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)


@pytest.fixture(scope="module", params=["pytorch", "keras"])
def model(request):
    if request.param == "pytorch":
        return load_model(TorchNet(), seq_len=L, layout="(4,L)", batch_size=16, device="cpu")
    return load_model(keras_net(), batch_size=16)


def test_shared_equals_the_pairwise_engine(model):
    x, refs = inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # summation-to-delta holds for every (window, reference, target)
        fast = model.deeplift_shared(x, refs, TARGETS)
        slow = AdapterBase._deeplift_shared(model, x, refs, TARGETS)
    assert fast.shape == (3, 2, 2, L, 4) and fast.dtype == np.float32
    assert np.abs(slow).max() > 1e-3  # a non-trivial comparison
    assert_close(fast, slow)
    # one window, one target through plain deeplift (which runs the shared engine with K = 1)
    assert_close(model.deeplift(x[:, 1], refs, TARGETS[0], hypothetical=True), slow[:, 1, 0])
    assert_close(model.deeplift(x[:, 0], refs, 0), slow[:, 0, 1] * x[:, 0])


def test_contributions_sum_to_the_output_differences(model):
    x, refs = inputs(n=2, r=5, seed=1)
    hyp = model.deeplift_shared(x, refs, TARGETS)
    f_x = model.predict(x.reshape(-1, L, 4)).reshape(2, 2, -1)
    f_r = model.predict(refs.reshape(-1, L, 4)).reshape(2, 5, -1).mean(1)
    for j, t in enumerate(TARGETS):
        total = (hyp[:, :, j] * x).sum((-1, -2))
        expected = f_x[:, :, t] - f_r[:, None, t]
        np.testing.assert_allclose(total, expected, rtol=1e-4, atol=1e-5 * np.abs(f_x).max())


def test_batch_size_does_not_change_results(model):
    x, refs = inputs(n=2, seed=2)
    saved = model.batch_size
    try:
        model.batch_size = 3  # blocks of one variant and one target (K R = 6 > 3)
        small = model.deeplift_shared(x, refs, TARGETS)
        model.batch_size = 200  # all variants in one forward pass
        large = model.deeplift_shared(x, refs, TARGETS)
    finally:
        model.batch_size = saved
    assert_close(small, large, rtol=1e-6)


def test_violations_are_counted_per_window_reference_and_target(monkeypatch):
    """A rule that breaks conservation is reported, once, with the count of (window, reference, target)."""
    x, refs = inputs(n=2, r=3)
    torch_model = load_model(TorchNet(), seq_len=L, layout="(4,L)", device="cpu")
    real = dlt._relu_pool_pairs
    monkeypatch.setattr(dlt, "_relu_pool_pairs", lambda *a: 2 * real(*a))
    with pytest.warns(RuntimeWarning, match=r"for 24 of 24 \(window, reference, target\)"):
        torch_model.deeplift_shared(x, refs, [0, 1])
    real_pool = dlks._relu_pool_block
    monkeypatch.setattr(dlks, "_relu_pool_block", lambda *a: 2 * real_pool(*a))
    with pytest.warns(RuntimeWarning, match=r"for \d+ of 36 \(window, reference, target\)"):
        load_model(keras_net()).deeplift_shared(x, refs, [0, 1, 2])


def test_bad_shapes_and_targets_are_input_errors(model):
    x, refs = inputs(n=2)
    with pytest.raises(InputError, match=r"\(N, K, L, 4\)"):
        model.deeplift_shared(x[:, 0], refs, [0])
    with pytest.raises(InputError, match="references"):
        model.deeplift_shared(x, refs[:1], [0])
    with pytest.raises(InputError, match="target"):
        model.deeplift_shared(x, refs, [7])


@pytest.mark.parametrize("framework", ["pytorch", "keras"])
def test_threads_sharing_a_model_get_their_own_results(framework):
    """Two threads on one model (dask threads do this): the engines' scratch tensors (PyTorch) and their
    record/replay state (Keras, traced concurrently on first use) are per thread."""
    if framework == "pytorch":
        m = load_model(TorchNet(), seq_len=L, layout="(4,L)", batch_size=6, device="cpu")
    else:
        m = load_model(keras_net(), batch_size=6)
    jobs = [inputs(n=3, seed=s) for s in (3, 4, 5, 6)]
    alone = [m.deeplift_shared(x, refs, TARGETS) for x, refs in jobs]
    if framework == "keras":  # a fresh copy (same weights), so that the two threads trace it together
        m = load_model(keras_net(), batch_size=6)
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda job: m.deeplift_shared(*job, TARGETS), jobs))
    for a, b in zip(alone, together, strict=True):
        assert_close(a, b, rtol=1e-6)


class _OddPool(nn.Module):
    """conv-relu-maxpool whose windows leave the conv's last position out (27 = 13 * 2 + 1), then dense."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Conv1d(4, 6, 4), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(6 * 13, 2))

    def forward(self, x):
        return self.net(x)


def test_windows_reuse_window_zero_only_where_their_activations_agree():
    """Windows k > 0 of a variant take window 0's relu-pool factor outside the slice where their activations
    differ (an edge base, the middle base); a window unrelated to window 0 gets its own factor everywhere.
    Oracle: the pairwise engine (every window against every reference)."""
    model = load_model(_OddPool(), seq_len=30, layout="(4,L)", batch_size=64, device="cpu")
    rng = np.random.default_rng(5)
    ref = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (3, 30))]
    windows = [ref]
    for pos in (0, 29, 15):
        w = ref.copy()
        w[:, pos] = np.roll(w[:, pos], 1, axis=-1)
        windows.append(w)
    windows.append(np.eye(4, dtype=np.float32)[rng.integers(0, 4, (3, 30))])
    x = np.stack(windows, 1)
    refs = shuffled_references(ref, 4, [np.random.default_rng([5, i]) for i in range(3)])
    for k in (2, 4, 5):  # narrow slices only (the shared factor), then with the unrelated window (every factor)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fast = model.deeplift_shared(x[:, :k], refs, [1, 0])
        slow = AdapterBase._deeplift_shared(model, x[:, :k], refs, [1, 0])
        assert np.abs(slow[:, 1:]).max() > 1e-3
        assert_close(fast, slow)


def keras_branching_net():
    """Functional Keras model whose pools take every path of the Keras shared engine's block rules: a relu
    feeding a max-pool AND an average pool (not fused: the Rescale rule, then the tiled pool rule), tanh ->
    tiled max-pool leaving the last position out (27 = 13 * 2 + 1), relu -> tiled max-pool leaving two
    positions out (fused, padded back), an overlapping max-pool (the general rule)."""
    keras.utils.set_random_seed(4)
    lay = keras.layers
    inp = keras.Input((L, 4))
    c1 = lay.Conv1D(6, 3, activation="relu")(inp)  # 28
    a = lay.MaxPooling1D(2)(c1)  # 14
    b = lay.AveragePooling1D(2)(c1)
    h = lay.Add()([a, b])
    t = lay.Conv1D(5, 2, activation="tanh")(h)  # 13
    t = lay.MaxPooling1D(3)(lay.Conv1D(5, 1)(t))  # 4 windows of 3 over 13
    r = lay.Conv1D(4, 4, activation="relu")(h)  # 11 -> 3 windows of 3, two positions left out
    r = lay.MaxPooling1D(3)(r)
    o = lay.MaxPooling1D(3, strides=2)(lay.Conv1D(4, 3, activation="relu")(h))  # overlapping windows
    flat = lay.Concatenate()([lay.Flatten()(t), lay.Flatten()(r), lay.Flatten()(o)])
    return keras.Model(inp, lay.Dense(3)(lay.Dense(8, activation="elu")(flat)))


def test_keras_engine_rules_for_every_pool_path():
    """The block rules of the Keras shared engine (unfused relu + tiled pool, tanh + tiled pool, fused
    relu-pool with positions left after the last window, overlapping pool) against the pairwise engine."""
    model = load_model(keras_branching_net(), batch_size=16)
    x, refs = inputs(n=3, r=4, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = model.deeplift_shared(x, refs, [2, 0, 1])
    kinds = [m["kind"] + ("+fused" if m.get("fused") else "")
             for m in dlks._shared_engine(model._scored(model.output), (L, 4)).meta]
    assert {"rescale+fused", "relupool", "tiledpool", "pool", "rescale"} <= set(kinds), kinds
    slow = AdapterBase._deeplift_shared(model, x, refs, [2, 0, 1])
    assert np.abs(slow).max() > 1e-3
    assert_close(fast, slow)


class TwoRelus(nn.Module):
    """An addition of two relu branches (and a residual one): the vector-Jacobian product of ``+`` hands one
    tensor to both inputs, which the Rescale rule must not multiply in place (found by test_deeplift_crop)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.a, self.b = nn.Conv1d(4, 6, 3, padding=1), nn.Conv1d(4, 6, 5, padding=2)
        self.d = nn.Linear(6 * L, 2)

    def forward(self, x):
        h = F.relu(self.a(x)) + F.relu(self.b(x))
        h = h + F.relu(h - 0.1)
        return self.d(h.flatten(1))


def test_torch_branches_sharing_a_cotangent():
    x, refs = inputs()
    model = load_model(TwoRelus(), seq_len=L, layout="(4,L)")
    slow = AdapterBase._deeplift_shared(model, x, refs, [1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # summation-to-delta holds for every pair
        fast = model.deeplift_shared(x, refs, [1, 0])
    assert_close(fast, slow)
