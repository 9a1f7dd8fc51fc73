"""One function, every way a user can hand it to kipoi-dfim, gives the same numbers.

The function: conv(4 -> 3, k=5) -> relu (or softplus) -> max-pool 2 -> flatten -> dense(2) -> sigmoid, targets
"up"/"down". It is built from one set of weights as

* a Keras 3 model (in memory, and a Kipoi ``keras`` dir with ``model.keras``),
* a Keras 2 JSON + weights HDF5 (TensorFlow backend, input (L, 4)) in a Kipoi ``keras`` dir (``arch``/``weights``),
* a Keras 1 JSON + weights HDF5 trained "with Theano": ``backend: theano``, ``image_dim_ordering: th``, a
  Convolution2D over channels-first input (1, 4, L) whose stored kernel is the flipped one (Theano convolves)
  and a Dense whose rows follow the channels-first Flatten,
* a PyTorch module (in memory, and a Kipoi ``pytorch`` dir with module_file/module_class/weights),
* a TensorFlow SavedModel (``model.export``) in a Kipoi ``tensorflow2`` dir.

Oracles: a numpy forward pass of the weights (predictions and logits), central finite differences (gradients,
on the smooth variant), the two independent DeepLIFT engines (Keras and PyTorch) agreeing with each other and
summing to f(x) - f(ref), kipoi's own model classes (predict_on_batch), and the original Keras model.
"""

from __future__ import annotations

import json

import h5py
import keras
import numpy as np
import pytest
import torch
import yaml
from conftest import random_onehot

import kipoi_dfim
from kipoi_dfim.errors import InputError, UnsupportedModelError
from kipoi_dfim.shuffle import dinucleotide_shuffle

L, F, K, POOL = 24, 3, 5, 2
P = (L - K + 1) // POOL  # pooled positions
LABELS = ["up", "down"]
N_REFS = 4

MODEL_PY = """
from torch import nn


class Net(nn.Sequential):
    def __init__(self, seq_len=24, filters=3, kernel=5, act="relu"):
        super().__init__(
            nn.Conv1d(4, filters, kernel),
            nn.ReLU() if act == "relu" else nn.Softplus(),
            nn.MaxPool1d(2),
            nn.Flatten(),
            nn.Linear(filters * ((seq_len - kernel + 1) // 2), 2),
            nn.Sigmoid(),
        )
"""


# --------------------------------------------------------------------------------------- the one function
def make_weights(seed: int) -> dict[str, np.ndarray]:
    """conv_w (K, 4, F) cross-correlation kernel, conv_b (F,), dense_w (P, F, 2) by (pooled position, filter)."""
    rng = np.random.default_rng(seed)
    return {
        "conv_w": rng.normal(0, 0.6, (K, 4, F)).astype(np.float32),
        "conv_b": rng.normal(0, 0.2, F).astype(np.float32),
        "dense_w": rng.normal(0, 0.4, (P, F, 2)).astype(np.float32),
        "dense_b": np.array([0.3, -0.2], np.float32),
    }


def numpy_logits(w: dict, x: np.ndarray, act: str) -> np.ndarray:
    """Forward pass in float64 straight from the weights: the oracle for every build."""
    x = x.astype(np.float64)
    windows = np.stack([x[:, i : i + K] for i in range(L - K + 1)], axis=1)  # (N, L-K+1, K, 4)
    h = np.einsum("npkc,kcf->npf", windows, w["conv_w"]) + w["conv_b"]
    h = np.maximum(h, 0) if act == "relu" else np.logaddexp(0, h)
    h = h[:, : P * POOL].reshape(len(x), P, POOL, F).max(axis=2)
    return np.einsum("npf,pfo->no", h, w["dense_w"]) + w["dense_b"]


def keras3_model(w: dict, act: str, final: str = "sigmoid") -> keras.Model:
    inp = keras.Input((L, 4), name="seq")
    conv = keras.layers.Conv1D(F, K, activation=act, name="conv")
    h = keras.layers.MaxPooling1D(POOL, name="pool")(conv(inp))
    h = keras.layers.Flatten(name="flat")(h)
    dense = keras.layers.Dense(2, activation=final, name="out")
    model = keras.Model(inp, dense(h))
    conv.set_weights([w["conv_w"], w["conv_b"]])
    dense.set_weights([w["dense_w"].reshape(P * F, 2), w["dense_b"]])  # Keras flattens (P, F) position-major
    return model


def _dense_filter_major(w: dict) -> np.ndarray:
    """Dense kernel for a channels-first flatten (row f * P + p), as PyTorch and Theano 'th' models store it."""
    return w["dense_w"].transpose(1, 0, 2).reshape(F * P, 2)


def torch_module(w: dict, act: str) -> torch.nn.Module:
    ns: dict = {}
    exec(MODEL_PY, ns)  # the same source the Kipoi pytorch dir ships
    net = ns["Net"](seq_len=L, filters=F, kernel=K, act=act)
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(w["conv_w"].transpose(2, 1, 0).copy()))  # (F, 4, K)
        net[0].bias.copy_(torch.from_numpy(w["conv_b"]))
        net[4].weight.copy_(torch.from_numpy(_dense_filter_major(w).T.copy()))
        net[4].bias.copy_(torch.from_numpy(w["dense_b"]))
    return net.eval()


# ----------------------------------------------------------------------------------- Kipoi model dirs
def _schema(shape: str) -> dict:
    return {"inputs": {"name": "seq", "shape": shape},
            "targets": {"name": "out", "shape": "(2,)", "column_labels": LABELS}}


def _write_yaml(d, mtype: str, args: dict, shape: str) -> str:
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.yaml").write_text(yaml.safe_dump({
        "type": mtype, "args": args, "info": {"doc": "kipoi-dfim test model"}, "schema": _schema(shape),
    }))
    return str(d)


def _write_weights_h5(path, layers: dict[str, list[tuple[str, np.ndarray]]], attrs: dict[str, str]) -> None:
    """An HDF5 laid out as Keras 1/2 ``save_weights`` wrote it: layer_names, per-layer weight_names."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for k, v in attrs.items():
            f.attrs[k] = v.encode()
        for name, weights in layers.items():
            g = f.create_group(name)
            g.attrs["weight_names"] = np.array([wn.encode() for wn, _ in weights])
            for wn, arr in weights:
                g[wn] = arr


def keras2_tf_dir(d, w: dict, act: str) -> str:
    """Keras 2 Sequential JSON, TensorFlow backend, Conv1D on (L, 4)."""
    def layer(cls, **cfg):
        return {"class_name": cls, "config": cfg}

    arch = {"class_name": "Sequential", "keras_version": "2.2.4", "backend": "tensorflow", "config": {
        "name": "seq", "layers": [
            layer("Conv1D", name="conv", filters=F, kernel_size=[K], strides=[1], padding="valid",
                  activation=act, use_bias=True, batch_input_shape=[None, L, 4]),
            layer("MaxPooling1D", name="pool", pool_size=[POOL], strides=[POOL], padding="valid"),
            layer("Flatten", name="flat"),
            layer("Dense", name="out", units=2, activation="sigmoid", use_bias=True),
        ]}}
    d.mkdir(parents=True, exist_ok=True)
    (d / "arch.json").write_text(json.dumps(arch))
    _write_weights_h5(d / "weights.h5", {
        "conv": [("conv/kernel:0", w["conv_w"]), ("conv/bias:0", w["conv_b"])],
        "pool": [], "flat": [],
        "out": [("out/kernel:0", w["dense_w"].reshape(P * F, 2)), ("out/bias:0", w["dense_b"])],
    }, {"backend": "tensorflow", "keras_version": "2.2.4"})
    return _write_yaml(d, "keras", {"arch": "arch.json", "weights": "weights.h5"}, f"({L}, 4)")


def keras1_theano_dir(d, w: dict, act: str) -> str:
    """Keras 1 Sequential JSON as Theano-era Kipoi models: input (1, 4, L), Convolution2D rows = the 4 bases.

    Layers say dim_ordering "default", so the model.yaml's ``image_dim_ordering: th`` decides. Theano convolves
    (flips the kernel), so the stored kernel is the cross-correlation kernel flipped on both axes; the
    channels-first Flatten of (F, 1, P) is filter-major, so the Dense rows are too.
    """
    conv_cfg = dict(name="conv", nb_filter=F, nb_row=4, nb_col=K, border_mode="valid", subsample=[1, 1],
                    dim_ordering="default", activation=act, bias=True, batch_input_shape=[None, 1, 4, L])
    arch = {"class_name": "Sequential", "config": [
        {"class_name": "Convolution2D", "config": conv_cfg},
        {"class_name": "MaxPooling2D", "config": dict(name="pool", pool_size=[1, POOL], strides=[1, POOL],
                                                      border_mode="valid", dim_ordering="default")},
        {"class_name": "Flatten", "config": {"name": "flat"}},
        {"class_name": "Dense", "config": dict(name="out", output_dim=2, activation="sigmoid", bias=True)},
    ]}
    # th kernel (out, in, rows, cols): W[f, 0, r, c] = conv_w[K - 1 - c, 3 - r, f]
    th_kernel = w["conv_w"][::-1, ::-1].transpose(2, 1, 0)[:, None]
    d.mkdir(parents=True, exist_ok=True)
    (d / "arch.json").write_text(json.dumps(arch))
    _write_weights_h5(d / "weights.h5", {
        "conv": [("conv_W", np.ascontiguousarray(th_kernel)), ("conv_b", w["conv_b"])],
        "pool": [], "flat": [],
        "out": [("out_W", _dense_filter_major(w)), ("out_b", w["dense_b"])],
    }, {})
    return _write_yaml(d, "keras", {"arch": "arch.json", "weights": "weights.h5", "backend": "theano",
                                    "image_dim_ordering": "th"}, f"(1, 4, {L})")


def keras3_dir(d, w: dict, act: str) -> str:
    d.mkdir(parents=True, exist_ok=True)
    keras3_model(w, act).save(str(d / "model.keras"))
    return _write_yaml(d, "keras", {"weights": "model.keras"}, f"({L}, 4)")


def torch_dir(d, w: dict, act: str) -> str:
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.py").write_text(MODEL_PY)
    torch.save(torch_module(w, act).state_dict(), str(d / "weights.pt"))
    return _write_yaml(d, "pytorch", {
        "module_file": "model.py", "module_class": "Net", "weights": "weights.pt",
        "module_kwargs": {"seq_len": L, "filters": F, "kernel": K, "act": act},
    }, f"(4, {L})")


BUILDS = ("keras3", "keras3_dir", "keras2_tf_dir", "keras1_theano_dir", "torch", "torch_dir")


def build_all(tmp, w: dict, act: str) -> dict:
    """Every build of the function through kipoi_dfim.load_model."""
    t = kipoi_dfim.load_model(torch_module(w, act), seq_len=L, layout="(4,L)", targets=LABELS)
    return {
        "keras3": kipoi_dfim.load_model(keras3_model(w, act), targets=LABELS),
        "keras3_dir": kipoi_dfim.load_model(keras3_dir(tmp / "keras3", w, act)),
        "keras2_tf_dir": kipoi_dfim.load_model(keras2_tf_dir(tmp / "keras2", w, act)),
        "keras1_theano_dir": kipoi_dfim.load_model(keras1_theano_dir(tmp / "keras1_th", w, act)),
        "torch": t,
        "torch_dir": kipoi_dfim.load_model(torch_dir(tmp / "torch", w, act)),
    }


def assert_close(actual: np.ndarray, desired: np.ndarray, rtol: float = 1e-4, what: str = "") -> None:
    """1e-4 relative, with the absolute floor relative to the array's scale (entries near 0 cross-cancel)."""
    desired = np.asarray(desired, np.float64)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * float(np.abs(desired).max()), err_msg=what)


@pytest.fixture(scope="module")
def weights() -> dict:
    return make_weights(7)


@pytest.fixture(scope="module")
def relu_models(tmp_path_factory, weights) -> dict:
    return build_all(tmp_path_factory.mktemp("relu"), weights, "relu")


@pytest.fixture(scope="module")
def seqs() -> np.ndarray:
    return random_onehot(np.random.default_rng(11), 5, L)


# ------------------------------------------------------------------------------------------------ tests
def test_every_build_predicts_the_numpy_logits(relu_models, weights, seqs):
    logits = numpy_logits(weights, seqs, "relu")
    assert np.ptp(logits) > 0.5  # a non-trivial function
    for name, m in relu_models.items():
        assert (m.targets, m.seq_len, m.activation, m.output) == (LABELS, L, "sigmoid", "logit"), name
        assert_close(m.predict(seqs), logits, what=name)
        assert_close(m.predict(seqs, output="raw"), 1 / (1 + np.exp(-logits)), what=name)
    assert relu_models["keras1_theano_dir"].layout == "(1,4,L)"
    assert relu_models["torch_dir"].layout == "(4,L)"


def test_every_build_has_the_same_gradients_by_label(relu_models, seqs):
    ref = relu_models["torch"]
    for t in LABELS:
        g = ref.gradient(seqs, t)
        assert np.abs(g).max() > 0.1
        for name, m in relu_models.items():
            assert_close(m.gradient(seqs, t), g, what=f"{name} {t}")
    # the two targets differ, so a target mix-up would be seen
    assert not np.allclose(ref.gradient(seqs, "up"), ref.gradient(seqs, "down"), atol=1e-3)


def test_every_build_has_the_same_deeplift_with_dinucleotide_shuffled_references(relu_models, seqs):
    refs = dinucleotide_shuffle(seqs, n=N_REFS, seed=3)  # (N, R, L, 4)
    assert refs.shape == (len(seqs), N_REFS, L, 4)
    ref_model = relu_models["torch"]
    for t in LABELS:
        c = ref_model.deeplift(seqs, refs, t)
        hyp = ref_model.deeplift(seqs, refs, t, hypothetical=True)
        # summation to delta (DeepLIFT's defining property) on the logit: sum c = mean_r f(x) - f(r)
        ti = ref_model.target_index(t)
        fx = ref_model.predict(seqs)[:, ti]
        fr = ref_model.predict(refs.reshape(-1, L, 4))[:, ti].reshape(len(seqs), N_REFS)
        np.testing.assert_allclose(c.sum((1, 2)), fx - fr.mean(1), rtol=1e-4, atol=1e-4)
        for name, m in relu_models.items():
            assert_close(m.deeplift(seqs, refs, t), c, what=f"{name} {t}")
            assert_close(m.deeplift(seqs, refs, t, hypothetical=True), hyp, what=f"{name} {t} hypothetical")
    # the max-pool rule is exercised: DeepLIFT differs from gradient x (x - mean ref) here
    gx = (ref_model.gradient(seqs, "up") * (seqs - refs.mean(1))).sum((1, 2))
    assert np.abs(gx - ref_model.deeplift(seqs, refs, "up").sum((1, 2))).max() > 1e-3


def _finite_differences(m, x: np.ndarray, target: int, eps: float = 1e-2) -> np.ndarray:
    """Central differences of the scored output w.r.t. every input entry, in one batched predict."""
    n = len(x)
    steps = np.eye(L * 4, dtype=np.float32).reshape(L * 4, L, 4) * eps
    xs = np.concatenate([(x[:, None] + steps[None]).reshape(-1, L, 4), (x[:, None] - steps[None]).reshape(-1, L, 4)])
    y = m.predict(xs)[:, target].astype(np.float64)
    return ((y[: n * L * 4] - y[n * L * 4 :]) / (2 * eps)).reshape(n, L, 4)


def test_gradients_match_finite_differences_smooth_variant(tmp_path, weights, seqs):
    models = build_all(tmp_path, weights, "softplus")
    x = seqs[:2]
    logits = numpy_logits(weights, x, "softplus")
    for name in ("keras3", "keras1_theano_dir", "keras2_tf_dir", "torch_dir"):
        m = models[name]
        assert_close(m.predict(x), logits, what=name)
        for t in LABELS:
            fd = _finite_differences(m, x, m.target_index(t))
            np.testing.assert_allclose(m.gradient(x, t), fd, rtol=1e-3, atol=3e-4, err_msg=f"{name} {t}")


def _kipoi_model(d: str):
    import kipoi

    return kipoi.get_model(d, source="dir", with_dataloader=False)


@pytest.mark.parametrize("build", ["keras3_dir", "torch_dir"])
def test_kipoi_model_object_equals_model_dir(tmp_path, weights, seqs, build):
    """load_model(kipoi.get_model(dir)) == load_model(dir), and both match kipoi's own predict_on_batch."""
    writer = {"keras3_dir": keras3_dir, "torch_dir": torch_dir}[build]
    d = writer(tmp_path / build, weights, "relu")
    kobj = _kipoi_model(d)
    assert type(kobj).__name__ == {"keras3_dir": "KerasModel", "torch_dir": "PyTorchModel"}[build]
    from_obj, from_dir = kipoi_dfim.load_model(kobj), kipoi_dfim.load_model(d)
    assert from_obj.targets == from_dir.targets == LABELS
    assert (from_obj.seq_len, from_obj.layout) == (from_dir.seq_len, from_dir.layout)
    native = seqs if build == "keras3_dir" else seqs.transpose(0, 2, 1).copy()
    probs = np.asarray(kobj.predict_on_batch(native))
    assert_close(from_obj.predict(seqs, output="raw"), probs)
    assert_close(from_dir.predict(seqs), from_obj.predict(seqs))
    refs = dinucleotide_shuffle(seqs, n=2, seed=5)
    for t in LABELS:
        assert_close(from_obj.gradient(seqs, t), from_dir.gradient(seqs, t))
        assert_close(from_obj.deeplift(seqs, refs, t), from_dir.deeplift(seqs, refs, t))


# ------------------------------------------------------------------------------- TensorFlow 2 SavedModels
def _export(model: keras.Model, d) -> str:
    sm = d / "savedmodel"
    model.export(str(sm), verbose=False)
    return _write_yaml(d, "tensorflow2", {"savedmodel_path": "savedmodel"}, f"({L}, 4)")


def test_tensorflow2_savedmodel_predict_gradient_and_refusals(tmp_path, weights, seqs):
    original = keras3_model(weights, "relu")
    d = _export(original, tmp_path / "tf2")
    # the final sigmoid is inside the SavedModel: logits are refused, not faked
    with pytest.raises(UnsupportedModelError, match=r"ends in a sigmoid.*output='raw'"):
        kipoi_dfim.load_model(d)
    m = kipoi_dfim.load_model(d, output="raw")
    assert (m.targets, m.seq_len, m.layout, m.activation) == (LABELS, L, "(L,4)", "sigmoid")
    oracle = kipoi_dfim.load_model(original, targets=LABELS, output="raw")
    np.testing.assert_allclose(m.predict(seqs), np.asarray(original(seqs)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.predict(seqs), 1 / (1 + np.exp(-numpy_logits(weights, seqs, "relu"))),
                               rtol=1e-5, atol=1e-7)
    for t in LABELS:
        assert_close(m.gradient(seqs, t), oracle.gradient(seqs, t), what=t)
    with pytest.raises(UnsupportedModelError, match="sigmoid"):
        m.predict(seqs, output="logit")
    # DeepLIFT cannot see inside: the adapter and the Keras engine itself both refuse, naming the layer
    refs = dinucleotide_shuffle(seqs, n=2, seed=1)
    with pytest.raises(UnsupportedModelError, match=r"layer 'savedmodel' \(TFSMLayer\).*SavedModel"):
        m.deeplift(seqs, refs, "up")
    from kipoi_dfim.backend.deeplift_keras import deeplift_multipliers_keras

    assert isinstance(m.savedmodel_layer, keras.layers.TFSMLayer)
    with pytest.raises(UnsupportedModelError, match=r"layer 'savedmodel'.*no DeepLIFT rule"):
        deeplift_multipliers_keras(m.raw_model, seqs, refs, 0)


def test_tensorflow2_linear_output_allows_logit_and_matches_finite_differences(tmp_path, weights, seqs):
    """A SavedModel ending in a linear op (signature endpoint of tf.saved_model.save) scores its output as is."""
    import tensorflow as tf

    original = keras3_model(weights, "softplus", final=None)
    sm = tmp_path / "lin" / "savedmodel"
    tf.saved_model.save(original, str(sm))
    d = _write_yaml(tmp_path / "lin", "tensorflow2", {"savedmodel_path": "savedmodel"}, f"({L}, 4)")
    m = kipoi_dfim.load_model(d)
    assert (m.output, m.activation, m.targets) == ("logit", None, LABELS)
    assert_close(m.predict(seqs), numpy_logits(weights, seqs, "softplus"))
    np.testing.assert_allclose(m.predict(seqs), m.predict(seqs, output="raw"), rtol=0, atol=0)
    x = seqs[:2]
    for t in LABELS:
        np.testing.assert_allclose(m.gradient(x, t), _finite_differences(m, x, m.target_index(t)),
                                   rtol=1e-3, atol=3e-4)


def test_tensorflow2_softmax_is_detected_and_kipoi_module_savedmodel_agrees_with_kipoi(tmp_path, weights, seqs):
    """A tf.Module with __call__ (what kipoi's TensorFlow2Model calls) wrapping a softmax model."""
    import tensorflow as tf

    original = keras3_model(weights, "relu", final="softmax")
    module = tf.Module()
    module.m = original
    module.__call__ = tf.function(lambda x: module.m(x), input_signature=[tf.TensorSpec((None, L, 4), tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "mod" / "savedmodel"))
    d = _write_yaml(tmp_path / "mod", "tensorflow2", {"savedmodel_path": "savedmodel"}, f"({L}, 4)")
    with pytest.raises(UnsupportedModelError, match="ends in a softmax"):
        kipoi_dfim.load_model(d)
    m = kipoi_dfim.load_model(d, output="raw")
    assert m.activation == "softmax"
    kipoi_probs = np.asarray(_kipoi_model(d).predict_on_batch(seqs))
    np.testing.assert_allclose(m.predict(seqs), kipoi_probs, rtol=1e-6, atol=1e-7)
    e = np.exp(numpy_logits(weights, seqs, "relu"))
    np.testing.assert_allclose(m.predict(seqs), e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_tensorflow2_errors_name_the_problem(tmp_path, weights):
    d = tmp_path / "bad"
    _write_yaml(d, "tensorflow2", {"savedmodel_path": "missing"}, f"({L}, 4)")
    with pytest.raises(InputError, match="no saved_model.pb"):
        kipoi_dfim.load_model(str(d))
    good = _export(keras3_model(weights, "relu"), tmp_path / "tf2")
    with pytest.raises(InputError, match=r"no endpoint 'nope'; available: \['serve'"):
        kipoi_dfim.load_model(good, output="raw", call_endpoint="nope")
    _write_yaml(tmp_path / "tf2", "tensorflow2", {"savedmodel_path": "savedmodel"}, f"({L + 1}, 4)")
    with pytest.raises(InputError, match="does not fit the SavedModel's input shape"):
        kipoi_dfim.load_model(good, output="raw")
