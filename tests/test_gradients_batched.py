"""grad_input and integrated gradients of DFIM windows: all windows, baselines and steps in full model calls,
one forward pass per call shared by every target (``model.gradients``).

Oracles: ``model.gradient`` called per target and per sequence (the adapters' single-target gradient), and
integrated gradients written out from it as the textbook midpoint sum, point by point.
"""

from __future__ import annotations

import numpy as np
import pytest

from kipoi_dfim import fis
from kipoi_dfim.attribution import _path_gradients
from kipoi_dfim.backend import load_model
from kipoi_dfim.settings import Settings

L = 30


def _torch_net():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(4, 6, 5), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(6 * 13, 8),
                         nn.Tanh(), nn.Linear(8, 3))


def _keras_net():
    import keras

    keras.utils.set_random_seed(0)
    lay = keras.layers
    return keras.Sequential([keras.Input((L, 4)), lay.Conv1D(6, 5, activation="relu"), lay.MaxPooling1D(2),
                             lay.Flatten(), lay.Dense(8, activation="tanh"), lay.Dense(3)])


@pytest.fixture(scope="module", params=["pytorch", "keras"])
def model(request):
    if request.param == "pytorch":
        return load_model(_torch_net(), seq_len=L, layout="(4,L)", batch_size=64, device="cpu")
    return load_model(_keras_net(), batch_size=64)


def _windows(model, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(1)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (n, model.seq_len))]
    alt = x.copy()
    alt[:, model.seq_len // 2] = np.roll(alt[:, model.seq_len // 2], 1, -1)
    return np.stack([x, alt])


def test_gradients_of_several_targets_equal_one_gradient_per_target(model):
    x = _windows(model).reshape(-1, model.seq_len, 4)
    targets = [len(model.targets) - 1, 0]
    got = model.gradients(x, targets)
    for j, t in enumerate(targets):
        want = np.concatenate([model.gradient(x[i: i + 1], t) for i in range(len(x))])
        np.testing.assert_allclose(got[j], want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    assert np.abs(got[0] - got[1]).max() > 1e-3  # the targets differ: not one gradient repeated


def _ig_oracle(model, x: np.ndarray, base: np.ndarray, t: int, steps: int) -> np.ndarray:
    """Midpoint-rule IG, one path point at a time, DeepSHAP's hypothetical form, times x."""
    out = np.zeros_like(x, dtype=np.float64)
    for i in range(len(x)):
        for r in range(base.shape[1]):
            b = base[i, r]
            g = np.mean([model.gradient((b + (k + 0.5) / steps * (x[i] - b))[None], t)[0] for k in range(steps)], 0)
            out[i] += (g - (g * b).sum(-1, keepdims=True)) * x[i]
    return out / base.shape[1]


@pytest.mark.parametrize("method", ["grad_input", "integrated_gradients"])
def test_windows_importance_equals_per_target_oracle_at_any_batch_size(model, method):
    W = _windows(model)
    targets = [0, len(model.targets) - 1]
    kw = {"steps": 3, "references": "shuffle", "n_refs": 2} if method == "integrated_gradients" else {}
    outs = []
    for bs in (64, 5):
        st = Settings(method=method, batch_size=bs, **kw)
        refs = fis.window_references(W[0], st, np.arange(W.shape[1]))
        outs.append(fis.windows_importance(model, W, refs, targets, st))
    # the batch size changes only the kernels' rounding (the last float32 digit), not the sums
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-6 * np.abs(outs[0]).max())
    flat = W.reshape(-1, model.seq_len, 4)
    for j, t in enumerate(targets):
        if method == "grad_input":
            want = np.concatenate([model.gradient(flat[i: i + 1], t) for i in range(len(flat))]) * flat
        else:
            want = _ig_oracle(model, flat, np.concatenate([refs] * 2), t, 3)
        got = outs[0][j].reshape(flat.shape)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_path_points_span_calls_without_changing_the_sums():
    """A stream cut into calls of 4 points (sequences' paths split across calls) equals one call per path."""

    class Quadratic:  # f_t(x) = (t + 1) * sum(x^2): gradient 2 (t + 1) x, known exactly
        def gradients(self, x, targets):
            return np.stack([2.0 * (t + 1) * x for t in targets]).astype(np.float32)

    rng = np.random.default_rng(0)
    x, base = rng.random((3, 5, 4), dtype=np.float32), rng.random((3, 2, 5, 4), dtype=np.float32)
    got = _path_gradients(Quadratic(), x, base, [0, 2], steps=3, batch_size=4)
    # mean over the midpoints of 2 (t + 1) (b + a (x - b)) = 2 (t + 1) (b + (x - b) / 2)
    want = np.stack([2.0 * (t + 1) * (base + 0.5 * (x[:, None] - base)) for t in (0, 2)])
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("method", ["grad_input", "integrated_gradients"])
def test_no_windows_give_an_empty_result(model, method):
    st = Settings(method=method, steps=2)
    W = np.zeros((2, 0, L, 4), np.float32)
    assert fis.windows_importance(model, W, fis.window_references(W[0], st, np.arange(0)), [0, 1], st).shape == \
        (2, 2, 0, L, 4)
