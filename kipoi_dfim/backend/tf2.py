"""TensorFlow 2 SavedModels (Kipoi ``type: tensorflow2``) behind the SequenceModel protocol.

Kipoi's ``TensorFlow2Model`` stores a SavedModel directory (``args.savedmodel_path``). Keras 3 cannot rebuild
a layer graph from a SavedModel (``keras.models.load_model`` only reads ``.keras``/``.h5``), so the SavedModel
is loaded as one opaque ``keras.layers.TFSMLayer`` wrapped in a functional ``keras.Model``. The Keras adapter
then gives predictions and gradients (TensorFlow differentiates the restored functions), but:

* DeepLIFT needs to see every nonlinearity; a SavedModel is one function, so ``deeplift`` raises
  :class:`~kipoi_dfim.errors.UnsupportedModelError` naming the SavedModel layer. (The Keras DeepLIFT engine
  also refuses a TFSMLayer: it is in none of its rule tables; it is never treated as linear.)
* A final sigmoid/softmax inside the SavedModel cannot be removed, so logits are not available. The output
  op of the saved graph is inspected: if it is a ``Sigmoid``/``Softmax`` (or cannot be identified),
  ``output="logit"`` raises and the user must pass ``output="raw"`` to score the probabilities. If the graph
  ends in a linear op, the output already is the score and ``"logit"`` is allowed.

Why no inverse sigmoid: ``log(p) - log1p(-p)`` is exact in real numbers but not in float32. ``p`` rounds to 1
for logits above ~17 (the inverse is then +inf), near 1 the relative error of ``1 - p`` grows like
``eps / (1 - p)``, and the chain-rule gradient ``(dp/dx) / (p (1 - p))`` divides two underflowing numbers. For a
softmax, ``log p`` differs from the logit by a per-sequence constant, which changes DFIM scores. Neither is
"safe" for confident predictions, which are the ones users care about, so we refuse rather than approximate.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kipoi_dfim.backend.keras3 import KerasModel  # noqa: E402
from kipoi_dfim.errors import SEQ_LEN_HINT, InputError, UnsupportedModelError  # noqa: E402

log = logging.getLogger(__name__)

__all__ = [
    "SavedModelLayer",
    "SavedModelKerasModel",
    "choose_endpoint",
    "final_activation",
    "load_savedmodel",
    "savedmodel_keras_model",
]

#: Endpoints tried in this order when none is given: ``serve`` (``model.export``), the ``serving_default``
#: signature (``tf.saved_model.save``), ``__call__`` (a tf.Module; what kipoi's TensorFlow2Model calls).
ENDPOINTS = ("serve", "serving_default", "__call__")

_PASS_FIRST = {"Identity", "Reshape", "Squeeze", "ExpandDims", "Cast", "StridedSlice", "Slice", "GatherV2",
               "Transpose", "StopGradient", "Snapshot", "PreventGradient"}
_CALLS = {"StatefulPartitionedCall", "PartitionedCall"}
_FINAL = {"Sigmoid": "sigmoid", "Softmax": "softmax"}
_UNKNOWN = "unknown"


# ------------------------------------------------------------------------------------------ the endpoint
def _read_proto(path: Path):
    from tensorflow.core.protobuf import saved_model_pb2

    pb = path / "saved_model.pb"
    if not pb.is_file():
        raise InputError("not a TensorFlow SavedModel directory (no saved_model.pb)", path=str(path))
    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString(pb.read_bytes())
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise InputError(f"cannot parse saved_model.pb ({e})", path=str(pb)) from e
    if not sm.meta_graphs:
        raise InputError("saved_model.pb holds no MetaGraph", path=str(pb))
    return sm.meta_graphs[0]


def choose_endpoint(path: str | os.PathLike, call_endpoint: str | None = None) -> str:
    """The SavedModel function to call: ``call_endpoint`` if given, else the first of :data:`ENDPOINTS` present.

    Read from ``saved_model.pb`` without loading variables, so a wrong choice costs no second load. A SavedModel
    with none of those but exactly one signature uses that signature.

    Raises
    ------
    InputError
        If ``call_endpoint`` (or any endpoint) is not in the SavedModel; the message lists what is there.
    """
    path = Path(path)
    mg = _read_proto(path)
    attrs = {c.local_name for c in mg.object_graph_def.nodes[0].children} if mg.object_graph_def.nodes else set()
    signatures = [k for k in mg.signature_def if not k.startswith("__")]
    available = [e for e in ("serve", "__call__") if e in attrs] + signatures
    if call_endpoint is not None:
        if call_endpoint not in attrs and call_endpoint not in signatures:
            raise InputError(f"the SavedModel has no endpoint {call_endpoint!r}; available: {available}",
                             path=str(path))
        return call_endpoint
    for e in ENDPOINTS:
        if e in attrs or e in signatures:
            return e
    if len(signatures) == 1:
        return signatures[0]
    raise InputError(f"cannot choose a SavedModel endpoint; pass call_endpoint= one of {available}", path=str(path))


def _concrete_functions(fn: Any) -> list:
    """The concrete function(s) behind a restored function or signature."""
    if isinstance(fn, tf.types.experimental.ConcreteFunction):
        return [fn]
    return list(getattr(fn, "concrete_functions", []) or [])


def _input_spec(fn: Any, where: str) -> tf.TensorSpec:
    """The single input TensorSpec of an endpoint (positional or the one keyword of a signature)."""
    specs = set()
    for cf in _concrete_functions(fn):
        args, kwargs = cf.structured_input_signature
        flat = [s for s in tf.nest.flatten((args, kwargs)) if isinstance(s, tf.TensorSpec)]
        if len(flat) != 1:
            raise UnsupportedModelError(
                f"kipoi-dfim scores single-input sequence models; the SavedModel endpoint takes {len(flat)} "
                f"tensors: {flat}", path=where,
            )
        specs.add((tuple(flat[0].shape.as_list()), flat[0].dtype))
    if not specs:
        raise UnsupportedModelError("the SavedModel endpoint has no traced function", path=where)
    if len(specs) > 1:
        log.info("SavedModel endpoint has several input signatures %s; using the first", specs)
    shape, dtype = sorted(specs, key=str)[0]
    return tf.TensorSpec(shape, dtype)


# ------------------------------------------------------------------------------------ the final activation
def _parse_ref(ref: str, in_function: bool) -> tuple[str, int] | None:
    """('node', output index) of a tensor reference; None for a control input."""
    if ref.startswith("^"):
        return None
    parts = ref.split(":")
    if in_function:  # "node:out_arg:index" or a bare function argument
        return (parts[0], int(parts[2])) if len(parts) == 3 else (parts[0], -1)
    return parts[0], int(parts[1]) if len(parts) > 1 else 0


def _data_inputs(node: Any, in_function: bool) -> list[tuple[str, int]]:
    return [r for r in (_parse_ref(i, in_function) for i in node.input) if r is not None]


def _walk(nodes: dict, functions: dict, ref: tuple[str, int], in_function: bool, depth: int = 0) -> str | None:
    """Name of the final activation that produces tensor ``ref`` ("sigmoid", "softmax", None or "unknown")."""
    if depth > 200:
        return _UNKNOWN
    node = nodes.get(ref[0])
    if node is None:  # a function argument: the output is (a view of) an input, not a computed probability
        return _UNKNOWN
    op = node.op
    if op in _FINAL:
        return _FINAL[op]
    inputs = _data_inputs(node, in_function)
    if op in _CALLS:
        fdef = functions.get(node.attr["f"].func.name)
        if fdef is None or ref[1] < 0 or ref[1] >= len(fdef.signature.output_arg):
            return _UNKNOWN
        ret = fdef.ret[fdef.signature.output_arg[ref[1]].name]
        inner = {n.name: n for n in fdef.node_def}
        return _walk(inner, functions, _parse_ref(ret, True), True, depth + 1)
    if op == "IdentityN":
        return _walk(nodes, functions, inputs[max(ref[1], 0)], in_function, depth + 1)
    if op in _PASS_FIRST and inputs:
        return _walk(nodes, functions, inputs[0], in_function, depth + 1)
    if op in ("ConcatV2", "Pack") and inputs:
        parts = inputs[:-1] if op == "ConcatV2" else inputs
        found = {_walk(nodes, functions, p, in_function, depth + 1) for p in parts}
        return found.pop() if len(found) == 1 else _UNKNOWN
    return None  # a computing op that is not a squashing function: the output is the score itself


def final_activation(fn: Any) -> str | None:
    """The squashing function at the end of a SavedModel endpoint, read from its graph.

    Follows the output tensors back through identities, reshapes, casts, concatenations and nested function
    calls to the op that computes them.

    Returns
    -------
    str or None
        ``"sigmoid"`` or ``"softmax"`` if every output comes from that op, None if every output comes from
        another computing op (e.g. BiasAdd: the output is the logit), ``"unknown"`` otherwise.
    """
    found = set()
    for cf in _concrete_functions(fn):
        gd = cf.graph.as_graph_def()
        nodes = {n.name: n for n in gd.node}
        functions = {f.signature.name: f for f in gd.library.function}
        for t in cf.outputs:
            found.add(_walk(nodes, functions, _parse_ref(t.name, False), False))
    if not found:
        return _UNKNOWN
    return found.pop() if len(found) == 1 else _UNKNOWN


# -------------------------------------------------------------------------------------- layer and model
def _natural_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _row_size(t: tf.Tensor) -> int | tf.Tensor:
    """Elements per batch row; static when known so the Keras graph knows the number of targets."""
    rest = t.shape[1:]
    return int(np.prod(rest)) if rest.is_fully_defined() else tf.reduce_prod(tf.shape(t)[1:])


class SavedModelLayer(keras.layers.TFSMLayer):
    """A TFSMLayer returning one (B, T) tensor: every output flattened per row and concatenated.

    Signature endpoints return a dict; its entries are taken in natural key order (``output_0, output_1,
    ...``, as ``model.export``/``tf.saved_model.save`` name them). ``output_names`` records that order.
    """

    def __init__(self, filepath: str, call_endpoint: str, endpoint_dtype: tf.DType = tf.float32, **kw: Any):
        super().__init__(filepath, call_endpoint=call_endpoint, trainable=False, **kw)
        self.endpoint_dtype = endpoint_dtype
        self.output_names: list[str] | None = None

    def call(self, inputs: Any, training: bool = False, **kwargs: Any) -> Any:
        y = super().call(tf.cast(inputs, self.endpoint_dtype), training=False, **kwargs)
        if isinstance(y, dict):
            self.output_names = sorted(y, key=_natural_key)
            y = [y[k] for k in self.output_names]
        ys = tf.nest.flatten(y)
        ys = [tf.cast(tf.reshape(t, [-1, _row_size(t)]), tf.float32) for t in ys]
        return ys[0] if len(ys) == 1 else tf.concat(ys, axis=1)


def _unknown(d: Any) -> bool:
    """An axis a shape leaves open (None, or -1 in a Kipoi schema)."""
    return d is None or (isinstance(d, int) and d < 0)


def _merge_shape(signature: tuple, schema: tuple | None, where: str, seq_len: int | None = None) -> tuple[int, ...]:
    """The input shape without batch: the signature's, unknown axes filled from the Kipoi schema, then a single
    axis still unknown (the length) from ``seq_len``."""
    sig = tuple(signature[1:])
    base = sig if schema is None else tuple(schema)
    if seq_len is not None and sum(d is None for d in sig) == 1 and sum(map(_unknown, base)) == 1:
        schema = tuple(int(seq_len) if _unknown(d) else d for d in base)
    if schema is None:
        if any(d is None for d in sig):
            raise InputError(f"the SavedModel takes inputs of shape {sig}; the sequence length is unknown: give "
                             f"schema.inputs.shape in model.yaml or {SEQ_LEN_HINT}",
                             path=where)
        return sig
    schema = tuple(None if d is None or (isinstance(d, int) and d < 0) else int(d) for d in schema)
    if len(schema) != len(sig) or any(
            a is not None and b is not None and a != b for a, b in zip(sig, schema, strict=True)):
        raise InputError(f"schema.inputs.shape {schema} does not fit the SavedModel's input shape {sig}", path=where)
    merged = tuple(a if a is not None else b for a, b in zip(sig, schema, strict=True))
    if any(d is None for d in merged):
        raise InputError(f"the input shape {merged} has an unknown axis; {SEQ_LEN_HINT}",
                         path=where)
    return merged


def load_savedmodel(
    path: str | os.PathLike,
    call_endpoint: str | None = None,
    input_shape: tuple | None = None,
    seq_len: int | None = None,
) -> tuple[keras.Model, SavedModelLayer]:
    """A SavedModel as a functional keras.Model ``Input -> SavedModelLayer``, and the layer.

    Parameters
    ----------
    path
        The SavedModel directory.
    call_endpoint
        Endpoint to call; default the first of :data:`ENDPOINTS` the SavedModel has.
    input_shape
        Input shape without batch axis (the Kipoi schema's), used for axes the signature leaves unknown.
    seq_len
        Sequence length, when neither the signature nor ``input_shape`` fixes it (layouts ``(L,4)``/``(4,L)``).

    Returns
    -------
    (keras.Model, SavedModelLayer)
    """
    path = Path(path)
    where = str(path)
    endpoint = choose_endpoint(path, call_endpoint)
    try:
        layer = SavedModelLayer(str(path), endpoint, name="savedmodel")
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load the SavedModel ({type(e).__name__}: {e})", path=where) from e
    spec = _input_spec(layer.call_endpoint_fn, where)
    layer.endpoint_dtype = spec.dtype
    sig = tuple(spec.shape.as_list())
    shape = _merge_shape(sig, input_shape, where, seq_len)
    inp = keras.Input(shape, name="savedmodel_input")
    model = keras.Model(inp, layer(inp), name=f"savedmodel_{path.name}".replace(".", "_"))
    return model, layer


class SavedModelKerasModel(KerasModel):
    """The Keras adapter around a SavedModel: predict and gradient; no DeepLIFT, no logits behind a sigmoid.

    ``activation`` is the final squashing function found in the saved graph (it is not removed).
    """

    framework = "tensorflow2"

    def __init__(self, model: keras.Model, layer: SavedModelLayer, path: str, output: str = "logit", **kw: Any):
        self.savedmodel_path = str(path)
        self.savedmodel_layer = layer
        self.final_activation = final_activation(layer.call_endpoint_fn)
        if output == "logit":
            self._check_logit()
        super().__init__(model, output=output, **kw)
        self.activation = self.final_activation if self.final_activation in ("sigmoid", "softmax") else None

    def _check_logit(self) -> None:
        fa = self.final_activation
        if fa is None:
            return
        what = (f"ends in a {fa}" if fa != _UNKNOWN
                else "has an output kipoi-dfim cannot trace to a linear op or a sigmoid/softmax")
        raise UnsupportedModelError(
            f"the TensorFlow SavedModel {what}; its logits cannot be scored because a SavedModel's final "
            "activation cannot be removed (an inverse sigmoid is inexact for confident predictions). Pass "
            "output='raw' (--output raw) to score the model output as is, or give the Keras model file (.keras) "
            "it was exported from.",
            path=self.savedmodel_path,
        )

    def _scored(self, output: str) -> keras.Model:
        if output == "logit":
            self._check_logit()
        return super()._scored(output)

    def _multipliers(self, x: np.ndarray, references: np.ndarray, target: int) -> np.ndarray:
        raise UnsupportedModelError(
            f"DeepLIFT: layer '{self.savedmodel_layer.name}' (TFSMLayer) is a TensorFlow SavedModel loaded as one "
            "opaque function, so its nonlinearities cannot be given DeepLIFT rules. Use grad_input, "
            "integrated_gradients or ism, or give the Keras model file (.keras) the SavedModel was exported from.",
            path=self.savedmodel_path,
        )


def savedmodel_keras_model(path: str | os.PathLike, input_shape: tuple | None = None, call_endpoint: str | None = None,
                           seq_len: int | None = None, targets: list[str] | None = None,
                           **kw: Any) -> SavedModelKerasModel:
    """Load a SavedModel directory (Kipoi ``tensorflow2``) as a :class:`SavedModelKerasModel`.

    Parameters
    ----------
    path
        The SavedModel directory (``args.savedmodel_path``).
    input_shape
        The Kipoi schema's input shape (without batch), for axes the SavedModel signature leaves open.
    call_endpoint
        The SavedModel function to call (default: see :data:`ENDPOINTS`).
    seq_len, targets, **kw
        As for :class:`~kipoi_dfim.backend.keras3.KerasModel` (``output``, ``layout``, ``batch_size``).
        Without ``targets``, single-column outputs of a signature are named by their keys.
    """
    model, layer = load_savedmodel(path, call_endpoint=call_endpoint, input_shape=input_shape, seq_len=seq_len)
    if targets is None and layer.output_names and len(layer.output_names) == int(model.outputs[0].shape[-1]):
        targets = list(layer.output_names)
    return SavedModelKerasModel(model, layer, str(path), seq_len=seq_len, targets=targets, **kw)
