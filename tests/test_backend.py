"""The model adapter: layouts, logits, targets, gradients (against finite differences), Keras == PyTorch."""

import os

import numpy as np
import pytest
import torch
import yaml
from conftest import random_onehot
from torch import nn

import kipoi_dfim
from kipoi_dfim.backend.layouts import LAYOUTS, from_model_layout, layout_from_shape, to_model_layout
from kipoi_dfim.errors import InputError, UnsupportedModelError

L = 40


class KerasLikeNet(nn.Module):
    """conv(4->6, k=5) -> tanh -> mean over positions -> dense(2) -> sigmoid, input in a given layout."""

    def __init__(self, layout="(4,L)"):
        super().__init__()
        self.layout = layout
        self.conv = nn.Conv1d(4, 6, 5)
        self.act = nn.Tanh()
        self.dense = nn.Linear(6, 2)
        self.out = nn.Sigmoid()

    def forward(self, x):
        # bring any layout back to (N, 4, L)
        if self.layout == "(L,4)":
            x = x.permute(0, 2, 1)
        elif self.layout == "(1,4,L)":
            x = x[:, 0]
        return self.out(self.dense(self.act(self.conv(x)).mean(-1)))


def test_layouts_roundtrip(rng):
    x = random_onehot(rng, 3, L)
    for lay in LAYOUTS:
        y = to_model_layout(x, lay)
        assert y.size == x.size
        np.testing.assert_array_equal(from_model_layout(y, lay), x)
        shape = tuple(L if d == "L" else int(d) for d in lay.strip("()").split(","))
        assert y.shape[1:] == shape
        assert layout_from_shape(shape) == (lay, L)


def test_same_function_in_every_layout_gives_same_predictions(rng):
    torch.manual_seed(0)
    base = KerasLikeNet("(4,L)")
    x = random_onehot(rng, 5, L)
    ref = kipoi_dfim.load_model(base, seq_len=L, layout="(4,L)").predict(x)
    for lay in ("(L,4)", "(1,4,L)"):
        net = KerasLikeNet(lay)
        net.load_state_dict(base.state_dict())
        m = kipoi_dfim.load_model(net, seq_len=L, layout=lay)
        np.testing.assert_allclose(m.predict(x), ref, rtol=1e-6)


def test_logit_output_strips_final_sigmoid(rng):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(4, 3, 5), nn.ReLU(), nn.Flatten(), nn.Linear(3 * (L - 4), 2), nn.Sigmoid())
    x = random_onehot(rng, 4, L)
    m = kipoi_dfim.load_model(net, seq_len=L)
    assert m.activation == "sigmoid"
    raw = m.predict(x, output="raw")
    np.testing.assert_allclose(1 / (1 + np.exp(-m.predict(x))), raw, rtol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(x.transpose(0, 2, 1).copy())).numpy(), raw, rtol=1e-6)
    m_raw = kipoi_dfim.load_model(net, seq_len=L, output="raw")
    np.testing.assert_allclose(m_raw.predict(x), raw, rtol=1e-6)


def _finite_difference(m, x, target, eps=1e-2):
    """Central differences of the scored output w.r.t. every input entry (float64 accumulation)."""
    g = np.zeros(x.shape, np.float64)
    for i in range(x.shape[1]):
        for j in range(4):
            xp, xm = x.copy(), x.copy()
            xp[:, i, j] += eps
            xm[:, i, j] -= eps
            g[:, i, j] = (m.predict(xp)[:, target].astype(np.float64) - m.predict(xm)[:, target]) / (2 * eps)
    return g


def test_torch_gradient_matches_finite_differences(rng):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv1d(4, 4, 3), nn.Softplus(), nn.Flatten(), nn.Linear(4 * 18, 2), nn.Sigmoid())
    m = kipoi_dfim.load_model(net, seq_len=20, targets=["a", "b"])
    x = random_onehot(rng, 2, 20)
    for t in ("a", 1):
        np.testing.assert_allclose(m.gradient(x, t), _finite_difference(m, x, m.target_index(t)), atol=2e-4)


def _keras_twin(torch_net: KerasLikeNet):
    import keras

    inp = keras.Input((L, 4))
    conv = keras.layers.Conv1D(6, 5, activation="tanh")
    h = conv(inp)
    h = keras.layers.GlobalAveragePooling1D()(h)
    dense = keras.layers.Dense(2, activation="sigmoid")
    out = dense(h)
    model = keras.Model(inp, out)
    w = torch_net.conv.weight.detach().numpy()  # (out, in, k)
    conv.set_weights([w.transpose(2, 1, 0), torch_net.conv.bias.detach().numpy()])
    dense.set_weights([torch_net.dense.weight.detach().numpy().T, torch_net.dense.bias.detach().numpy()])
    return model


def test_keras_and_torch_adapters_agree_and_keras_gradient_matches_finite_differences(rng):
    torch.manual_seed(2)
    tnet = KerasLikeNet("(4,L)")
    kmodel = _keras_twin(tnet)
    mt = kipoi_dfim.load_model(tnet, seq_len=L)
    mk = kipoi_dfim.load_model(kmodel)
    assert (mk.seq_len, mk.layout, mk.activation) == (L, "(L,4)", "sigmoid")
    x = random_onehot(rng, 3, L)
    np.testing.assert_allclose(mk.predict(x), mt.predict(x), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mk.predict(x, "raw"), mt.predict(x, "raw"), rtol=1e-4, atol=1e-6)
    for t in (0, 1):
        np.testing.assert_allclose(mk.gradient(x, t), mt.gradient(x, t), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mk.gradient(x[:1], 1), _finite_difference(mk, x[:1], 1), atol=2e-4)


def test_keras_file_and_kipoi_dir(tmp_path, rng):
    torch.manual_seed(3)
    kmodel = _keras_twin(KerasLikeNet())
    path = str(tmp_path / "m.keras")
    kmodel.save(path)
    x = random_onehot(rng, 2, L)
    m1 = kipoi_dfim.load_model(path)
    np.testing.assert_allclose(m1.predict(x, "raw"), np.asarray(kmodel(x)), rtol=1e-5)
    d = tmp_path / "kdir"
    d.mkdir()
    os.replace(path, d / "model.keras")
    (d / "model.yaml").write_text(yaml.safe_dump({
        "type": "keras", "args": {"weights": "model.keras"},
        "schema": {"inputs": {"name": "seq", "shape": f"({L}, 4)"},
                   "targets": {"name": "out", "shape": "(2,)", "column_labels": ["up", "down"]}},
    }))
    m2 = kipoi_dfim.load_model(str(d))
    assert m2.targets == ["up", "down"]
    assert m2.target_index("down") == 1
    np.testing.assert_allclose(m2.predict(x), m1.predict(x), rtol=1e-6)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="seq_len"):
        kipoi_dfim.load_model(nn.Linear(3, 1))
    d = tmp_path / "sk"
    d.mkdir()
    (d / "model.yaml").write_text("type: sklearn\nargs: {pkl_file: m.pkl}\n")
    with pytest.raises(UnsupportedModelError, match="sklearn.*supported.*keras.*pytorch"):
        kipoi_dfim.load_model(str(d))
    with pytest.raises(InputError, match="neither a Kipoi model directory"):
        kipoi_dfim.load_model(str(tmp_path / "nope"))
    m = kipoi_dfim.load_model(nn.Sequential(nn.Flatten(), nn.Linear(40, 2)), seq_len=10)
    with pytest.raises(InputError, match="unknown target 'x'"):
        m.target_index("x")
    with pytest.raises(InputError, match="length 12 but the model takes 10"):
        m.predict(np.zeros((1, 12, 4), np.float32))
