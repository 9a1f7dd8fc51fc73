"""Keras 0.3/1/2 -> Keras 3 conversion (kipoi_dfim.backend.keras_legacy) and the shipped tal_gata_k562 model.

Oracles: a plain numpy/scipy forward pass of the Keras 0.3 Theano Graph read straight from the JSON and the
HDF5 (Theano convolution = true convolution, computed with scipy.signal.convolve, never by the converter's
kernel flip); Keras 3 models built directly for the synthetic Keras 2 / Keras 1 JSONs; and the model's
biology (GATA sites raise the GATA outputs, GATA-E-box composites raise TAL1 most).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from scipy import signal

from kipoi_dfim.backend.keras_legacy import SUPPORTED_LAYERS, build_from_legacy
from kipoi_dfim.errors import UnsupportedModelError

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "data" / "legacy_keras" / "tal_gata"
ARCH = FIX / "tal_gata_dnase_model_architecture.json"
WEIGHTS = FIX / "tal_gata_dnase_model_weights.hd5"
SPEC_DIR = REPO / "model_specs" / "tal_gata_k562"
ALPHABET = "ACGT"
GC = 0.46


# ------------------------------------------------------------------------------------------------ helpers
def one_hot_th(seqs: list[str]) -> np.ndarray:
    """(N, 1, 4, L) float32, the Theano model's input layout."""
    idx = np.array([[ALPHABET.index(c) for c in s] for s in seqs])
    return np.eye(4, dtype=np.float32)[idx].transpose(0, 2, 1)[:, None]


def random_seqs(n: int, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = [(1 - GC) / 2, GC / 2, GC / 2, (1 - GC) / 2]
    return rng.choice(list(ALPHABET), size=(n, length), p=p)


def dinuc_shuffles(motif: str) -> list[str]:
    """All sequences with the motif's first base and dinucleotide counts (Eulerian paths), by backtracking."""
    edges = Counter(motif[i : i + 2] for i in range(len(motif) - 1))
    out: list[str] = []

    def walk(path: str) -> None:
        if len(path) == len(motif):
            out.append(path)
            return
        for e in sorted(edges):
            if e[0] == path[-1] and edges[e] > 0:
                edges[e] -= 1
                walk(path + e[1])
                edges[e] += 1

    walk(motif[0])
    return sorted(set(out))


def numpy_graph_forward(arch_path: Path, weights_path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Forward pass of a Keras 0.3 Theano ('th') Graph, read directly from its JSON and HDF5.

    Weights ``graph/param_<i>`` are taken in node order, (W, b) per Convolution2D / Dense. Convolutions are
    Theano's: true 2-D convolutions (scipy.signal.convolve) of each input channel, summed over channels.
    Returns every node's output (N, ...) in channels-first order.
    """
    cfg = json.loads(arch_path.read_text())
    with h5py.File(weights_path, "r") as f:
        params = [np.asarray(f[f"graph/param_{i}"], np.float64) for i in range(int(f["graph"].attrs["nb_params"]))]
    out = {cfg["input_config"][0]["name"]: x.astype(np.float64)}
    k = 0
    for node in cfg["node_config"]:
        layer = cfg["nodes"][node["name"]]
        h = out[node["input"]]
        cls = layer["name"]
        if cls == "Convolution2D":
            w, b = params[k], params[k + 1]
            k += 2
            assert layer["border_mode"] == "valid" and layer["subsample"] == [1, 1]
            n_out, n_in, kh, kw = w.shape
            res = np.zeros((h.shape[0], n_out, h.shape[2] - kh + 1, h.shape[3] - kw + 1))
            for o in range(n_out):
                for c in range(n_in):
                    res[:, o] += signal.convolve(h[:, c], w[o, c][None], mode="valid")
            res += b[None, :, None, None]
            h = np.maximum(res, 0) if layer["activation"] == "relu" else res
        elif cls == "MaxPooling2D":
            ph, pw = layer["pool_size"]
            sh, sw = layer["strides"]
            assert (ph, pw) == (sh, sw) and layer["border_mode"] == "valid"
            nh, nw = h.shape[2] // ph, h.shape[3] // pw
            h = h[:, :, : nh * ph, : nw * pw].reshape(h.shape[0], h.shape[1], nh, ph, nw, pw).max(axis=(3, 5))
        elif cls == "Flatten":
            h = h.reshape(h.shape[0], -1)
        elif cls == "Dense":
            h = h @ params[k] + params[k + 1]
            k += 2
        elif cls == "Activation":
            assert layer["activation"] == "sigmoid"
            h = 1 / (1 + np.exp(-h))
        elif cls != "Dropout":
            raise AssertionError(f"oracle does not know {cls}")
        out[node["name"]] = h
    assert k == len(params)
    return out


@pytest.fixture(scope="module")
def tal_gata() -> keras.Model:
    return build_from_legacy(ARCH, WEIGHTS, backend="theano", image_dim_ordering="th")


def logits_model(model: keras.Model) -> keras.Model:
    return keras.Model(model.inputs, [model.get_layer(f"dense{i}").output for i in range(3)])


def predict_logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.concatenate(logits_model(model).predict(x, verbose=0, batch_size=256), axis=1)


@pytest.fixture(scope="module")
def oracle_inputs() -> np.ndarray:
    seqs = ["".join(s) for s in random_seqs(6, 1000, seed=11)]
    # two with GATA sites so that the outputs are not all near zero
    for i, pos in ((0, 300), (1, 520)):
        seqs[i] = seqs[i][:pos] + "AGATAATCTGTTATCT" + seqs[i][pos + 16 :]
    return one_hot_th(seqs)


# ---------------------------------------------------------------------------------- the paper's Graph model
def test_tal_gata_matches_numpy_oracle(tal_gata, oracle_inputs):
    ref = numpy_graph_forward(ARCH, WEIGHTS, oracle_inputs)
    probs = tal_gata.predict(oracle_inputs, verbose=0)
    assert tal_gata.input_shape == (None, 1, 4, 1000)
    assert [tuple(o.shape) for o in probs] == [(6, 1)] * 3
    for i, p in enumerate(probs):
        np.testing.assert_allclose(p, ref[f"sigmoid{i}"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        predict_logits(tal_gata, oracle_inputs),
        np.concatenate([ref[f"dense{i}"] for i in range(3)], axis=1), rtol=1e-5, atol=1e-5,
    )
    # the outputs are the separate sigmoid layers of the original, fed by the logits
    assert [layer.name for layer in tal_gata.layers if layer.output in tal_gata.outputs] == [
        "sigmoid0", "sigmoid1", "sigmoid2"]


def test_kernel_flip_matters(tal_gata, oracle_inputs):
    """Without the Theano flip the model computes something else (the oracle above pins the flipped one)."""
    with pytest.warns(UserWarning, match="assuming Theano"):
        guessed = build_from_legacy(ARCH, WEIGHTS)  # no backend: 'th' ordering -> Theano, with a warning
    np.testing.assert_allclose(predict_logits(guessed, oracle_inputs), predict_logits(tal_gata, oracle_inputs),
                               rtol=1e-6, atol=1e-6)
    unflipped = build_from_legacy(ARCH, WEIGHTS, backend="tensorflow", image_dim_ordering="th")
    diff = np.abs(predict_logits(unflipped, oracle_inputs) - predict_logits(tal_gata, oracle_inputs))
    assert diff.max() > 0.1


def test_gata_sites_raise_gata_outputs_and_composites_raise_tal1(tal_gata):
    """Paired over 200 GC-0.46 backgrounds: 5 GATA sites vs 5 dinucleotide-shuffled versions, same places."""
    n, positions = 200, [380, 430, 480, 530, 580]
    backgrounds = random_seqs(n, 1000, seed=5)

    def planted(motifs: list[str]) -> np.ndarray:
        seqs = []
        for i, bg in enumerate(backgrounds):
            s = bg.copy()
            for j, p in enumerate(positions):
                m = motifs[(i + j) % len(motifs)]
                s[p : p + len(m)] = list(m)
            seqs.append("".join(s))
        return predict_logits(tal_gata, one_hot_th(seqs))

    def controls(motif: str) -> list[str]:
        out = [s for s in dinuc_shuffles(motif) if s != motif and not any(
            k in s for k in ("GATA", "TATC", "CAGCTG", "CATCTG", "CAGATG"))]
        assert out
        return out

    gata = ["AGATAA", "TGATAA", "AGATAG"]  # WGATAR
    d = planted(gata) - planted([c for m in gata for c in controls(m)])
    for t in (0, 1):  # GATA1, GATA2
        assert d[:, t].mean() > 1.0 and (d[:, t] > 0).mean() > 0.95, (t, d[:, t].mean())

    # TAL1-GATA composite (E-box CTG, 7 bp, WGATAA): all heads rise, TAL1 (output 2) the most
    composite = "CTGTTTTTTTTGATAA"
    dc = planted([composite]) - planted(controls(composite)[:20])
    assert (dc > 0).mean(axis=0).min() > 0.95
    assert (dc[:, 2] > dc[:, 0]).mean() > 0.9 and (dc[:, 2] > dc[:, 1]).mean() > 0.9


# -------------------------------------------------------------------------------------- error messages
def _write_keras2_weights(path: Path, layers: dict[str, list[tuple[str, np.ndarray]]], backend: str) -> None:
    """An HDF5 laid out as Keras 2 ``save_weights`` writes it."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layers])
        f.attrs["backend"] = backend.encode()
        f.attrs["keras_version"] = b"2.2.4"
        for name, weights in layers.items():
            g = f.create_group(name)
            g.attrs["weight_names"] = np.array([f"{name}/{w}:0".encode() for w, _ in weights])
            for w, arr in weights:
                g[f"{name}/{w}:0"] = arr


def test_unsupported_layer_names_layer_and_class(tmp_path):
    arch = {"class_name": "Sequential", "config": [
        {"class_name": "Dense", "config": {"name": "d1", "output_dim": 3, "batch_input_shape": [None, 5]}},
        {"class_name": "SimpleRNN", "config": {"name": "my_rnn", "output_dim": 2}},
    ]}
    w = tmp_path / "w.h5"
    _write_keras2_weights(w, {"d1": [("kernel", np.zeros((5, 3), np.float32)), ("bias", np.zeros(3, np.float32))],
                              "my_rnn": []}, "tensorflow")
    with pytest.raises(UnsupportedModelError) as e:
        build_from_legacy(arch, w)
    msg = str(e.value)
    assert "'my_rnn'" in msg and "'SimpleRNN'" in msg and "Convolution1D" in msg and "Merge" in msg
    assert "SimpleRNN" not in SUPPORTED_LAYERS  # (LSTM/GRU are converted since issue 10)


# ------------------------------------------------------------------------ synthetic Keras 2 / Keras 1 models
def _keras2_layer(cls: str, **cfg) -> dict:
    return {"class_name": cls, "config": cfg}


@pytest.mark.parametrize("backend", ["tensorflow", "theano"])
def test_synthetic_keras2_sequential_matches_keras3(tmp_path, backend):
    """Conv1D/BatchNorm/MaxPooling1D/Permute/Reshape/Flatten/Dense as Keras 2 JSON + HDF5 vs Keras 3 itself.

    With backend 'theano' (read from the file's attribute) the stored kernel is the flipped one, as Theano
    training would have left it, and the converter must flip it back.
    """
    rng = np.random.default_rng(3)
    ref = keras.Sequential([
        keras.Input((20, 4)),
        keras.layers.Conv1D(3, 5, activation="relu", name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.MaxPooling1D(2, name="pool"),
        keras.layers.Permute((2, 1), name="perm"),
        keras.layers.Reshape((4, 6), name="resh"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(2, activation="sigmoid", name="out"),
    ])
    for layer in ref.layers:
        layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])
    bn = ref.get_layer("bn")
    g, b, m, v = bn.get_weights()
    bn.set_weights([g, b, m, np.abs(v) + 0.5])
    kernel, bias = ref.get_layer("conv").get_weights()
    stored_kernel = kernel[::-1] if backend == "theano" else kernel

    arch = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        _keras2_layer("Conv1D", name="conv", filters=3, kernel_size=[5], strides=[1], padding="valid",
                      activation="relu", use_bias=True, batch_input_shape=[None, 20, 4]),
        _keras2_layer("BatchNormalization", name="bn", axis=-1, epsilon=bn.epsilon, center=True, scale=True),
        _keras2_layer("MaxPooling1D", name="pool", pool_size=[2], strides=[2], padding="valid"),
        _keras2_layer("Permute", name="perm", dims=[2, 1]),
        _keras2_layer("Reshape", name="resh", target_shape=[4, 6]),
        _keras2_layer("Flatten", name="flat"),
        _keras2_layer("Dense", name="out", units=2, activation="sigmoid", use_bias=True),
    ]}}
    w = tmp_path / "weights.h5"
    _write_keras2_weights(w, {
        "conv": [("kernel", stored_kernel), ("bias", bias)],
        "bn": list(zip(["gamma", "beta", "moving_mean", "moving_variance"], bn.get_weights(), strict=True)),
        "pool": [], "perm": [], "resh": [], "flat": [],
        "out": list(zip(["kernel", "bias"], ref.get_layer("out").get_weights(), strict=True)),
    }, backend)
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    model = build_from_legacy(tmp_path / "arch.json", w)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=(7, 20))]
    np.testing.assert_allclose(model.predict(x, verbose=0), ref.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # the Dense activation is split off: its input is the logit
    assert model.layers[-1].name == "out_activation"
    logits = keras.Model(model.inputs, model.get_layer("out").output).predict(x, verbose=0)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), ref.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_keras1_functional_th_merge_matches_keras3(tmp_path):
    """Keras 1 functional Model, 'th' ordering: Convolution2D + AveragePooling2D, Merge concat (channel axis)
    and sum, BatchNormalization on the channel axis (axis=1), Flatten in channels-first order, Dense."""
    rng = np.random.default_rng(8)
    # Keras 3 reference in channels-last; the old model sees the same data as (C, H, W)
    inp = keras.Input((1, 30, 4))
    a = keras.layers.Conv2D(2, (1, 5), activation="relu")(inp)
    b = keras.layers.Conv2D(3, (1, 5))(inp)
    cat = keras.layers.Concatenate(axis=-1)([a, b])  # channels
    bn = keras.layers.BatchNormalization(axis=-1)(cat)
    pool = keras.layers.AveragePooling2D((1, 2))(bn)
    flat = keras.layers.Flatten()(keras.layers.Permute((3, 1, 2))(pool))  # channels-first flatten
    d1 = keras.layers.Dense(2)(flat)
    d2 = keras.layers.Dense(2)(flat)
    out = keras.layers.Activation("sigmoid")(keras.layers.Add()([d1, d2]))
    ref = keras.Model(inp, out)
    for layer in ref.layers:
        ws = [rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            ws[3] = np.abs(ws[3]) + 0.5
        layer.set_weights(ws)
    conv_a, conv_b = (layer for layer in ref.layers if isinstance(layer, keras.layers.Conv2D))
    bn_l = next(layer for layer in ref.layers if isinstance(layer, keras.layers.BatchNormalization))
    dense_1, dense_2 = (layer for layer in ref.layers if isinstance(layer, keras.layers.Dense))

    def node(name, cls, inbound, **cfg):
        return {"name": name, "class_name": cls, "config": {"name": name, **cfg},
                "inbound_nodes": [[[i, 0, 0] for i in inbound]] if inbound else []}

    conv_cfg = dict(nb_row=1, nb_col=5, border_mode="valid", subsample=[1, 1], dim_ordering="th", bias=True)
    arch = {"class_name": "Model", "config": {"name": "m", "layers": [
        node("in", "InputLayer", [], batch_input_shape=[None, 4, 1, 30]),
        node("ca", "Convolution2D", ["in"], nb_filter=2, activation="relu", **conv_cfg),
        node("cb", "Convolution2D", ["in"], nb_filter=3, activation="linear", **conv_cfg),
        node("cat", "Merge", ["ca", "cb"], mode="concat", concat_axis=1),
        node("bn", "BatchNormalization", ["cat"], axis=1, mode=0, epsilon=bn_l.epsilon),
        node("pool", "AveragePooling2D", ["bn"], pool_size=[1, 2], strides=[1, 2], border_mode="valid",
             dim_ordering="th"),
        node("flat", "Flatten", ["pool"]),
        node("d1", "Dense", ["flat"], output_dim=2, activation="linear"),
        node("d2", "Dense", ["flat"], output_dim=2, activation="linear"),
        node("sum", "Merge", ["d1", "d2"], mode="sum"),
        node("act", "Activation", ["sum"], activation="sigmoid"),
    ], "input_layers": [["in", 0, 0]], "output_layers": [["act", 0, 0]]}}

    def th_kernel(layer):  # Keras 1 'th' layout (out, in, rows, cols)
        k, bias = layer.get_weights()
        return [("W", k.transpose(3, 2, 0, 1)), ("b", bias)]

    w = tmp_path / "w.h5"
    _write_keras2_weights(w, {
        "in": [], "ca": th_kernel(conv_a), "cb": th_kernel(conv_b), "cat": [],
        "bn": list(zip(["gamma", "beta", "running_mean", "running_std"], bn_l.get_weights(), strict=True)),
        "pool": [], "flat": [], "d1": list(zip("Wb", dense_1.get_weights(), strict=True)),
        "d2": list(zip("Wb", dense_2.get_weights(), strict=True)), "sum": [], "act": [],
    }, "tensorflow")
    model = build_from_legacy(arch, w)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=(5, 30))][:, None]  # (N, 1, 30, 4)
    assert model.input_shape == (None, 4, 1, 30)
    np.testing.assert_allclose(model.predict(x.transpose(0, 3, 1, 2), verbose=0), ref.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_keras1_sequential_merge_of_branches_matches_keras3(tmp_path):
    """Keras 1 Sequential whose first layer is a Merge of two Sequential branches (two model inputs)."""
    rng = np.random.default_rng(4)
    ia, ib = keras.Input((3,)), keras.Input((5,))
    da, db = keras.layers.Dense(2, activation="relu"), keras.layers.Dense(4, activation="tanh")
    dout = keras.layers.Dense(1, activation="sigmoid")
    ref = keras.Model([ia, ib], dout(keras.layers.Concatenate()([da(ia), db(ib)])))
    for layer in (da, db, dout):
        layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])

    def branch(name, units, n_in, act):
        return {"class_name": "Sequential", "config": [{"class_name": "Dense", "config": {
            "name": name, "output_dim": units, "activation": act, "batch_input_shape": [None, n_in]}}]}

    arch = {"class_name": "Sequential", "config": [
        {"class_name": "Merge", "config": {"name": "merge_1", "mode": "concat", "concat_axis": -1,
                                           "layers": [branch("da", 2, 3, "relu"), branch("db", 4, 5, "tanh")]}},
        {"class_name": "Dense", "config": {"name": "dout", "output_dim": 1, "activation": "sigmoid"}},
    ]}
    w = tmp_path / "w.h5"
    _write_keras2_weights(w, {n: list(zip("Wb", layer.get_weights(), strict=True))
                              for n, layer in (("da", da), ("db", db), ("dout", dout))}, "theano")
    model = build_from_legacy(arch, w)
    xa, xb = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=(6, 5)).astype(np.float32)
    np.testing.assert_allclose(model.predict([xa, xb], verbose=0), ref.predict([xa, xb], verbose=0),
                               rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------- the shipped Kipoi model
def _read_fasta(path: Path) -> dict[str, str]:
    seqs: dict[str, list[str]] = {}
    name = ""
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            seqs[name] = []
        elif line.strip():
            seqs[name].append(line.strip())
    return {k: "".join(v) for k, v in seqs.items()}


def test_model_dir_dataloader_and_model_match_oracle():
    """The saved Keras 3 model and the local dataloader give the oracle's predictions on the example files."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tal_gata_dl", SPEC_DIR / "dataloader.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ex = SPEC_DIR / "example_files"
    dl = mod.TalGataSeqDl(str(ex / "intervals.bed"), str(ex / "sequences.fa"))
    x = np.stack([dl[i]["inputs"] for i in range(len(dl))])
    fasta = _read_fasta(ex / "sequences.fa")
    bed = [ln.split("\t")[0] for ln in (ex / "intervals.bed").read_text().splitlines()]
    assert x.shape == (len(bed), 1, 4, 1000) and x.dtype == np.float32
    np.testing.assert_array_equal(x, one_hot_th([fasta[c] for c in bed]))

    model = keras.models.load_model(SPEC_DIR / "model.keras")
    ref = numpy_graph_forward(SPEC_DIR / "original" / ARCH.name, SPEC_DIR / "original" / WEIGHTS.name, x)
    for i, p in enumerate(model.predict(x, verbose=0)):
        np.testing.assert_allclose(p, ref[f"sigmoid{i}"], rtol=1e-5, atol=1e-6)


def test_kipoi_test_cli_passes_on_model_dir():
    kipoi = Path(sys.executable).with_name("kipoi")
    res = subprocess.run([str(kipoi), "test", str(SPEC_DIR.relative_to(REPO)), "--source", "dir"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Successfully ran test_predict" in res.stdout + res.stderr
    assert sum(f.stat().st_size for f in SPEC_DIR.rglob("*") if f.is_file()) < 1_000_000
