"""Recurrent layers of Keras 1/2 models (LSTM, GRU, Bidirectional, TimeDistributed) rebuilt in Keras 3.

Zoo models such as DeepMEL, DeepFlyBrain, DeepLiver and labranchor run a (bidirectional) LSTM over the
convolution output. Two details decide whether the rebuilt layer computes the same numbers:

* Keras <= 2.2 defaulted ``recurrent_activation`` to ``hard_sigmoid`` = clip(0.2 x + 0.5, 0, 1); Keras 3's
  ``hard_sigmoid`` is relu6(x + 3) / 6 (slope 1/6), so the Keras 2 function is passed explicitly.
* Weights: Keras 2 stores (kernel, recurrent_kernel, bias) with gates in the order Keras 3 uses (LSTM i, f, c,
  o; GRU z, r, h). Keras 1 LSTM/GRU stored one (W, U, b) triple per gate (``consume_less`` cpu/mem) in the
  order i, c, f, o (LSTM) / z, r, h (GRU); they are concatenated into the Keras 2 layout. GRU's
  ``reset_after`` (False in Keras 2.2, True in tf.keras 2.x) is taken from the config.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kipoi_dfim.errors import UnsupportedModelError

__all__ = ["RECURRENT_KINDS", "convert_recurrent", "keras2_hard_sigmoid"]

RECURRENT_KINDS = {
    "LSTM": "lstm",
    "GRU": "gru",
    "Bidirectional": "bidirectional",
    "TimeDistributed": "timedistributed",
}


@keras.saving.register_keras_serializable(package="kipoi_dfim")
def keras2_hard_sigmoid(x: Any) -> Any:
    """Keras <= 2.x ``hard_sigmoid``: clip(0.2 x + 0.5, 0, 1) (Keras 3's has slope 1/6)."""
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


_RNN_ACTIVATIONS = {"tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu", "linear": "linear",
                    "hard_sigmoid": keras2_hard_sigmoid}


def _act(cfg: dict, key: str, old_key: str, default: str, where: str, name: str) -> Any:
    act = cfg.get(key, cfg.get(old_key, default))
    if isinstance(act, dict):
        act = act.get("config", {}).get("name", act.get("class_name"))
    if act not in _RNN_ACTIVATIONS:
        raise UnsupportedModelError(f"layer {name!r}: recurrent activation {act!r} is not supported", path=where)
    return _RNN_ACTIVATIONS[act]


def _gate_weights(cell: str, w: list[np.ndarray], units: int, name: str, where: str) -> list[np.ndarray]:
    """(kernel, recurrent_kernel, bias) in Keras 2/3 gate order from Keras 1 or 2 arrays."""
    w = [np.asarray(a, np.float32) for a in w]
    n_gates = 4 if cell == "lstm" else 3
    if len(w) in (2, 3):
        return w
    if len(w) == 3 * n_gates:  # Keras 1: (W, U, b) per gate
        triples = [w[i : i + 3] for i in range(0, len(w), 3)]
        order = [0, 2, 1, 3] if cell == "lstm" else [0, 1, 2]  # Keras 1 LSTM saved i, c, f, o
        triples = [triples[i] for i in order]
        return [np.concatenate([t[j] for t in triples], axis=-1) for j in range(3)]
    raise UnsupportedModelError(
        f"layer {name!r}: {len(w)} weight arrays do not fit a {cell.upper()} with {units} units", path=where
    )


def _rnn_layer(cls: str, cfg: dict, name: str, where: str) -> tuple[keras.layers.Layer, str, int]:
    """A fresh Keras 3 LSTM/GRU equivalent to the old config (not yet built)."""
    cell = RECURRENT_KINDS.get(cls)
    if cell not in ("lstm", "gru"):
        raise UnsupportedModelError(f"layer {name!r}: recurrent layer {cls!r} is not supported (LSTM, GRU)",
                                    path=where)
    units = int(cfg.get("units", cfg.get("output_dim")))
    kw = dict(
        units=units,
        activation=_act(cfg, "activation", "activation", "tanh", where, name),
        recurrent_activation=_act(cfg, "recurrent_activation", "inner_activation", "hard_sigmoid", where, name),
        use_bias=bool(cfg.get("use_bias", True)),
        return_sequences=bool(cfg.get("return_sequences", False)),
        go_backwards=bool(cfg.get("go_backwards", False)),
        name=name,
    )
    if cfg.get("stateful") or cfg.get("return_state"):
        raise UnsupportedModelError(f"layer {name!r}: stateful / return_state RNNs are not supported", path=where)
    if cell == "gru":
        kw["reset_after"] = bool(cfg.get("reset_after", False))
        return keras.layers.GRU(**kw), cell, units
    return keras.layers.LSTM(**kw), cell, units


def _set_rnn(layer: keras.layers.Layer, cell: str, units: int, w: list[np.ndarray], name: str, where: str) -> None:
    arrays = _gate_weights(cell, w, units, name, where)
    if cell == "gru" and not layer.cell.reset_after and arrays[2].ndim == 2:
        raise UnsupportedModelError(f"layer {name!r}: GRU bias shape {arrays[2].shape} needs reset_after",
                                    path=where)
    layer.set_weights(arrays if layer.cell.use_bias else arrays[:2])


def convert_recurrent(kind: str, spec: Any, x: Any, w: list[np.ndarray], unique: Any, where: str) -> Any:
    """Output tensor of a LSTM/GRU/Bidirectional/TimeDistributed(Dense) layer applied to Keras 3 tensor x.

    ``unique(base)`` gives a fresh Keras 3 layer name; ``spec`` is the old layer (name, class_name, config).
    """
    cfg = spec.config
    if kind in ("lstm", "gru"):
        layer, cell, units = _rnn_layer(spec.class_name, cfg, unique(spec.name), where)
        out = layer(x)
        _set_rnn(layer, cell, units, w, spec.name, where)
        return out
    inner = cfg.get("layer") or {}
    inner_cls, inner_cfg = inner.get("class_name"), dict(inner.get("config") or {})
    if kind == "bidirectional":
        fwd, cell, units = _rnn_layer(inner_cls, inner_cfg, unique(f"{spec.name}_forward"), where)
        mode = cfg.get("merge_mode", "concat")
        if mode not in ("concat", "sum", "ave", "mul"):
            raise UnsupportedModelError(f"layer {spec.name!r}: Bidirectional merge_mode {mode!r} is not supported",
                                        path=where)
        layer = keras.layers.Bidirectional(fwd, merge_mode=mode, name=unique(spec.name))
        out = layer(x)
        half = len(w) // 2
        _set_rnn(layer.forward_layer, cell, units, w[:half], spec.name, where)
        _set_rnn(layer.backward_layer, cell, units, w[half:], spec.name, where)
        return out
    if kind == "timedistributed" and inner_cls == "Dense":
        units = int(inner_cfg.get("units", inner_cfg.get("output_dim")))
        act = inner_cfg.get("activation", "linear")
        layer = keras.layers.Dense(units, activation=act if isinstance(act, str) else "linear",
                                   use_bias=len(w) > 1, name=unique(spec.name))
        out = layer(x)
        layer.set_weights([np.asarray(a, np.float32) for a in w])
        return out
    raise UnsupportedModelError(
        f"layer {spec.name!r}: TimeDistributed({inner_cls}) is not supported (only TimeDistributed(Dense))",
        path=where,
    )
