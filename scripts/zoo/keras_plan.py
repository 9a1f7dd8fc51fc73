"""Keras 1/2 zoo fixtures from one plan: the same layers written as Keras 2 JSON + HDF5 and run in numpy.

A plan is a list of :class:`L` (a layer call: class, config, inputs, weights). :func:`write_keras2` writes it the
way Keras 2.x wrote models (``model.to_json()`` + ``save_weights``, or a full-model ``save`` with the
``model_config`` attribute and ``model_weights`` group); :func:`numpy_forward` evaluates the same plan with
plain numpy, the oracle where kipoi 0.8.6 cannot load Keras 1/2 files on Keras 3. Nothing here uses keras, so
the oracle is independent of the converter under test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np


@dataclass
class L:
    """One layer call. ``inputs`` are names of earlier calls (``"name__call1"`` for the 2nd call of a shared
    layer); ``weights`` are (Keras weight name, array) pairs in Keras order, given on the first call only."""

    name: str
    cls: str
    config: dict = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    weights: list[tuple[str, np.ndarray]] = field(default_factory=list)


def _ref(name: str) -> list:
    """[layer, node, tensor, {}] of ``layer``, ``layer__call<k>`` or ``layer#<tensor>``."""
    name, _, tensor = name.partition("#")
    base, _, call = name.partition("__call")
    return [base, int(call) if call else 0, int(tensor) if tensor else 0, {}]


def _input_names(input_shape: tuple | list) -> list[tuple[str, tuple]]:
    """One shape -> [("input_1", shape)]; a list of shapes -> input_1, input_2, ..."""
    if input_shape and isinstance(input_shape[0], (tuple, list)):
        return [(f"input_{i + 1}", tuple(s)) for i, s in enumerate(input_shape)]
    return [("input_1", tuple(input_shape))]


def keras2_json(plan: list[L], input_shape: tuple, outputs: list[str], keras_class: str = "Model") -> dict:
    """``model.to_json()`` of a Keras 2 functional model (``Model`` in 2.0-2.2, ``Functional`` in 2.4+)."""
    ins = _input_names(input_shape)
    layers = [{"name": n, "class_name": "InputLayer",
               "config": {"batch_input_shape": [None, *shape], "dtype": "float32", "name": n},
               "inbound_nodes": []} for n, shape in ins]
    by_name: dict[str, dict] = {}
    for layer in plan:
        base = layer.name.partition("__call")[0]
        node = [_ref(i) for i in layer.inputs]
        if layer.cls in ("StochasticReverseComplement", "StochasticShift", "GELU", "SwitchReverse"):
            layer.config.setdefault("trainable", True)
        if base in by_name:
            by_name[base]["inbound_nodes"].append(node)
            continue
        entry = {"name": base, "class_name": layer.cls, "config": {"name": base, **layer.config},
                 "inbound_nodes": [node]}
        by_name[base] = entry
        layers.append(entry)
    return {"class_name": keras_class, "keras_version": "2.2.4", "backend": "tensorflow",
            "config": {"name": "model_1", "layers": layers, "input_layers": [[n, 0, 0] for n, _ in ins],
                       "output_layers": [_ref(o)[:3] for o in outputs]}}


def _write_weights(group: h5py.Group, plan: list[L], n_inputs: int = 1) -> None:
    names = [f"input_{i + 1}" for i in range(n_inputs)]
    names += list(dict.fromkeys(p.name.partition("__call")[0] for p in plan))
    group.attrs["layer_names"] = np.array([n.encode() for n in names])
    group.attrs["backend"] = b"tensorflow"
    group.attrs["keras_version"] = b"2.2.4"
    first = {p.name: p for p in plan if "__call" not in p.name}
    for n in names:
        g = group.create_group(n)
        ws = first[n].weights if n in first else []
        g.attrs["weight_names"] = np.array([w.encode() for w, _ in ws])
        for w, arr in ws:
            g.create_dataset(w, data=np.asarray(arr, np.float32))


def write_keras2(plan: list[L], input_shape: tuple, outputs: list[str], arch: Path | None, weights: Path,
                 keras_class: str = "Model") -> None:
    """Architecture JSON + weights (``arch`` given) or one Keras 2.2 full-model HDF5 (``arch`` None)."""
    cfg = keras2_json(plan, input_shape, outputs, keras_class)
    weights.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(weights, "w") as f:
        if arch is not None:
            arch.write_text(json.dumps(cfg))
            _write_weights(f, plan, len(_input_names(input_shape)))
        else:
            f.attrs["model_config"] = json.dumps({k: v for k, v in cfg.items() if k in ("class_name", "config")})
            f.attrs["keras_version"] = b"2.2.4"
            f.attrs["backend"] = b"tensorflow"
            _write_weights(f.create_group("model_weights"), plan, len(_input_names(input_shape)))


# ------------------------------------------------------------------------------------------- numpy oracle
def _act(x: np.ndarray, name: str) -> np.ndarray:
    return {"linear": lambda v: v, "relu": lambda v: np.maximum(v, 0), "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
            "exponential": np.exp, "tanh": np.tanh}[name](x)


def _conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, padding: str) -> np.ndarray:
    k = w.shape[0]
    if padding == "same":
        left = (k - 1) // 2
        x = np.pad(x, ((0, 0), (left, k - 1 - left), (0, 0)))
    n_out = x.shape[1] - k + 1
    win = np.stack([x[:, i : i + n_out] for i in range(k)], axis=2)  # (N, out, k, C)
    y = np.einsum("nokc,kcf->nof", win, w)
    return y + b if b is not None else y


def _maxpool1d(x: np.ndarray, size: int, stride: int, padding: str) -> np.ndarray:
    n = x.shape[1]
    if padding == "same":
        out = -(-n // stride)
        total = max((out - 1) * stride + size - n, 0)
        x = np.pad(x, ((0, 0), (total // 2, total - total // 2), (0, 0)), constant_values=-np.inf)
    else:
        out = (n - size) // stride + 1
    return np.stack([x[:, i * stride : i * stride + size].max(1) for i in range(out)], axis=1)


def _hard_sigmoid(v: np.ndarray) -> np.ndarray:
    """Keras 2's hard_sigmoid."""
    return np.clip(0.2 * v + 0.5, 0, 1)


def _lstm(x: np.ndarray, w: list[np.ndarray], cfg: dict) -> np.ndarray:
    """Keras 2 LSTM (gates i, f, c, o; recurrent activation hard_sigmoid unless configured)."""
    kernel, rec, bias = w
    u = rec.shape[0]
    ract = _hard_sigmoid if cfg.get("recurrent_activation", "hard_sigmoid") == "hard_sigmoid" else (
        lambda v: 1 / (1 + np.exp(-v)))
    steps = range(x.shape[1] - 1, -1, -1) if cfg.get("go_backwards") else range(x.shape[1])
    h = np.zeros((len(x), u))
    c = np.zeros((len(x), u))
    outs = []
    for t in steps:
        z = x[:, t] @ kernel + h @ rec + bias
        i, f, o = ract(z[:, :u]), ract(z[:, u : 2 * u]), ract(z[:, 3 * u :])
        c = f * c + i * np.tanh(z[:, 2 * u : 3 * u])
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs, 1) if cfg.get("return_sequences") else h


def _bidirectional(x: np.ndarray, w: list[np.ndarray], cfg: dict) -> np.ndarray:
    inner = cfg["layer"]["config"]
    fwd = _lstm(x, w[:3], inner)
    bwd = _lstm(x[:, ::-1], w[3:], inner)
    if inner.get("return_sequences"):
        bwd = bwd[:, ::-1]
    return np.concatenate([fwd, bwd], axis=-1)


def _one(layer: L, xs: list[np.ndarray], w: list[np.ndarray]) -> np.ndarray:
    c, x = layer.config, xs[0]
    if layer.cls == "LSTM":
        return _lstm(x, w, c)
    if layer.cls == "Bidirectional":
        return _bidirectional(x, w, c)
    if layer.cls == "TimeDistributed":
        inner = c["layer"]["config"]
        return _act(x @ w[0] + w[1], inner.get("activation", "linear"))
    if layer.cls == "Conv1D":
        y = _conv1d(x, w[0], w[1] if len(w) > 1 else None, c.get("padding", "valid"))
        return _act(y, c.get("activation", "linear"))
    if layer.cls == "Dense":
        return _act(x @ w[0] + (w[1] if len(w) > 1 else 0), c.get("activation", "linear"))
    if layer.cls == "BatchNormalization":
        gamma, beta, mean, var = w
        return gamma * (x - mean) / np.sqrt(var + c.get("epsilon", 1e-3)) + beta
    if layer.cls == "Activation":
        return _act(x, c["activation"])
    if layer.cls == "MaxPooling1D":
        size = c["pool_size"][0]
        return _maxpool1d(x, size, (c.get("strides") or [size])[0], c.get("padding", "valid"))
    if layer.cls == "GlobalMaxPooling1D":
        return x.max(1)
    if layer.cls == "GlobalAveragePooling1D":
        return x.mean(1)
    if layer.cls == "Flatten":
        return x.reshape(len(x), -1)
    if layer.cls == "Reshape":
        return x.reshape(len(x), *c["target_shape"])
    if layer.cls == "GELU":
        return x / (1 + np.exp(-1.702 * x))
    if layer.cls in ("StochasticReverseComplement", "StochasticShift", "SwitchReverse"):
        return x  # identities at inference (the reverse flag is False)
    if layer.cls == "Dropout":
        return x
    if layer.cls == "Maximum":
        return np.maximum.reduce(xs)
    if layer.cls == "Add":
        return np.sum(xs, axis=0)
    if layer.cls == "Concatenate":
        return np.concatenate(xs, axis=c.get("axis", -1))
    raise NotImplementedError(layer.cls)


def numpy_forward(plan: list[L], x: np.ndarray | list[np.ndarray], outputs: list[str]) -> np.ndarray:
    """The plan evaluated in float64 numpy; outputs concatenated along the last axis, (N, T). Several
    inputs are given as a list (input_1, input_2, ...)."""
    xs = x if isinstance(x, list) else [x]
    vals: dict[str, np.ndarray] = {f"input_{i + 1}": np.asarray(v, np.float64) for i, v in enumerate(xs)}
    x = xs[0]
    weights = {p.name: [np.asarray(a, np.float64) for _, a in p.weights] for p in plan if "__call" not in p.name}
    for p in plan:
        vals[p.name] = _one(p, [vals[i] for i in p.inputs if "#" not in i], weights[p.name.partition("__call")[0]])
    return np.concatenate([vals[o].reshape(len(x), -1) for o in outputs], axis=1)


# -------------------------------------------------------------------------------------------- plan helpers
class Planner:
    """Appends layers with seeded random weights, Keras 2 default names (``conv1d_1``, ``dense_2``, ...)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.plan: list[L] = []
        self.counts: dict[str, int] = {}
        self.last = "input_1"

    def _auto(self, prefix: str) -> str:
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        return f"{prefix}_{self.counts[prefix]}"

    def add(self, cls: str, config: dict, weights: list[np.ndarray] | None = None, inputs: list[str] | None = None,
            name: str | None = None, wnames: tuple[str, ...] = ("kernel", "bias")) -> str:
        prefix = {"Conv1D": "conv1d", "BatchNormalization": "batch_normalization", "Dense": "dense",
                  "MaxPooling1D": "max_pooling1d", "Activation": "activation", "Flatten": "flatten",
                  "Dropout": "dropout", "GlobalMaxPooling1D": "global_max_pooling1d", "Maximum": "maximum"}
        name = name or self._auto(prefix.get(cls, cls.lower()))
        ws = [(f"{name}/{wn}:0", a) for wn, a in zip(wnames, weights or [], strict=False)]
        self.plan.append(L(name, cls, config, inputs or [self.last], ws))
        self.last = name
        return name

    def conv(self, filters: int, k: int, c_in: int, padding: str = "valid", activation: str = "linear", **kw) -> str:
        w = self.rng.normal(0, (1.5 / (k * c_in)) ** 0.5, (k, c_in, filters)).astype(np.float32)
        b = self.rng.normal(0, 0.1, filters).astype(np.float32)
        cfg = {"filters": filters, "kernel_size": [k], "strides": [1], "padding": padding,
               "data_format": "channels_last", "dilation_rate": [1], "activation": activation, "use_bias": True}
        return self.add("Conv1D", cfg, [w, b], **kw)

    def bn(self, c: int, axis: int | list = -1, **kw) -> str:
        gamma = self.rng.uniform(0.5, 1.5, c)
        beta = self.rng.normal(0, 0.1, c)
        mean = self.rng.normal(0, 0.1, c)
        var = self.rng.uniform(0.5, 1.5, c)
        return self.add("BatchNormalization", {"axis": axis, "epsilon": 0.001, "center": True, "scale": True},
                        [gamma, beta, mean, var], wnames=("gamma", "beta", "moving_mean", "moving_variance"), **kw)

    def dense(self, units: int, n_in: int, activation: str = "linear", **kw) -> str:
        w = self.rng.normal(0, (1.5 / n_in) ** 0.5, (n_in, units)).astype(np.float32)
        b = self.rng.normal(0, 0.1, units).astype(np.float32)
        return self.add("Dense", {"units": units, "activation": activation, "use_bias": True}, [w, b], **kw)

    def bilstm(self, units: int, n_in: int, return_sequences: bool = True, **kw) -> str:
        """Bidirectional(LSTM) with Keras 2 defaults (tanh, hard_sigmoid) and seeded weights."""
        inner = {"class_name": "LSTM", "config": {"name": "lstm_1", "units": units, "activation": "tanh",
                                                  "recurrent_activation": "hard_sigmoid", "use_bias": True,
                                                  "return_sequences": return_sequences}}
        arrays = []
        for _ in range(2):
            arrays += [self.rng.normal(0, (1.0 / n_in) ** 0.5, (n_in, 4 * units)).astype(np.float32),
                       self.rng.normal(0, (1.0 / units) ** 0.5, (units, 4 * units)).astype(np.float32),
                       self.rng.normal(0, 0.1, 4 * units).astype(np.float32)]
        name = kw.pop("name", None) or self._auto("bidirectional")
        wn = [f"forward_lstm_1/{k}" for k in ("kernel", "recurrent_kernel", "bias")]
        wn += [f"backward_lstm_1/{k}" for k in ("kernel", "recurrent_kernel", "bias")]
        return self.add("Bidirectional", {"layer": inner, "merge_mode": "concat"}, arrays, name=name,
                        wnames=tuple(wn), **kw)

    def time_dense(self, units: int, n_in: int, activation: str = "linear", **kw) -> str:
        w = self.rng.normal(0, (1.5 / n_in) ** 0.5, (n_in, units)).astype(np.float32)
        b = self.rng.normal(0, 0.1, units).astype(np.float32)
        inner = {"class_name": "Dense", "config": {"name": "dense_td", "units": units, "activation": activation}}
        name = kw.pop("name", None) or self._auto("time_distributed")
        return self.add("TimeDistributed", {"layer": inner}, [w, b], name=name, **kw)

    def simple(self, cls: str, **cfg) -> str:
        inputs = cfg.pop("inputs", None)
        name = cfg.pop("name", None)
        return self.add(cls, cfg, inputs=inputs, name=name)
