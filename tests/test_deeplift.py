"""DeepLIFT engines: one rule set in PyTorch and Keras 3.

Oracles: the same function built in both frameworks (cross-engine identity), tangermeme.deep_lift_shap and
shap.DeepExplainer on models without max-pooling, model outputs computed independently of the engines
(summation-to-delta), and multipliers derived by hand for tiny models.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
import torch.nn as nn
import torch.nn.functional as F

from kipoi_dfim.backend import _deeplift_common as common
from kipoi_dfim.backend import deeplift_torch as dlt
from kipoi_dfim.backend.deeplift_keras import (
    deeplift_multipliers_keras,
    maxpool_multiplier_tf,
    maxpool_windows_tf,
    window_max_tf,
)
from kipoi_dfim.backend.deeplift_torch import (
    deeplift_multipliers_torch,
    maxpool_multiplier_torch,
    maxpool_windows_torch,
    window_max_torch,
)
from kipoi_dfim.errors import UnsupportedModelError

L = 24


def onehot(rng, *shape, p=None):
    return np.eye(4, dtype=np.float32)[rng.choice(4, size=shape + (L,), p=p)]


def dinuc_refs(x, n, seed=0):
    """Dinucleotide-shuffled references (N, n, L, 4) from tangermeme."""
    from tangermeme.ersatz import dinucleotide_shuffle

    shuffled = dinucleotide_shuffle(torch.tensor(x.transpose(0, 2, 1)), n=n, random_state=seed)
    return shuffled.numpy().transpose(0, 1, 3, 2).astype(np.float32)


def assert_close(a, b, rtol=1e-4):
    """Equal within rtol of the largest magnitude (multipliers that are ~0 compare absolutely)."""
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-12)
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)


def copy_conv(keras_layer, torch_conv):
    w, b = keras_layer.get_weights()
    torch_conv.weight.data = torch.tensor(w.transpose(2, 1, 0))
    torch_conv.bias.data = torch.tensor(b)


def copy_dense(keras_layer, torch_linear):
    w, b = keras_layer.get_weights()
    torch_linear.weight.data = torch.tensor(w.T)
    torch_linear.bias.data = torch.tensor(b)


def torch_outputs(module, x, target):
    with torch.no_grad():
        y = module(torch.tensor(x.reshape(-1, L, 4))).numpy()[:, target]
    return y.reshape(x.shape[:-2] + y.shape[1:])


# ----------------------------------------------------------------------------------------------- models


def model_a():
    """Conv1D+ReLU+MaxPool+Dense, in Keras and in torch (ReLU as a module, pooling as a module)."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((L, 4))
    conv = keras.layers.Conv1D(8, 5, activation="relu")
    h = keras.layers.MaxPooling1D(2)(conv(inp))
    dense = keras.layers.Dense(3)
    km = keras.Model(inp, dense(keras.layers.Flatten()(h)))

    class Torch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.pool = nn.Conv1d(4, 8, 5), nn.ReLU(), nn.MaxPool1d(2)
            self.dense = nn.Linear(8 * 10, 3)

        def forward(self, x):
            h = self.pool(self.relu(self.conv(x.permute(0, 2, 1))))
            return self.dense(h.permute(0, 2, 1).flatten(1))

    tm = Torch()
    copy_conv(conv, tm.conv)
    copy_dense(dense, tm.dense)
    return km, tm


def model_b():
    """conv-relu-conv-relu-maxpool(overlapping)-dense-relu-dense; torch uses F.relu / F.max_pool1d calls."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((L, 4))
    c1 = keras.layers.Conv1D(8, 5, activation="relu")
    c2 = keras.layers.Conv1D(6, 3)
    h = keras.layers.Activation("relu")(c2(c1(inp)))
    h = keras.layers.MaxPooling1D(4, strides=2)(h)
    d1, d2 = keras.layers.Dense(10, activation="relu"), keras.layers.Dense(2)
    km = keras.Model(inp, d2(d1(keras.layers.Flatten()(h))))

    class Torch(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv1d(4, 8, 5), nn.Conv1d(8, 6, 3)
            self.d1, self.d2 = nn.Linear(6 * 8, 10), nn.Linear(10, 2)

        def forward(self, x):
            h = torch.relu(self.c1(x.permute(0, 2, 1)))
            h = F.max_pool1d(F.relu(self.c2(h)), 4, stride=2)
            return self.d2(self.d1(h.permute(0, 2, 1).flatten(1)).relu())

    tm = Torch()
    copy_conv(c1, tm.c1)
    copy_conv(c2, tm.c2)
    copy_dense(d1, tm.d1)
    copy_dense(d2, tm.d2)
    return km, tm


def model_c():
    """conv-elu-conv-tanh-globalmaxpool-dense-softplus-dense, Sequential in Keras, amax in torch."""
    keras.utils.set_random_seed(3)
    c1, c2 = keras.layers.Conv1D(6, 5, activation="elu"), keras.layers.Conv1D(5, 3, activation="tanh")
    d1, d2 = keras.layers.Dense(4, activation="softplus"), keras.layers.Dense(2)
    km = keras.Sequential([keras.Input((L, 4)), c1, c2, keras.layers.GlobalMaxPooling1D(), d1, d2])

    class Torch(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv1d(4, 6, 5), nn.Conv1d(6, 5, 3)
            self.d1, self.d2 = nn.Linear(5, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = torch.tanh(self.c2(F.elu(self.c1(x.transpose(1, 2)))))
            return self.d2(F.softplus(self.d1(h.amax(dim=-1))))

    tm = Torch()
    for k, t in ((c1, tm.c1), (c2, tm.c2)):
        copy_conv(k, t)
    for k, t in ((d1, tm.d1), (d2, tm.d2)):
        copy_dense(k, t)
    return km, tm


def model_no_pool():
    """conv-relu-conv-sigmoid-dense-tanh-dense: supported by tangermeme (modules) and shap."""
    keras.utils.set_random_seed(4)
    inp = keras.Input((L, 4))
    c1, c2 = keras.layers.Conv1D(8, 5, activation="relu"), keras.layers.Conv1D(4, 3, activation="sigmoid")
    d1, d2 = keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(2)
    km = keras.Model(inp, d2(d1(keras.layers.Flatten()(c2(c1(inp))))))

    class Torch(nn.Module):
        def __init__(self, channels_last=True):
            super().__init__()
            self.channels_last = channels_last
            self.c1, self.r1, self.c2, self.s2 = nn.Conv1d(4, 8, 5), nn.ReLU(), nn.Conv1d(8, 4, 3), nn.Sigmoid()
            self.d1, self.t1, self.d2 = nn.Linear(4 * 18, 6), nn.Tanh(), nn.Linear(6, 2)

        def forward(self, x):
            if self.channels_last:
                x = x.permute(0, 2, 1)
            h = self.s2(self.c2(self.r1(self.c1(x))))
            return self.d2(self.t1(self.d1(h.permute(0, 2, 1).flatten(1))))

    tm = Torch()
    for k, t in ((c1, tm.c1), (c2, tm.c2)):
        copy_conv(k, t)
    for k, t in ((d1, tm.d1), (d2, tm.d2)):
        copy_dense(k, t)
    return km, tm


# ------------------------------------------------------------------------------ (a) same function, same rules


@pytest.mark.parametrize("build", [model_a, model_b, model_c], ids=["a", "b", "globalmax"])
def test_keras_and_torch_give_equal_multipliers(build):
    km, tm = build()
    rng = np.random.default_rng(0)
    # AT-rich sequences: repeated k-mers make exact ties inside pooling windows, the hard case for routing.
    x = np.concatenate([onehot(rng, 3), onehot(rng, 3, p=[0.85, 0.05, 0.05, 0.05])])
    refs = np.concatenate([dinuc_refs(x[:3], 4), onehot(rng, 3, 4, p=[0.85, 0.05, 0.05, 0.05])])
    x_k = km(x).numpy()
    np.testing.assert_allclose(x_k, torch_outputs(tm, x, slice(None)), atol=1e-5)  # same function
    for target in (0, 1):
        mk = deeplift_multipliers_keras(km, x, refs, target, batch_size=5)
        mt = deeplift_multipliers_torch(tm, x, refs, target, batch_size=7)
        assert np.abs(mt).max() > 0
        assert_close(mt, mk)
        assert_close(mt * (x[:, None] - refs), mk * (x[:, None] - refs))


def test_maxpool_rule_same_in_both_engines_with_ties():
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=(3, 16, 5)), 0)  # coarse values: many exact ties and equal x/r entries
    r = np.round(rng.normal(size=(3, 16, 5)), 0)
    g = rng.normal(size=(3, 7, 5))
    mt = maxpool_multiplier_torch(
        maxpool_windows_torch((3, 5, 16), (4,), (2,), (0,), (1,), False),
        torch.tensor(x.transpose(0, 2, 1)),
        torch.tensor(r.transpose(0, 2, 1)),
        torch.tensor(g.transpose(0, 2, 1)),
    ).numpy().transpose(0, 2, 1)
    mk = maxpool_multiplier_tf(
        maxpool_windows_tf((3, 16, 5), (4,), (2,), "valid", (1,)), tf.constant(x), tf.constant(r), tf.constant(g)
    ).numpy()
    np.testing.assert_allclose(mt, mk, atol=1e-12)
    # conservation of the rule alone: sum m * (x - r) == sum g * (pool(x) - pool(r))
    px = tf.nn.max_pool1d(x, 4, 2, "VALID").numpy()
    pr = tf.nn.max_pool1d(r, 4, 2, "VALID").numpy()
    np.testing.assert_allclose((mk * (x - r)).sum((1, 2)), (g * (px - pr)).sum((1, 2)), rtol=1e-10)


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3),
        dict(kernel_size=4, stride=2),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=3, stride=2, ceil_mode=True),
        dict(kernel_size=2, stride=1, dilation=2, padding=1),
        dict(kernel_size=3, stride=3, padding=1, ceil_mode=True),
    ],
)
def test_window_max_torch_reproduces_maxpool(kw):
    z = torch.randn(2, 3, 17)
    pool = nn.MaxPool1d(**kw)
    spec = {k: (v,) for k, v in kw.items() if k != "ceil_mode"}
    out = window_max_torch(
        z, spec["kernel_size"], spec.get("stride", spec["kernel_size"]), spec.get("padding", (0,)),
        spec.get("dilation", (1,)), kw.get("ceil_mode", False),
    )
    assert torch.equal(out, pool(z))
    z2 = torch.randn(2, 3, 9, 11)
    out2 = window_max_torch(z2, (2, 3), (2, 2), (1, 1), (1, 1), False)
    assert torch.equal(out2, nn.MaxPool2d((2, 3), 2, padding=1)(z2))


@pytest.mark.parametrize("pool,strides,padding", [(2, 2, "valid"), (3, 2, "same"), (4, 3, "same"), (3, 1, "valid")])
def test_window_max_tf_reproduces_keras_maxpool(pool, strides, padding):
    z = tf.random.normal((2, 17, 3))
    layer = keras.layers.MaxPooling1D(pool, strides=strides, padding=padding)
    np.testing.assert_array_equal(window_max_tf(z, (pool,), (strides,), padding, (1,)).numpy(), layer(z).numpy())
    z2 = tf.random.normal((2, 9, 7, 3))
    layer2 = keras.layers.MaxPooling2D((2, 3), strides=(2, 2), padding=padding)
    np.testing.assert_array_equal(
        window_max_tf(z2, (2, 3), (2, 2), padding, (1, 2)).numpy(), layer2(z2).numpy()
    )


# ------------------------------------------------------------------------- (b) independent oracles, no pooling


def test_torch_matches_tangermeme_without_maxpool():
    from tangermeme.deep_lift_shap import deep_lift_shap

    _, tm = model_no_pool()
    rng = np.random.default_rng(1)
    x = onehot(rng, 4)
    refs = dinuc_refs(x, 5, seed=3)
    mine = deeplift_multipliers_torch(tm, x, refs, 1, batch_size=6)
    tm.channels_last = False  # tangermeme feeds (N, 4, L)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = deep_lift_shap(
            tm, torch.tensor(x.transpose(0, 2, 1)), references=torch.tensor(refs.transpose(0, 1, 3, 2)),
            target=1, raw_outputs=True, device="cpu", batch_size=6,
        ).numpy().transpose(0, 1, 3, 2)
    assert_close(mine * (x[:, None] - refs), theirs * (x[:, None] - refs))
    assert_close(mine, theirs)


def test_keras_matches_shap_without_maxpool():
    import shap

    km, _ = model_no_pool()
    rng = np.random.default_rng(2)
    x = onehot(rng, 3)
    refs = dinuc_refs(x, 4, seed=5)
    mine = (deeplift_multipliers_keras(km, x, refs, 0) * (x[:, None] - refs)).mean(1)
    lookup = {x[i].tobytes(): refs[i] for i in range(len(x))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer = shap.DeepExplainer(km, lambda xs: [lookup[np.asarray(xs[0], np.float32).tobytes()]])
        theirs = explainer.shap_values(x, check_additivity=False)[..., 0]
    assert_close(mine, theirs)


# ---------------------------------------------------------------------------------- (c) summation-to-delta


@pytest.mark.parametrize("build", [model_a, model_b, model_c, model_no_pool], ids=["a", "b", "gmp", "nopool"])
def test_summation_to_delta(build):
    km, tm = build()
    rng = np.random.default_rng(3)
    x = onehot(rng, 4)
    refs = np.concatenate([dinuc_refs(x, 3, seed=7), onehot(rng, 4, 2)], axis=1)
    f_x = km(x).numpy()
    f_r = km(refs.reshape(-1, L, 4)).numpy().reshape(4, 5, -1)
    for target in (0, 1):
        delta = f_x[:, None, target] - f_r[..., target]
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no conservation warning may fire
            mk = deeplift_multipliers_keras(km, x, refs, target)
            mt = deeplift_multipliers_torch(tm, x, refs, target)
        for m in (mk, mt):
            total = (m * (x[:, None] - refs)).sum((2, 3))
            np.testing.assert_allclose(total, delta, atol=1e-4 * max(1.0, np.abs(f_x).max()))
        np.testing.assert_allclose(torch_outputs(tm, x, target), f_x[:, target], atol=1e-5)


def test_one_warning_with_the_count_of_violating_pairs(monkeypatch):
    """A rule that does not conserve (plain gradient) is reported once, with the right pair count."""
    _, tm = model_no_pool()
    rng = np.random.default_rng(4)
    x = onehot(rng, 3)
    refs = onehot(rng, 3, 4)

    def gradient_only(fn, xs, rs, *_):
        with torch.enable_grad():
            xg = xs.detach().requires_grad_(True)
            return torch.autograd.grad(fn(xg).sum(), xg)[0]

    monkeypatch.setattr(dlt, "rescale_multiplier_torch", gradient_only)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = deeplift_multipliers_torch(tm, x, refs, 0, batch_size=5)
    f_x, f_r = torch_outputs(tm, x, 0), torch_outputs(tm, refs, 0)
    scale = np.maximum(np.maximum(np.abs(f_x)[:, None], np.abs(f_r)), common.CONSERVATION_FLOOR)
    bad = np.abs((m * (x[:, None] - refs)).sum((2, 3)) - (f_x[:, None] - f_r)) > common.CONSERVATION_RTOL * scale
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert bad.sum() > 0
    assert len(runtime) == 1
    assert f"{bad.sum()} of 12" in str(runtime[0].message)


def test_batch_size_does_not_change_results():
    km, tm = model_b()
    rng = np.random.default_rng(6)
    x, refs = onehot(rng, 3), onehot(rng, 3, 3)
    np.testing.assert_allclose(
        deeplift_multipliers_torch(tm, x, refs, 0, batch_size=1),
        deeplift_multipliers_torch(tm, x, refs, 0, batch_size=64), atol=1e-6,
    )
    np.testing.assert_allclose(
        deeplift_multipliers_keras(km, x, refs, 0, batch_size=2),
        deeplift_multipliers_keras(km, x, refs, 0, batch_size=64), atol=1e-6,
    )
    tm.train()
    deeplift_multipliers_torch(tm, x, refs, 0)
    assert tm.training and tm.c1.training


# --------------------------------------------------------------------------------- (d) unsupported models


class _Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.dense = nn.Conv1d(4, 3, 3), nn.Linear(3 * (L - 2), 1)

    def forward(self, x):
        return self.dense(F.gelu(self.conv(x.permute(0, 2, 1))).flatten(1))


class _Cumsum(_Gelu):
    def forward(self, x):
        return self.dense(torch.cumsum(self.conv(x.permute(0, 2, 1)), dim=-1).flatten(1))


class _GeluModule(_Gelu):
    def __init__(self):
        super().__init__()
        self.act = nn.GELU()

    def forward(self, x):
        return self.dense(self.act(self.conv(x.permute(0, 2, 1))).flatten(1))


class _Gate(_Gelu):
    def forward(self, x):
        h = self.conv(x.permute(0, 2, 1))
        return self.dense((h * torch.sigmoid(h)).flatten(1))


class _ControlFlow(_Gelu):
    def forward(self, x):
        h = self.conv(x.permute(0, 2, 1))
        if h.sum() > 0:
            h = -h
        return self.dense(h.flatten(1))


@pytest.mark.parametrize(
    "module,name",
    [(_Gelu, "gelu"), (_Cumsum, "cumsum"), (_GeluModule, "GELU"), (_Gate, "mul"), (_ControlFlow, "trace")],
)
def test_torch_unsupported_ops_are_named(module, name):
    rng = np.random.default_rng(0)
    with pytest.raises(UnsupportedModelError, match=name):
        deeplift_multipliers_torch(module(), onehot(rng, 1), onehot(rng, 1, 1), 0)


class MyScale(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


def _keras_with(layer):
    inp = keras.Input((L, 4))
    h = layer(keras.layers.Conv1D(3, 3)(inp))
    return keras.Model(inp, keras.layers.Dense(1)(keras.layers.Flatten()(h)))


@pytest.mark.parametrize(
    "layer,name",
    [
        (lambda: MyScale(name="my_scale"), "my_scale"),
        (lambda: keras.layers.Lambda(lambda t: t * t, name="squares"), "squares"),
        (lambda: keras.layers.Activation("gelu", name="act"), "gelu"),
        (lambda: keras.layers.LayerNormalization(name="ln"), "LayerNormalization"),
    ],
)
def test_keras_unsupported_layers_are_named(layer, name):
    rng = np.random.default_rng(0)
    with pytest.raises(UnsupportedModelError, match=name):
        deeplift_multipliers_keras(_keras_with(layer()), onehot(rng, 1), onehot(rng, 1, 1), 0)


def test_keras_nested_model_is_walked():
    inner = keras.Sequential([keras.Input((L - 2, 3)), keras.layers.Activation("gelu", name="inner_gelu")])
    with pytest.raises(UnsupportedModelError, match="inner_gelu"):
        rng = np.random.default_rng(0)
        deeplift_multipliers_keras(_keras_with(inner), onehot(rng, 1), onehot(rng, 1, 1), 0)


# -------------------------------------------------------------------------------------- (e) closed forms


def _dot_models(activation, w, b):
    km = keras.Sequential(
        [keras.Input((L, 4)), keras.layers.Flatten(), keras.layers.Dense(1, activation=activation)]
    )
    km.layers[-1].set_weights([w.reshape(-1, 1), np.array([b], np.float32)])
    lin = nn.Linear(L * 4, 1)
    lin.weight.data, lin.bias.data = torch.tensor(w.reshape(1, -1)), torch.tensor([b])
    act = {"relu": nn.ReLU(), "sigmoid": nn.Sigmoid()}[activation]
    return km, nn.Sequential(nn.Flatten(), lin, act)


@pytest.mark.parametrize(
    "activation,fn", [("relu", lambda z: np.maximum(z, 0)), ("sigmoid", lambda z: 1 / (1 + np.exp(-z)))]
)
def test_single_unit_over_dot_product(activation, fn):
    """f(x) = act(w.x + b): the multiplier is w * (act(z_x) - act(z_r)) / (z_x - z_r)."""
    rng = np.random.default_rng(7)
    w = rng.normal(size=(L, 4)).astype(np.float32)
    x, refs = onehot(rng, 3), onehot(rng, 3, 4)
    z_x = (x * w).sum((1, 2))
    b = float(-np.median(z_x))  # some sequences above, some below the ReLU kink
    z_x, z_r = z_x + b, (refs * w).sum((2, 3)) + b
    ratio = (fn(z_x[:, None]) - fn(z_r)) / (z_x[:, None] - z_r)
    expected = ratio[..., None, None] * w
    km, tm = _dot_models(activation, w, b)
    for m in (deeplift_multipliers_keras(km, x, refs, 0), deeplift_multipliers_torch(tm, x, refs, 0)):
        np.testing.assert_allclose(m, expected, rtol=1e-4, atol=1e-6)


def test_maxpool_by_hand():
    """MaxPool(2) on the one-hot itself, then a dense unit with weights g[window, base].

    x = AACG, r = CATT. Worked out in docs/deeplift.md's rule: (c - y_r) to x's argmax, (y_x - c) to r's
    argmax, ties split evenly, gradient at x where x == r.
    """
    seq = {"A": 0, "C": 1, "G": 2, "T": 3}
    x = np.eye(4, dtype=np.float32)[[seq[c] for c in "AACG"]][None]
    r = np.eye(4, dtype=np.float32)[[seq[c] for c in "CATT"]][None, None]
    g = np.arange(1, 9, dtype=np.float32).reshape(2, 4)  # g[window, base]
    (a0, c0, g0, t0), (a1, c1, g1, t1) = g
    expected = np.array(
        [  # positions 0..3, columns A C G T
            [0.0, c0, g0 / 2, t0 / 2],
            [a0 / 2, c0 / 2, g0 / 2, t0 / 2],
            [a1 / 2, c1, 0.0, t1 / 2],
            [a1 / 2, 0.0, g1, t1 / 2],
        ],
        np.float32,
    )
    km = keras.Sequential([keras.Input((4, 4)), keras.layers.MaxPooling1D(2), keras.layers.Flatten(),
                           keras.layers.Dense(1)])
    km.layers[-1].set_weights([g.reshape(8, 1), np.zeros(1, np.float32)])

    class Torch(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool, self.dense = nn.MaxPool1d(2), nn.Linear(8, 1)
            self.dense.weight.data, self.dense.bias.data = torch.tensor(g.reshape(1, 8)), torch.zeros(1)

        def forward(self, x):
            return self.dense(self.pool(x.permute(0, 2, 1)).permute(0, 2, 1).flatten(1))

    for m in (deeplift_multipliers_keras(km, x, r, 0), deeplift_multipliers_torch(Torch(), x, r, 0)):
        np.testing.assert_allclose(m[0, 0], expected, atol=1e-6)
        # f(x) - f(r) = -c0 + c1 + g1 - t1
        np.testing.assert_allclose((m * (x[:, None] - r)).sum(), -c0 + c1 + g1 - t1, rtol=1e-6)
