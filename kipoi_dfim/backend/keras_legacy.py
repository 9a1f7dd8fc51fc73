"""Rebuild Keras 1/2 (and Keras 0.3 "Graph") models in Keras 3.

Old Kipoi models are an architecture JSON plus a weights HDF5 written by Keras 0.3, 1 or 2, often with the
Theano backend and Theano ('th', channels-first) dim ordering. Keras 3 cannot read either, and TensorFlow on
CPU has no channels-first convolution, so the model is rebuilt layer by layer:

* The rebuilt model keeps the original input shape (e.g. ``(1, 4, 1000)``) and the original output shapes;
  users and Kipoi dataloaders feed it exactly what they fed the old model.
* Channels-first tensors are permuted to channels-last before convolution/pooling and kept that way while
  only element-wise layers follow. Any layer whose result depends on the memory order (Flatten, Reshape,
  Permute, Dense on >2-D input, softmax, the model outputs) first gets the tensor back in the original
  order, so a Dense after Flatten sees its inputs in the order it was trained on.
* Theano convolutions are true convolutions (the kernel is flipped) whereas TensorFlow's are
  cross-correlations, so kernels trained with Theano are flipped along their spatial axes.
* Fused non-linear activations of Dense layers become a separate ``Activation`` layer, so the input of a
  final sigmoid/softmax (the logit) is a layer output of its own.

Which backend trained the weights is taken from ``backend`` (Kipoi model.yaml), else from the ``backend``
attribute Keras 2 writes into the weights file, else guessed from the dim ordering ('th' -> Theano) with a
warning.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from kipoi_dfim.backend.keras_legacy_rnn import RECURRENT_KINDS, convert_recurrent
from kipoi_dfim.errors import InputError, UnsupportedModelError

__all__ = ["build_from_legacy", "SUPPORTED_LAYERS"]

# Old class name -> canonical kind handled by one converter below.
_LAYER_KINDS: dict[str, str] = {
    "Convolution1D": "conv1d",
    "Conv1D": "conv1d",
    "Convolution2D": "conv2d",
    "Conv2D": "conv2d",
    "MaxPooling1D": "maxpool1d",
    "MaxPool1D": "maxpool1d",
    "MaxPooling2D": "maxpool2d",
    "MaxPool2D": "maxpool2d",
    "AveragePooling1D": "avgpool1d",
    "AvgPool1D": "avgpool1d",
    "AveragePooling2D": "avgpool2d",
    "AvgPool2D": "avgpool2d",
    "Dense": "dense",
    "Dropout": "dropout",
    "Activation": "activation",
    "Flatten": "flatten",
    "BatchNormalization": "batchnorm",
    "Reshape": "reshape",
    "Permute": "permute",
    "Merge": "merge",
    "Concatenate": "merge",
    "Add": "merge",
    "Multiply": "merge",
    "Average": "merge",
    "Maximum": "merge",
    "GlobalMaxPooling1D": "globalmaxpool1d",
    "GlobalMaxPool1D": "globalmaxpool1d",
    "GlobalAveragePooling1D": "globalavgpool1d",
    "GlobalAvgPool1D": "globalavgpool1d",
    "InputLayer": "input",
    **RECURRENT_KINDS,
}

#: Layer class names (Keras 0.3/1/2 spellings) that :func:`build_from_legacy` converts.
SUPPORTED_LAYERS: tuple[str, ...] = tuple(sorted(k for k in _LAYER_KINDS if k != "InputLayer"))

_MERGE_MODE_OF_CLASS = {
    "Concatenate": "concat",
    "Add": "sum",
    "Multiply": "mul",
    "Average": "ave",
    "Maximum": "max",
}
_ACTIVATIONS = {"linear", "relu", "sigmoid", "tanh", "softmax", "softplus", "softsign", "elu", "exponential"}
_THEANO = "theano"
_TENSORFLOW = "tensorflow"


# ----------------------------------------------------------------------------------------------- data model
@dataclass
class _LayerSpec:
    """One layer of the old model, in the order its weights were saved."""

    name: str
    class_name: str
    config: dict[str, Any]
    inputs: list[str]
    keras0: bool = False  # Keras 0.3 layer dict (class in "name", name in "custom_name")
    index: int = 0  # position in a Keras 0.3 Sequential (weights group "layer_<index>")
    key: str = ""  # name of its output tensor when not ``name`` (2nd, 3rd... call of a shared layer)


@dataclass
class _ModelSpec:
    """Inputs, layers and outputs of the old model, whatever JSON flavour it came from."""

    inputs: list[tuple[str, tuple[int | None, ...]]]
    layers: list[_LayerSpec]
    outputs: list[str]
    name: str = "converted"
    layer_dim_orderings: set[str] = field(default_factory=set)


@dataclass
class _Tensor:
    """A Keras 3 tensor plus how its axes relate to the original model's ("logical") axes.

    ``perm[i]`` is the logical (non-batch) axis stored at axis ``i``; None means stored == logical.
    """

    t: Any
    perm: tuple[int, ...] | None = None

    @property
    def rank(self) -> int:
        return len(self.t.shape) - 1


# ------------------------------------------------------------------------------------------- public API
def build_from_legacy(
    arch: str | os.PathLike | dict | None,
    weights: str | os.PathLike,
    backend: str | None = None,
    image_dim_ordering: str | None = None,
    custom_objects: dict | None = None,
) -> keras.Model:
    """Rebuild a Keras 0.3/1/2 model (architecture JSON + weights HDF5) as a Keras 3 model.

    Old Kipoi models stored ``arch``/``weights`` plus ``backend`` and ``image_dim_ordering`` in their
    model.yaml; this takes the same four arguments so the adapter can pass them through.

    Parameters
    ----------
    arch : str, path, dict or None
        The architecture: a JSON file, a JSON string or the parsed dict (``model.to_json()`` of Keras 1/2,
        or a Keras 0.3 ``Graph``/``Sequential`` config). None reads the ``model_config`` attribute of a
        full-model HDF5 written by ``model.save``.
    weights : path
        The HDF5 written by ``save_weights`` (or ``save``) of the same model.
    backend : {"theano", "tensorflow", None}
        The backend the weights were trained with; Theano kernels are flipped. None: the file's ``backend``
        attribute, else Theano if the model uses 'th' dim ordering (with a warning), else TensorFlow.
    image_dim_ordering : {"th", "tf", None}
        The keras.json default, used for layers whose ordering is "default" or unset.
    custom_objects : dict, optional
        Custom layer classes by name (Kipoi's ``args.custom_objects`` file, e.g. scBasset's GELU and
        StochasticReverseComplement); a layer of such a class is rebuilt from its config and called as is
        (in inference mode). Layers may return several outputs.

    Returns
    -------
    keras.Model
        A functional Keras 3 model with the original input shape(s) and output shape(s); several outputs
        stay separate outputs, in the original output order. Dense activations are separate
        ``Activation`` layers (output layers keep the original names).

    Raises
    ------
    UnsupportedModelError
        For a layer class or option that cannot be converted (the message names layer, class and lists
        the supported classes).
    InputError
        For unreadable files or weights that do not match the architecture.
    """
    weights = Path(weights)
    if not weights.exists():
        raise InputError("weights file not found", path=str(weights))
    arch_dict, arch_where = _read_arch(arch, weights)
    spec = _parse_model(arch_dict, arch_where)
    with _WeightStore(weights) as store:
        flip = _resolve_backend(backend, store, spec, image_dim_ordering, arch_where) == _THEANO
        builder = _Builder(store, flip=flip, default_cf=_is_cf(image_dim_ordering), where=arch_where,
                           custom_objects=custom_objects)
        model = builder.build(spec)
        store.check_all_used()
    return model


# ------------------------------------------------------------------------------------------ reading input
def _read_arch(arch: Any, weights: Path) -> tuple[dict, str]:
    """The architecture as a dict, plus a label for error messages."""
    if isinstance(arch, dict):
        return arch, "<architecture dict>"
    if arch is None:
        with h5py.File(weights, "r") as f:
            cfg = f.attrs.get("model_config")
        if cfg is None:
            raise InputError("no architecture given and the file has no 'model_config'", path=str(weights))
        return json.loads(cfg.decode() if isinstance(cfg, bytes) else cfg), str(weights)
    text = str(arch)
    if not text.lstrip().startswith("{"):
        p = Path(arch)
        if not p.exists():
            raise InputError("architecture file not found", path=str(p))
        text, where = p.read_text(encoding="utf-8"), str(p)
    else:
        where = "<architecture JSON>"
    try:
        return json.loads(text), where
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON at line {e.lineno}: {e.msg}", path=where, line=e.lineno) from e


def _layer_entry(entry: dict, name: str | None = None) -> tuple[str, str, dict, bool]:
    """(name, class_name, config, is_keras0) of one layer dict of any Keras version."""
    if "class_name" in entry:
        cfg = dict(entry.get("config") or {})
        return str(cfg.get("name", name or entry.get("name"))), str(entry["class_name"]), cfg, False
    cfg = dict(entry)
    cls = str(cfg.get("name"))
    return str(cfg.get("custom_name") or name or cls), cls, cfg, True


def _shape_from_config(cfg: dict) -> tuple[int | None, ...] | None:
    for key in ("batch_input_shape", "batch_shape"):
        if cfg.get(key):
            return tuple(cfg[key][1:])
    if cfg.get("input_shape"):
        return tuple(cfg["input_shape"])
    if cfg.get("input_dim"):
        return (int(cfg["input_dim"]),)
    return None


def _parse_model(d: dict, where: str) -> _ModelSpec:
    """Dispatch on the JSON flavour: Graph (Keras 0.3/1), Sequential, functional Model."""
    cls = d.get("class_name", d.get("name"))
    if cls == "Graph":
        return _parse_graph(d.get("config", d) if "class_name" in d else d, where)
    if cls == "Sequential":
        if "class_name" in d:
            cfg = d["config"]
            layers = cfg["layers"] if isinstance(cfg, dict) else cfg
            name = cfg.get("name", "sequential") if isinstance(cfg, dict) else "sequential"
        else:
            layers, name = d["layers"], "sequential"
        return _parse_sequential(layers, where, name)
    if cls in ("Model", "Functional"):
        return _parse_functional(d["config"], where)
    raise UnsupportedModelError(
        f"model class {cls!r} is not supported (supported: Graph, Sequential, Model/Functional)", path=where
    )


def _parse_graph(cfg: dict, where: str) -> _ModelSpec:
    """Keras 0.3 / Keras 1 legacy ``Graph``: named nodes, each reading one input or merging several."""
    inputs = [(str(c["name"]), tuple(c["input_shape"])) for c in cfg["input_config"]]
    order = cfg.get("input_order")
    if order:
        inputs = sorted(inputs, key=lambda t: order.index(t[0]))
    layers: list[_LayerSpec] = []
    for node in cfg["node_config"]:
        name, cls, lcfg, k0 = _layer_entry(cfg["nodes"][node["name"]], node["name"])
        name = str(node["name"])
        layers.append(_LayerSpec(name, cls, lcfg, _graph_node_inputs(node, name, layers), k0))
    outputs = []
    out_cfg = {c["name"]: c for c in cfg["output_config"]}
    for out in cfg.get("output_order") or list(out_cfg):
        c = out_cfg[out]
        if c.get("inputs"):
            outputs.append(_graph_node_inputs(c, str(out), layers)[0])
        else:
            outputs.append(str(c["input"]))
    return _ModelSpec(inputs, layers, outputs, name="graph")


def _graph_node_inputs(node: dict, name: str, layers: list[_LayerSpec]) -> list[str]:
    """A Graph node reads ``input``, or merges ``inputs`` first (a merge spec is appended to layers)."""
    if not node.get("inputs"):
        return [str(node["input"])]
    merge_name = f"{name}_merge"
    cfg = {"mode": node.get("merge_mode", "concat"), "concat_axis": node.get("concat_axis", -1)}
    layers.append(_LayerSpec(merge_name, "Merge", cfg, [str(i) for i in node["inputs"]]))
    return [merge_name]


def _parse_sequential(layer_dicts: list[dict], where: str, name: str, prefix: str = "") -> _ModelSpec:
    """A chain of layers; a Keras 1 ``Merge`` first layer holds whole sub-models (branches)."""
    inputs: list[tuple[str, tuple]] = []
    layers: list[_LayerSpec] = []
    prev: list[str] = []
    for i, entry in enumerate(layer_dicts):
        lname, cls, cfg, k0 = _layer_entry(entry)
        if cls == "InputLayer":
            inputs.append((lname, _shape_from_config(cfg)))
            prev = [lname]
            continue
        if cls == "Merge" and cfg.get("layers"):
            if k0:
                raise UnsupportedModelError(
                    f"layer {lname!r}: a Keras 0.3 Sequential with a Merge of sub-models is not supported",
                    path=where,
                )
            prev = []
            for j, sub in enumerate(cfg["layers"]):
                sub_spec = _parse_model(sub, where)
                inputs += sub_spec.inputs
                layers += sub_spec.layers
                if len(sub_spec.outputs) != 1:
                    raise UnsupportedModelError(f"layer {lname!r}: branch {j} has several outputs", path=where)
                prev.append(sub_spec.outputs[0])
            cfg = {k: v for k, v in cfg.items() if k != "layers"}
        elif not prev:
            shape = _shape_from_config(cfg)
            if shape is None:
                raise InputError(f"the first layer {lname!r} has no input shape", path=where)
            in_name = f"{prefix}{lname}_input"
            inputs.append((in_name, shape))
            prev = [in_name]
        layers.append(_LayerSpec(lname, cls, cfg, prev, k0, index=i))
        prev = [lname]
    return _ModelSpec(inputs, layers, prev, name=name)


def _tensor_key(layer: str, node: int, tensor: int) -> str:
    """Key of output ``tensor`` of call ``node`` of ``layer`` (plain name for the first output of the first)."""
    key = layer if node == 0 else f"{layer}__call{node}"
    return key if tensor == 0 else f"{key}#{tensor}"


def _parse_functional(cfg: dict, where: str) -> _ModelSpec:
    """Keras 1/2 functional ``Model``: layers with inbound nodes [[name, node, tensor, kwargs], ...].

    A layer applied several times (shared weights, e.g. one convolution over the forward and the
    reverse-complement strand) has one inbound node per call; each call becomes its own spec reading the
    same weights, keyed ``name__call<k>``. References to the k-th output of a multi-output layer are keyed
    ``name#k``.
    """
    inputs, layers = [], []
    for entry in cfg["layers"]:
        lname, cls, lcfg, k0 = _layer_entry(entry)
        lname = str(entry.get("name", lname))
        if cls == "InputLayer":
            inputs.append((lname, _shape_from_config(lcfg)))
            continue
        nodes = entry.get("inbound_nodes") or []
        if not nodes:
            raise UnsupportedModelError(f"layer {lname!r} ({cls}) is never called", path=where)
        for call, node in enumerate(nodes):
            if isinstance(node, dict):  # Keras 3 style {"args": ..., "kwargs": ...}
                raise UnsupportedModelError(f"layer {lname!r}: Keras 3 node format; load it with Keras 3",
                                            path=where)
            srcs = [_tensor_key(str(ref[0]), int(ref[1]) if len(ref) > 1 else 0,
                                int(ref[2]) if len(ref) > 2 else 0) for ref in node]
            layers.append(_LayerSpec(lname, cls, lcfg, srcs, k0, key=_tensor_key(lname, call, 0)))
    by_name = dict(inputs)
    ins = [(str(r[0]), by_name[str(r[0])]) for r in cfg["input_layers"]]
    outs = [_tensor_key(str(r[0]), int(r[1]) if len(r) > 1 else 0, int(r[2]) if len(r) > 2 else 0)
            for r in cfg["output_layers"]]
    return _ModelSpec(ins, layers, outs, name=str(cfg.get("name", "model")))


# ------------------------------------------------------------------------------------------------ weights
class _WeightStore:
    """Weights of an old HDF5 in the three layouts Keras used.

    * ``graph/param_<i>`` (Keras 0.3 Graph): one flat list, layers take theirs in node order.
    * ``layer_<i>/param_<j>`` (Keras 0.3 Sequential): one group per layer index.
    * groups named after layers with a ``weight_names`` attribute (Keras 1/2, possibly under
      ``model_weights``).
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            self.f = h5py.File(path, "r")
        except OSError as e:
            raise InputError(f"cannot read HDF5 weights: {e}", path=str(path)) from e
        root = self.f["model_weights"] if "model_weights" in self.f else self.f
        self.root = root
        self.attrs = dict(self.f.attrs)
        self._flat: list[np.ndarray] | None = None
        self._next = 0
        if "graph" in root and "nb_params" in root["graph"].attrs:
            g = root["graph"]
            self._flat = [np.asarray(g[f"param_{i}"]) for i in range(int(g.attrs["nb_params"]))]
            self.kind = "flat"
        elif "nb_layers" in root.attrs:
            self.kind = "indexed"
        elif "layer_names" in root.attrs:
            self.kind = "named"
        else:
            raise InputError(
                "unrecognised weights layout (no graph/param_*, layer_* or layer_names)", path=str(path)
            )

    def __enter__(self) -> _WeightStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()

    def take(self, spec: _LayerSpec, n_expected: int) -> list[np.ndarray]:
        """The weights of one layer, in the order the old layer listed them."""
        if self.kind == "flat":
            assert self._flat is not None
            got = self._flat[self._next : self._next + n_expected]
            if len(got) != n_expected:
                raise InputError(
                    f"layer {spec.name!r} needs {n_expected} weight arrays but the file has only "
                    f"{len(self._flat)} in total", path=str(self.path),
                )
            self._next += n_expected
            return got
        if self.kind == "indexed":
            g = self.root.get(f"layer_{spec.index}")
            if g is None:
                return []
            return [np.asarray(g[f"param_{j}"]) for j in range(int(g.attrs.get("nb_params", 0)))]
        names = [_decode(n) for n in self.root.attrs["layer_names"]]
        if spec.name not in names:
            return []
        g = self.root[spec.name]
        return [np.asarray(g[_decode(w)]) for w in g.attrs.get("weight_names", [])]

    def check_all_used(self) -> None:
        if self._flat is not None and self._next != len(self._flat):
            raise InputError(
                f"the architecture uses {self._next} weight arrays but the file has {len(self._flat)}",
                path=str(self.path),
            )


def _decode(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _resolve_backend(
    backend: str | None, store: _WeightStore, spec: _ModelSpec, image_dim_ordering: str | None, where: str
) -> str:
    """The backend that trained the weights: argument, else file attribute, else guessed from 'th'."""
    if backend is None and "backend" in store.attrs:
        backend = _decode(store.attrs["backend"])
    if backend is not None:
        b = str(backend).lower()
        if b == _THEANO:
            return _THEANO
        if b in (_TENSORFLOW, "tf", "cntk", "jax"):
            return _TENSORFLOW
        raise InputError(f"unknown Keras backend {backend!r} (expected theano or tensorflow)", path=where)
    orderings = {_decode(c.config.get("dim_ordering") or c.config.get("data_format") or "default")
                 for c in spec.layers if _LAYER_KINDS.get(c.class_name) in ("conv1d", "conv2d")}
    uses_th = "th" in orderings or "channels_first" in orderings or (
        "default" in orderings and _is_cf(image_dim_ordering))
    if uses_th:
        warnings.warn(
            f"{where}: the Keras backend that trained this model is unknown; assuming Theano because it "
            "uses 'th' dim ordering (convolution kernels are flipped). Pass backend= to be explicit.",
            stacklevel=3,
        )
        return _THEANO
    return _TENSORFLOW


# ----------------------------------------------------------------------------------------------- building
def _is_cf(ordering: str | None) -> bool:
    return ordering in ("th", "channels_first")


def _kind(spec: _LayerSpec, where: str) -> str:
    kind = _LAYER_KINDS.get(spec.class_name)
    if kind is None:
        raise UnsupportedModelError(
            f"layer {spec.name!r} has class {spec.class_name!r}, which cannot be converted to Keras 3; "
            f"supported layer classes: {', '.join(SUPPORTED_LAYERS)}",
            path=where,
        )
    return kind


def _get(cfg: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    return default


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int | float):
        return (int(v),) * n
    return tuple(int(x) for x in v)


class _Builder:
    """Turns a :class:`_ModelSpec` into a Keras 3 functional model, one converter per layer kind."""

    def __init__(self, store: _WeightStore, flip: bool, default_cf: bool, where: str,
                 custom_objects: dict | None = None):
        self.custom_objects = dict(custom_objects or {})
        self.store = store
        self.flip = flip
        self.default_cf = default_cf
        self.where = where
        self.used_names: set[str] = set()
        self.converters: dict[str, Callable[[_LayerSpec, list[_Tensor], list[np.ndarray]], _Tensor]] = {
            "conv1d": lambda s, x, w: self._conv(s, x[0], w, 1),
            "conv2d": lambda s, x, w: self._conv(s, x[0], w, 2),
            "maxpool1d": lambda s, x, w: self._pool(s, x[0], 1, keras.layers.MaxPooling1D,
                                                    keras.layers.MaxPooling2D),
            "maxpool2d": lambda s, x, w: self._pool(s, x[0], 2, keras.layers.MaxPooling1D,
                                                    keras.layers.MaxPooling2D),
            "avgpool1d": lambda s, x, w: self._pool(s, x[0], 1, keras.layers.AveragePooling1D,
                                                    keras.layers.AveragePooling2D),
            "avgpool2d": lambda s, x, w: self._pool(s, x[0], 2, keras.layers.AveragePooling1D,
                                                    keras.layers.AveragePooling2D),
            "dense": lambda s, x, w: self._dense(s, x[0], w),
            "dropout": lambda s, x, w: self._dropout(s, x[0]),
            "activation": lambda s, x, w: self._activation(s, x[0], _get(s.config, "activation")),
            "flatten": lambda s, x, w: self._plain(s, x[0], keras.layers.Flatten(name=self._name(s.name))),
            "batchnorm": lambda s, x, w: self._batchnorm(s, x[0], w),
            "reshape": lambda s, x, w: self._plain(s, x[0], keras.layers.Reshape(
                tuple(_get(s.config, "target_shape", "dims")), name=self._name(s.name))),
            "permute": lambda s, x, w: self._plain(s, x[0], keras.layers.Permute(
                tuple(s.config["dims"]), name=self._name(s.name))),
            "merge": lambda s, x, w: self._merge(s, x),
            **{k: (lambda s, x, w, k=k: _Tensor(convert_recurrent(k, s, self._logical(x[0], s.name).t, w,
                                                                   self._name, self.where)))
               for k in RECURRENT_KINDS.values()},
            "custom": lambda s, x, w: self._custom(s, x, w),
            "globalmaxpool1d": lambda s, x, w: self._global_pool(s, x[0], keras.layers.GlobalMaxPooling1D),
            "globalavgpool1d": lambda s, x, w: self._global_pool(s, x[0], keras.layers.GlobalAveragePooling1D),
        }

    # -- bookkeeping
    def _name(self, base: str) -> str:
        """A unique Keras 3 layer name ('/' is not allowed in Keras 3 names)."""
        base = base.replace("/", "_").replace(":", "_")
        name, k = base, 1
        while name in self.used_names:
            name, k = f"{base}_{k}", k + 1
        self.used_names.add(name)
        return name

    def _n_weights(self, spec: _LayerSpec, kind: str) -> int:
        """How many arrays a layer saved (needed for the flat Keras 0.3 Graph list)."""
        cfg = spec.config
        if kind in ("conv1d", "conv2d", "dense"):
            return 2 if _get(cfg, "use_bias", "bias", default=True) else 1
        if kind == "batchnorm":
            if "center" in cfg or "scale" in cfg:
                return 2 + bool(cfg.get("center", True)) + bool(cfg.get("scale", True))
            return 4
        if kind in RECURRENT_KINDS.values() and self.store.kind == "flat":
            raise UnsupportedModelError(f"layer {spec.name!r}: recurrent layers in a Keras 0.3 Graph are not "
                                        "supported", path=self.where)
        return 0

    def build(self, spec: _ModelSpec) -> keras.Model:
        tensors: dict[str, _Tensor] = {}
        inputs = []
        for name, shape in spec.inputs:
            if shape is None or any(s is None for s in shape[1:]):
                raise UnsupportedModelError(
                    f"input {name!r} has shape {shape}; a fixed sequence length is required", path=self.where
                )
            t = keras.Input(shape=tuple(shape), name=self._name(name))
            inputs.append(t)
            tensors[name] = _Tensor(t)
        for layer in spec.layers:
            kind = "custom" if layer.class_name in self.custom_objects else _kind(layer, self.where)
            if kind == "input":
                continue
            missing = [i for i in layer.inputs if i not in tensors]
            if missing:
                raise InputError(f"layer {layer.name!r} reads unknown input(s) {missing}", path=self.where)
            w = self.store.take(layer, self._n_weights(layer, kind))
            try:
                out = self.converters[kind](layer, [tensors[i] for i in layer.inputs], w)
            except (UnsupportedModelError, InputError):
                raise
            except Exception as e:  # noqa: BLE001 - keras raises many kinds; name the layer
                raise UnsupportedModelError(
                    f"layer {layer.name!r} of class {layer.class_name!r} cannot be converted to Keras 3 "
                    f"({type(e).__name__}: {e}); supported layer classes: {', '.join(SUPPORTED_LAYERS)}",
                    path=self.where,
                ) from e
            key = layer.key or layer.name
            for i, o in enumerate(out if isinstance(out, list) else [out]):
                tensors[key if i == 0 else f"{key}#{i}"] = o
        outputs = [self._logical(tensors[o], o).t for o in spec.outputs]
        return keras.Model(inputs if len(inputs) > 1 else inputs[0],
                           outputs if len(outputs) > 1 else outputs[0], name=self._name(spec.name))

    # -- layout helpers
    def _permute(self, x: _Tensor, dims: tuple[int, ...], name: str) -> Any:
        """Apply keras Permute with 0-based dims (output axis i = input axis dims[i])."""
        return keras.layers.Permute(tuple(d + 1 for d in dims), name=self._name(name))(x.t)

    def _logical(self, x: _Tensor, name: str) -> _Tensor:
        """The tensor in the original model's axis order."""
        if x.perm is None:
            return x
        inv = tuple(int(i) for i in np.argsort(x.perm))
        return _Tensor(self._permute(x, inv, f"{name}_to_original_order"))

    def _channels_last(self, x: _Tensor, name: str) -> _Tensor:
        """Stored channels-last for a layer that is channels-first in the old model."""
        r = x.rank
        cl_perm = tuple(range(1, r)) + (0,)
        if x.perm == cl_perm:
            return x
        x = self._logical(x, name)
        return _Tensor(self._permute(x, cl_perm, f"{name}_to_channels_last"), cl_perm)

    def _ordering_cf(self, spec: _LayerSpec, n: int) -> bool:
        val = _get(spec.config, "dim_ordering", "data_format", default="default")
        if val == "default":
            return self.default_cf if n == 2 else False
        return _is_cf(val)

    def _padding(self, spec: _LayerSpec) -> str:
        pad = str(_get(spec.config, "border_mode", "padding", default="valid"))
        if pad not in ("valid", "same"):
            raise UnsupportedModelError(
                f"layer {spec.name!r} ({spec.class_name}) has padding {pad!r}; only 'valid' and 'same' are "
                "supported", path=self.where,
            )
        return pad

    # -- converters
    def _conv(self, spec: _LayerSpec, x: _Tensor, w: list[np.ndarray], n: int) -> _Tensor:
        cfg = spec.config
        cf = self._ordering_cf(spec, n)
        if n == 1:
            k = _tuple(_get(cfg, "kernel_size", "filter_length"), 1)
            strides = _tuple(_get(cfg, "strides", "subsample_length", "subsample", default=1), 1)
        else:
            k = _tuple(_get(cfg, "kernel_size", default=(cfg.get("nb_row"), cfg.get("nb_col"))), 2)
            strides = _tuple(_get(cfg, "strides", "subsample", default=(1, 1)), 2)
        if any(d != 1 for d in _tuple(_get(cfg, "dilation_rate", default=1), n)):
            raise UnsupportedModelError(f"layer {spec.name!r}: dilated convolution is not supported",
                                        path=self.where)
        filters = int(_get(cfg, "filters", "nb_filter"))
        pad = self._padding(spec)
        x = self._channels_last(x, spec.name) if cf else self._logical(x, spec.name)
        in_ch = int(x.t.shape[-1])
        kernel = _kernel_to_keras3(w[0], k, in_ch, filters, spec)
        if self.flip:
            kernel = kernel[(slice(None, None, -1),) * n]
        t = x.t
        if pad == "same" and self.flip:
            # Theano 'same' = 'half' padding (k // 2 on the left) cropped at the end: differs from TF for
            # even kernels, so pad explicitly and run a valid convolution.
            if any(s != 1 for s in strides):
                raise UnsupportedModelError(
                    f"layer {spec.name!r}: strided 'same' convolution trained with Theano is not supported",
                    path=self.where,
                )
            pads = tuple((kk // 2, kk - 1 - kk // 2) for kk in k)
            zp_name = self._name(f"{spec.name}_theano_same_padding")
            zp = (keras.layers.ZeroPadding1D(pads[0], name=zp_name) if n == 1
                  else keras.layers.ZeroPadding2D(pads, name=zp_name))
            t, pad = zp(t), "valid"
        conv_cls = keras.layers.Conv1D if n == 1 else keras.layers.Conv2D
        use_bias = len(w) > 1
        act = _activation_name(_get(cfg, "activation", default="linear"), spec, self.where)
        layer = conv_cls(filters, k, strides=strides, padding=pad, activation=act, use_bias=use_bias,
                         name=self._name(spec.name))
        out = layer(t)
        layer.set_weights([kernel.astype(np.float32)] + ([np.asarray(w[1], np.float32)] if use_bias else []))
        return _Tensor(out, x.perm)

    def _pool(self, spec: _LayerSpec, x: _Tensor, n: int, cls1: type, cls2: type) -> _Tensor:
        cfg = spec.config
        cf = self._ordering_cf(spec, n)
        if n == 1:
            size = _tuple(_get(cfg, "pool_size", "pool_length", default=2), 1)
            strides = _tuple(_get(cfg, "strides", "stride", default=size), 1)
        else:
            size = _tuple(_get(cfg, "pool_size", default=(2, 2)), 2)
            strides = _tuple(_get(cfg, "strides", default=size), 2)
        pad = self._padding(spec)
        if pad == "same" and self.flip:
            raise UnsupportedModelError(
                f"layer {spec.name!r}: 'same' pooling trained with Theano is not supported", path=self.where
            )
        x = self._channels_last(x, spec.name) if cf else self._logical(x, spec.name)
        cls = cls1 if n == 1 else cls2
        return _Tensor(cls(size, strides=strides, padding=pad, name=self._name(spec.name))(x.t), x.perm)

    def _dense(self, spec: _LayerSpec, x: _Tensor, w: list[np.ndarray]) -> _Tensor:
        x = self._logical(x, spec.name)
        units = int(_get(spec.config, "units", "output_dim"))
        use_bias = len(w) > 1
        layer = keras.layers.Dense(units, use_bias=use_bias, name=self._name(spec.name))
        out = _Tensor(layer(x.t))
        kernel = np.asarray(w[0], np.float32)
        if kernel.shape != (int(x.t.shape[-1]), units):
            raise InputError(f"layer {spec.name!r}: weight shape {kernel.shape} does not match input "
                             f"{int(x.t.shape[-1])} x {units} units", path=str(self.store.path))
        layer.set_weights([kernel] + ([np.asarray(w[1], np.float32)] if use_bias else []))
        act = _get(spec.config, "activation", default="linear")
        if _activation_name(act, spec, self.where) != "linear":
            out = self._activation(spec, out, act, name=f"{spec.name}_activation")
        return out

    def _activation(self, spec: _LayerSpec, x: _Tensor, act: Any, name: str | None = None) -> _Tensor:
        act = _activation_name(act, spec, self.where)
        if act == "softmax":
            x = self._logical(x, spec.name)
        return _Tensor(keras.layers.Activation(act, name=self._name(name or spec.name))(x.t), x.perm)

    def _dropout(self, spec: _LayerSpec, x: _Tensor) -> _Tensor:
        rate = float(_get(spec.config, "rate", "p", default=0.0))
        return _Tensor(keras.layers.Dropout(rate, name=self._name(spec.name))(x.t), x.perm)

    def _plain(self, spec: _LayerSpec, x: _Tensor, layer: Any) -> _Tensor:
        """A layer whose result depends on axis order: run it on the original order."""
        return _Tensor(layer(self._logical(x, spec.name).t))

    def _batchnorm(self, spec: _LayerSpec, x: _Tensor, w: list[np.ndarray]) -> _Tensor:
        cfg = spec.config
        if int(cfg.get("mode", 0)) != 0:
            raise UnsupportedModelError(
                f"layer {spec.name!r}: BatchNormalization mode {cfg['mode']} (batch statistics at test "
                "time) is not supported; only mode 0", path=self.where,
            )
        axis = cfg.get("axis", -1)
        if isinstance(axis, (list, tuple)):  # tf.keras writes the axis as a list
            if len(axis) != 1:
                raise UnsupportedModelError(
                    f"layer {spec.name!r} (BatchNormalization) normalises over several axes {axis}; only one "
                    "axis is supported", path=self.where,
                )
            axis = axis[0]
        axis = int(axis)
        logical = axis - 1 if axis > 0 else axis + x.rank
        stored = x.perm.index(logical) if x.perm is not None else logical
        eps = float(cfg.get("epsilon", 1e-3))
        scale, center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
        arrays = [np.asarray(a, np.float32) for a in w]
        gamma = arrays.pop(0) if scale else None
        beta = arrays.pop(0) if center else None
        mean, var = arrays
        if spec.keras0:
            # Keras 0.3 normalised by (running_std + epsilon), not sqrt(var + epsilon).
            var, eps = (var + eps) ** 2, 0.0
        layer = keras.layers.BatchNormalization(axis=stored + 1, epsilon=eps, scale=scale, center=center,
                                                name=self._name(spec.name))
        out = layer(x.t)
        layer.set_weights([a for a in (gamma, beta) if a is not None] + [mean, var])
        return _Tensor(out, x.perm)

    def _custom(self, spec: _LayerSpec, xs: list[_Tensor], w: list[np.ndarray]) -> _Tensor | list[_Tensor]:
        """A layer of a class from ``custom_objects``, rebuilt from its config; several outputs become a list."""
        cls = self.custom_objects[spec.class_name]
        cfg = {k: v for k, v in spec.config.items() if k not in ("trainable", "dtype")}
        cfg["name"] = self._name(spec.name)
        layer = cls.from_config(cfg) if hasattr(cls, "from_config") else cls(**cfg)
        ins = [self._logical(x, f"{spec.name}_in{i}").t for i, x in enumerate(xs)]
        out = layer(ins[0] if len(ins) == 1 else ins)
        if w:
            layer.set_weights([np.asarray(a) for a in w])
        if isinstance(out, (list, tuple)):
            return [_Tensor(o) for o in out]
        return _Tensor(out)

    def _global_pool(self, spec: _LayerSpec, x: _Tensor, cls: type) -> _Tensor:
        """Global max/average pooling over the length axis of a (L, C) tensor (channels-first if declared)."""
        x = self._logical(x, spec.name)
        fmt = _get(spec.config, "data_format", default="channels_last")
        return _Tensor(cls(data_format=fmt, name=self._name(spec.name))(x.t))

    def _merge(self, spec: _LayerSpec, xs: list[_Tensor]) -> _Tensor:
        mode = _MERGE_MODE_OF_CLASS.get(spec.class_name) or str(spec.config.get("mode", "concat"))
        perms = {x.perm for x in xs}
        if len(perms) > 1:
            xs = [self._logical(x, f"{spec.name}_in{i}") for i, x in enumerate(xs)]
        perm = xs[0].perm
        name = self._name(spec.name)
        ts = [x.t for x in xs]
        if mode == "concat":
            axis = int(_get(spec.config, "concat_axis", "axis", default=-1))
            logical = axis - 1 if axis > 0 else axis + xs[0].rank
            stored = perm.index(logical) if perm is not None else logical
            return _Tensor(keras.layers.Concatenate(axis=stored + 1, name=name)(ts), perm)
        layers = {"sum": keras.layers.Add, "mul": keras.layers.Multiply, "ave": keras.layers.Average,
                  "max": keras.layers.Maximum}
        if mode not in layers:
            raise UnsupportedModelError(
                f"layer {spec.name!r}: merge mode {mode!r} is not supported (concat, sum, mul, ave, max)",
                path=self.where,
            )
        return _Tensor(layers[mode](name=name)(ts), perm)


def _activation_name(act: Any, spec: _LayerSpec, where: str) -> str:
    if isinstance(act, dict):  # Keras 2.x serialised activation
        act = act.get("config", {}).get("name", act.get("class_name"))
    act = str(act or "linear")
    if act not in _ACTIVATIONS:
        raise UnsupportedModelError(
            f"layer {spec.name!r}: activation {act!r} is not supported ({', '.join(sorted(_ACTIVATIONS))})",
            path=where,
        )
    return act


def _kernel_to_keras3(w: np.ndarray, k: tuple[int, ...], in_ch: int, filters: int, spec: _LayerSpec) -> np.ndarray:
    """Any old kernel layout -> Keras 3 ``(*k, in, out)``.

    Keras 0.3/1 'th' Convolution2D: (out, in, kh, kw); 'tf': (kh, kw, in, out). Keras 1 Convolution1D:
    (k, 1, in, out); Keras 0.3 Convolution1D: (out, in, k, 1); Keras 2: already (*k, in, out).
    """
    w = np.asarray(w)
    target = (*k, in_ch, filters)
    if w.shape == target:
        return w
    if len(k) == 2 and w.shape == (filters, in_ch, *k):
        return w.transpose(2, 3, 1, 0)
    if len(k) == 1 and w.shape == (k[0], 1, in_ch, filters):
        return w[:, 0]
    if len(k) == 1 and w.shape == (filters, in_ch, k[0], 1):
        return w[..., 0].transpose(2, 1, 0)
    raise InputError(
        f"layer {spec.name!r}: kernel shape {w.shape} does not fit kernel {k}, {in_ch} input channels and "
        f"{filters} filters"
    )
