"""DeepLIFT/DeepSHAP multipliers for Keras 3 (TensorFlow backend) models, with the rule set shared with
``deeplift_torch``.

Why an own engine rather than ``shap.DeepExplainer``: shap swaps TensorFlow's global gradient registry, runs
one graph per explained sequence, and differentiates every op it has no handler for as if it were linear. Here
the model's layer graph is walked (recursing into nested models): every layer is classified as linear,
elementwise-nonlinear (Rescale rule), max-pooling (the shared max-pool rule) or unsupported
(``UnsupportedModelError`` naming the layer), and the graph is re-run on the paired batch ``[x; ref]`` with
``tf.custom_gradient`` ops at the nonlinearities, inside one ``tf.function`` per (model, input shape) that is
cached, so repeated calls do not retrace. The rules are described in docs/deeplift.md.
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kipoi_dfim.backend import _deeplift_common as C
from kipoi_dfim.errors import InputError, UnsupportedModelError

__all__ = ["deeplift_multipliers_keras", "maxpool_windows_tf", "window_max_tf"]

_L = keras.layers
_A = keras.activations

_LINEAR_LAYERS: tuple[type, ...] = (
    _L.InputLayer,
    _L.Dense,
    _L.Conv1D,
    _L.Conv2D,
    _L.Conv1DTranspose,
    _L.Conv2DTranspose,
    _L.SeparableConv1D,
    _L.SeparableConv2D,
    _L.DepthwiseConv1D,
    _L.DepthwiseConv2D,
    _L.BatchNormalization,
    _L.Dropout,
    _L.SpatialDropout1D,
    _L.SpatialDropout2D,
    _L.GaussianDropout,
    _L.GaussianNoise,
    _L.AlphaDropout,
    _L.Flatten,
    _L.Reshape,
    _L.Permute,
    _L.RepeatVector,
    _L.AveragePooling1D,
    _L.AveragePooling2D,
    _L.GlobalAveragePooling1D,
    _L.GlobalAveragePooling2D,
    _L.Concatenate,
    _L.Add,
    _L.Subtract,
    _L.Average,
    _L.ZeroPadding1D,
    _L.ZeroPadding2D,
    _L.Cropping1D,
    _L.Cropping2D,
    _L.UpSampling1D,
    _L.Identity,
)

_MAXPOOL_LAYERS: tuple[type, ...] = (
    _L.MaxPooling1D,
    _L.MaxPooling2D,
    _L.GlobalMaxPooling1D,
    _L.GlobalMaxPooling2D,
)

#: Keras activation functions with a Rescale rule (identity, so a custom function of the same name is
#: not mistaken for a built-in). ``linear`` means "no activation".
_ACTIVATIONS: dict[Any, str] = {
    _A.linear: "linear",
    _A.relu: "relu",
    _A.relu6: "relu6",
    _A.leaky_relu: "leaky_relu",
    _A.elu: "elu",
    _A.selu: "selu",
    _A.sigmoid: "sigmoid",
    _A.hard_sigmoid: "hard_sigmoid",
    _A.tanh: "tanh",
    _A.softplus: "softplus",
    _A.softsign: "softsign",
    _A.exponential: "exp",
}

#: keras.ops operations that appear as graph nodes when a functional model applies ops to KerasTensors.
_LINEAR_OPS = {"Add", "Subtract", "Negative", "Reshape", "Transpose", "Squeeze", "ExpandDims", "Concatenate",
               "GetItem", "Flatten", "Sum", "Mean"}
_ELEMENTWISE_OPS = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp",
                    "Softplus": "softplus", "Softsign": "softsign", "Elu": "elu", "Selu": "selu",
                    "LeakyRelu": "leaky_relu", "HardSigmoid": "hard_sigmoid"}

_SUPPORTED = (
    "supported are linear layers (Dense, Conv, BatchNormalization, Dropout, Flatten, Reshape, Permute, "
    "AveragePooling, Concatenate, Add, ...), the activations relu, relu6, leaky_relu, elu, selu, sigmoid, "
    "hard_sigmoid, tanh, softplus, softsign, exponential, and max-pooling (see docs/deeplift.md)"
)


# --------------------------------------------------------------------------------------------------------
# The two rules as custom-gradient ops on the paired batch [x; ref].
# --------------------------------------------------------------------------------------------------------


def rescale_multiplier_tf(fn: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor, r: tf.Tensor,
                          f_x: tf.Tensor | None = None, f_r: tf.Tensor | None = None) -> tf.Tensor:
    """Rescale multiplier (fn(x) - fn(r)) / (x - r), derivative at x where |x - r| < C.RESCALE_EPS.

    The same definition as ``deeplift_torch.rescale_multiplier_torch``. ``f_x``/``f_r`` may be passed when
    already known.
    """
    with tf.GradientTape() as tape:
        tape.watch(x)
        traced = fn(x)
    derivative = tape.gradient(traced, x)
    if derivative is None:  # fn constant
        derivative = tf.zeros_like(x)
    f_x = traced if f_x is None else f_x
    f_r = fn(r) if f_r is None else f_r
    delta = x - r
    small = tf.abs(delta) < C.RESCALE_EPS
    secant = (f_x - f_r) / tf.where(small, tf.ones_like(delta), delta)
    return tf.where(small, tf.cast(derivative, secant.dtype), secant)


def _rescale_op(fn: Callable[[tf.Tensor], tf.Tensor], exact: bool) -> Callable[[tf.Tensor], tf.Tensor]:
    """fn on the paired batch, with the Rescale rule as its gradient (x-half multipliers, duplicated).

    Smooth functions take their secant in float64 (see the torch twin); for relu/relu6 (``exact``) the
    float32 secant is already exact and the forward values are reused.
    """

    @tf.custom_gradient
    def op(z: tf.Tensor) -> Any:
        y = fn(z)

        def grad(g: tf.Tensor) -> tf.Tensor:
            half = tf.shape(z)[0] // 2
            if exact:
                m = rescale_multiplier_tf(fn, z[:half], z[half:], y[:half], y[half:])
            else:
                m = rescale_multiplier_tf(fn, tf.cast(z[:half], tf.float64), tf.cast(z[half:], tf.float64))
            h = g[:half] * tf.cast(m, g.dtype)
            return tf.concat([h, h], 0)

        return y, grad

    return op


class _Windows:
    """A max-pool over ``axes`` as gather/scatter over explicit windows: the TensorFlow twin of
    ``deeplift_torch._Windows`` (same shared ``C.window_index``; unsorted_segment_sum plays index_add_).

    Only the pooled (spatial) axes need static sizes; the batch axis stays dynamic so one traced function
    serves every batch size.
    """

    def __init__(self, rank: int, axes: list[int], spec: list[dict[str, int]]):
        self.axes = list(axes)
        self.others = [i for i in range(rank) if i not in self.axes]
        self.perm = self.axes + self.others
        self.inverse = [self.perm.index(i) for i in range(rank)]
        self.spec = spec
        self.idx = tf.constant(C.window_index(spec))
        self.grid_size = int(np.prod([a["padded"] for a in spec]))
        a = spec[0]  # one axis, windows side by side: gather/scatter become reshapes (as in the torch twin)
        self.tiled = len(spec) == 1 and a["stride"] == a["kernel"] and a["dilation"] == 1

    def _rest(self, like: tf.Tensor) -> tf.Tensor:
        return tf.gather(tf.shape(like), self.others)

    def grid(self, z: tf.Tensor) -> tf.Tensor:
        """(padded spatial positions, rest) view of z, -inf in the padding."""
        t = tf.reshape(tf.transpose(z, self.perm), [a["length"] for a in self.spec] + [-1])
        pads = [[a["left"], a["padded"] - a["length"] - a["left"]] for a in self.spec] + [[0, 0]]
        t = tf.pad(t, pads, constant_values=-np.inf)
        return tf.reshape(t, [self.grid_size, -1])

    def crop(self, t: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
        """Inverse of ``grid`` (padding dropped), shaped like ``like``."""
        t = tf.reshape(t, [a["padded"] for a in self.spec] + [-1])
        t = tf.slice(t, [a["left"] for a in self.spec] + [0], [a["length"] for a in self.spec] + [-1])
        shape = tf.concat([[a["length"] for a in self.spec], self._rest(like)], 0)
        return tf.transpose(tf.reshape(t, shape), self.inverse)

    def windows(self, grid: tf.Tensor) -> tf.Tensor:
        """(windows, window size, rest) values of a grid."""
        if self.tiled:
            a = self.spec[0]
            return tf.reshape(grid[: a["out"] * a["kernel"]], [a["out"], a["kernel"], -1])
        return tf.gather(grid, self.idx)

    def fold(self, values: tf.Tensor) -> tf.Tensor:
        """Scatter-add (windows, window size, rest) values back onto the grid."""
        flat = tf.reshape(values, [-1, tf.shape(values)[-1]])
        if self.tiled:
            return tf.pad(flat, [[0, self.grid_size - self.spec[0]["out"] * self.spec[0]["kernel"]], [0, 0]])
        return tf.math.unsorted_segment_sum(flat, tf.reshape(self.idx, [-1]), self.grid_size)

    def rows(self, y: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
        """A pooled tensor (any layout that reshapes to pooled axes kept) as (windows, rest)."""
        outs = tf.constant([a["out"] for a in self.spec], tf.int32)
        shape = tf.gather(tf.concat([outs, self._rest(like)], 0), self.inverse)
        return tf.reshape(tf.transpose(tf.reshape(y, shape), self.perm), [tf.shape(self.idx)[0], -1])

    def pooled(self, z: tf.Tensor) -> tf.Tensor:
        """The pooling itself, pooled axes kept in place (size ``out``)."""
        values = tf.reduce_max(self.windows(self.grid(z)), axis=1)
        shape = tf.concat([[a["out"] for a in self.spec], self._rest(z)], 0)
        return tf.transpose(tf.reshape(values, shape), self.inverse)


def maxpool_multiplier_tf(windows: _Windows, x: tf.Tensor, r: tf.Tensor, grad: tf.Tensor) -> tf.Tensor:
    """Upstream multipliers pushed through a max-pool by the shared rule (see the torch twin).

    With c = max(y_x, y_r) per window, (c - y_r) goes to the argmax of x and (y_x - c) to the argmax of the
    reference, ties split evenly; each input's total is divided by its x - r, and where x == r the
    (tie-split) gradient at x is used.
    """
    wx = windows.windows(windows.grid(x))
    wr = windows.windows(windows.grid(r))
    yx, yr = tf.reduce_max(wx, axis=1), tf.reduce_max(wr, axis=1)
    share_x = tf.cast(tf.equal(wx, yx[:, None]), x.dtype)
    share_x = share_x / tf.reduce_sum(share_x, axis=1, keepdims=True)
    share_r = tf.cast(tf.equal(wr, yr[:, None]), x.dtype)
    share_r = share_r / tf.reduce_sum(share_r, axis=1, keepdims=True)
    g = windows.rows(grad, x)
    cross = tf.maximum(yx, yr)
    routed = windows.fold(share_x * (g * (cross - yr))[:, None] + share_r * (g * (yx - cross))[:, None])
    routed = windows.crop(routed, x)
    gradient_x = windows.crop(windows.fold(share_x * g[:, None]), x)
    delta = x - r
    zero = tf.equal(delta, 0.0)
    return tf.where(zero, gradient_x, routed / tf.where(zero, tf.ones_like(delta), delta))


def _maxpool_op(forward_fn: Callable[[tf.Tensor], tf.Tensor], windows: _Windows) -> Callable[[tf.Tensor], tf.Tensor]:
    """The model's pooling on the paired batch, with the shared max-pool rule as its gradient."""

    @tf.custom_gradient
    def op(z: tf.Tensor) -> Any:
        def grad(g: tf.Tensor) -> tf.Tensor:
            half = tf.shape(z)[0] // 2
            m = tf.cast(maxpool_multiplier_tf(windows, z[:half], z[half:], tf.cast(g[:half], z.dtype)), g.dtype)
            return tf.concat([m, m], 0)

        return forward_fn(z), grad

    return op


# --------------------------------------------------------------------------------------------------------
# Pooling geometry: Keras conventions -> the shared window description.
# --------------------------------------------------------------------------------------------------------


def maxpool_windows_tf(
    shape: tuple[int | None, ...], pool_size: tuple[int, ...], strides: tuple[int, ...], padding: str,
    axes: tuple[int, ...],
) -> _Windows:
    """Window description of Keras/TensorFlow max-pooling over ``axes`` of tensors of ``shape``.

    "valid" has no padding; "same" gives ceil(L / s) windows and pads with -inf, the odd element at the end
    (TensorFlow's convention).
    """
    spec = []
    for i, axis in enumerate(axes):
        length, k, s = shape[axis], pool_size[i], strides[i]
        if length is None:
            raise UnsupportedModelError("DeepLIFT: max-pooling needs a fixed input length")
        if padding == "same":
            out = math.ceil(length / s)
            left = max((out - 1) * s + k - length, 0) // 2
        else:
            out, left = (length - k) // s + 1, 0
        spec.append(C.pool_axis(length, k, s, 1, left, out))
    return _Windows(len(shape), list(axes), spec)


def window_max_tf(
    z: tf.Tensor, pool_size: tuple[int, ...], strides: tuple[int, ...], padding: str, axes: tuple[int, ...]
) -> tf.Tensor:
    """Keras max-pooling recomputed from the explicit windows the rule uses (for checks and tests)."""
    return maxpool_windows_tf(tuple(z.shape), pool_size, strides, padding, axes).pooled(z)


def _windows_for(layer: keras.layers.Layer, shape: tuple[int | None, ...]) -> _Windows:
    """The window description of a Keras max-pooling layer for inputs of ``shape``."""
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    global_ = isinstance(layer, (_L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D))
    nd = 1 if isinstance(layer, (_L.GlobalMaxPooling1D, _L.MaxPooling1D)) else 2
    axes = tuple(range(2, 2 + nd)) if channels_first else tuple(range(1, 1 + nd))
    if global_:
        if any(shape[a] is None for a in axes):
            raise UnsupportedModelError(f"DeepLIFT: {_name(layer)} needs a fixed input length")
        spec = [C.pool_axis(shape[a], shape[a], shape[a], 1, 0, 1) for a in axes]
        return _Windows(len(shape), list(axes), spec)
    pool = tuple(int(v) for v in layer.pool_size)
    strides = tuple(int(v) for v in (layer.strides or layer.pool_size))
    return maxpool_windows_tf(shape, pool, strides, str(layer.padding).lower(), axes)


# --------------------------------------------------------------------------------------------------------
# Classification of layers and the re-run of the graph.
# --------------------------------------------------------------------------------------------------------


def _name(op: Any) -> str:
    return f"layer '{getattr(op, 'name', '?')}' ({type(op).__name__})"


def _activation_fn(layer: Any) -> tuple[str, Callable[[tf.Tensor], tf.Tensor]]:
    """(canonical name, function) of the elementwise nonlinearity a layer applies; raises if unsupported."""
    if isinstance(layer, _L.ReLU):
        kw = dict(negative_slope=layer.negative_slope, max_value=layer.max_value, threshold=layer.threshold)
        return "relu", lambda t: _A.relu(t, **kw)
    if isinstance(layer, _L.LeakyReLU):
        slope = layer.negative_slope
        return "leaky_relu", lambda t: _A.leaky_relu(t, negative_slope=slope)
    if isinstance(layer, _L.ELU):
        alpha = layer.alpha
        return "elu", lambda t: _A.elu(t, alpha=alpha)
    if isinstance(layer, keras.Operation) and not isinstance(layer, keras.layers.Layer):
        kind = _ELEMENTWISE_OPS.get(type(layer).__name__)
        if kind is None:
            raise UnsupportedModelError(f"DeepLIFT: op {_name(layer)} has no DeepLIFT rule; {_SUPPORTED}")
        return kind, lambda t: layer(t)
    act = getattr(layer, "activation", None)
    if act is None:
        return "linear", _A.linear
    try:
        kind = _ACTIVATIONS.get(act)
    except TypeError:  # unhashable callable object
        kind = None
    if kind is None:
        label = getattr(act, "__name__", type(act).__name__)
        raise UnsupportedModelError(
            f"DeepLIFT: {_name(layer)} uses activation '{label}', which has no DeepLIFT rule; {_SUPPORTED}"
        )
    return kind, act


def _exact_secant(op: Any) -> bool:
    """Whether the float32 secant is exact: plain relu/relu6 (the torch twin makes the same choice)."""
    if isinstance(op, _L.ReLU):
        return op.negative_slope == 0 and op.threshold == 0
    if isinstance(op, keras.Operation) and not isinstance(op, keras.layers.Layer):
        return type(op).__name__ in ("Relu", "Relu6")
    return getattr(op, "activation", None) in (_A.relu, _A.relu6)


def _kind(op: Any) -> str:
    """"model", "linear", "activation" (linear part + elementwise), "rescale", "maxpool"; raises otherwise."""
    if isinstance(op, keras.Model):
        return "model"
    if isinstance(op, _MAXPOOL_LAYERS):
        return "maxpool"
    if isinstance(op, (_L.Activation, _L.ReLU, _L.LeakyReLU, _L.ELU)):
        _activation_fn(op)
        return "rescale"
    if isinstance(op, _LINEAR_LAYERS):
        if hasattr(op, "activation"):
            return "linear" if _activation_fn(op)[0] == "linear" else "activation"
        return "linear"
    if isinstance(op, keras.Operation) and not isinstance(op, keras.layers.Layer):
        name = type(op).__name__
        if name in _LINEAR_OPS:
            return "linear"
        if name in _ELEMENTWISE_OPS:
            return "rescale"
        raise UnsupportedModelError(f"DeepLIFT: op {_name(op)} has no DeepLIFT rule; {_SUPPORTED}")
    raise UnsupportedModelError(f"DeepLIFT: {_name(op)} has no DeepLIFT rule; {_SUPPORTED}")


def _operations(model: keras.Model) -> list[Any]:
    """The layers/ops of a Sequential or Functional model, in order."""
    if isinstance(model, keras.Sequential):
        return list(model.layers)
    ops = getattr(model, "operations", None)
    if ops is None or not hasattr(model, "_run_through_graph"):
        raise UnsupportedModelError(
            f"DeepLIFT: {_name(model)} is a subclassed Keras model; its call() cannot be inspected. "
            "Build it with the Sequential or functional API."
        )
    return list(ops)


def validate_keras_model(model: keras.Model) -> None:
    """Raise UnsupportedModelError naming the first layer/op (recursively) without a DeepLIFT rule.

    Max-pooling layers whose input shape is known are also probed: the window-max re-expression used by the
    rule must reproduce the layer's output exactly, or the configuration is rejected.
    """
    for op in _operations(model):
        kind = _kind(op)
        if kind == "model":
            validate_keras_model(op)
        elif kind == "maxpool":
            _probe_pool(op)


def _probe_pool(layer: keras.layers.Layer) -> None:
    try:
        shape = tuple(layer.input.shape)
    except (AttributeError, ValueError):
        return
    if any(s is None for s in shape[1:]):
        return
    rng = np.random.default_rng(0)
    z = tf.constant(np.round(rng.normal(size=(2, *shape[1:])), 1), dtype=tf.float32)  # rounding -> ties
    mine = _windows_for(layer, shape).pooled(z).numpy()
    if not np.array_equal(layer(z).numpy().ravel(), mine.ravel()):
        raise UnsupportedModelError(f"DeepLIFT: max-pooling {_name(layer)}: this configuration is not supported")


class _WithoutActivation:
    """A view of a layer whose activation is linear, for calling the layer's ``call`` on its own linear part.

    Why a view rather than setting ``layer.activation`` for the duration of the call: other threads may be
    calling the same layer at that moment (a prediction, another engine's trace) and would see the layer
    without its activation. Every other attribute (weights, configuration, helper methods) is the layer's.
    """

    activation = staticmethod(_A.linear)

    def __init__(self, layer: keras.layers.Layer):
        self.__dict__["_layer"] = layer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_layer"], name)


def _linear_part(layer: keras.layers.Layer, args: tuple, kwargs: dict) -> tf.Tensor:
    """The layer's output before its activation (the layer itself is not modified)."""
    return type(layer).call(_WithoutActivation(layer), *args, **kwargs)


def _call(op: Any, args: tuple, kwargs: dict) -> Any:
    """Run one layer/op on the paired batch with its DeepLIFT rule (its output shown to the handler)."""
    return _SHARED.output(op, _call_rule(op, args, kwargs))


def _call_rule(op: Any, args: tuple, kwargs: dict) -> Any:
    kind = _kind(op)
    if kind == "model":
        return _run(op, args[0])
    if isinstance(op, keras.layers.Layer) and getattr(op, "_call_has_training_arg", False):
        kwargs = {**kwargs, "training": False}
    if kind == "linear":
        return op(*args, **kwargs)
    if kind == "activation":
        pre = _linear_part(op, args, kwargs)
        return _SHARED.rescale(_activation_fn(op)[1], _exact_secant(op), pre, op)
    if kind == "rescale":
        return _SHARED.rescale(_activation_fn(op)[1], _exact_secant(op), args[0], op)
    return _SHARED.maxpool(lambda t: op(t), _windows_for(op, tuple(args[0].shape)), args[0])


def _run(model: keras.Model, h: tf.Tensor) -> Any:
    """Re-run a (possibly nested) model's graph on h with DeepLIFT rules at every nonlinear layer."""
    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            h = _call(layer, (h,), {})
        return h
    out = model._run_through_graph([h], operation_fn=lambda op: (lambda *a, **k: _call(op, a, k)))
    while isinstance(out, (list, tuple)) and len(out) == 1:
        out = out[0]
    return out


# --------------------------------------------------------------------------------------------------------
# How the nonlinear layers run: pairwise rules, or the two phases of the shared-reference engine.
# --------------------------------------------------------------------------------------------------------


class _Mode(threading.local):
    """What ``_call`` does at a nonlinear layer (per thread: two threads may trace at the same time).

    With no handler (the default), the custom-gradient rule ops on the paired batch ``[x; ref]`` (the
    pairwise engine). The shared-reference engine (``deeplift_keras_shared``) installs a handler for each of
    its two phases: one that records what the rules need in the shared forward pass, one that replays the
    graph on a block of pair rows with the rules' multipliers as gradients.
    """

    def __init__(self) -> None:
        self.handler: Any = None

    @contextlib.contextmanager
    def use(self, handler: Any) -> Iterator[None]:
        saved, self.handler = self.handler, handler
        try:
            yield
        finally:
            self.handler = saved

    def rescale(self, fn: Callable[[tf.Tensor], tf.Tensor], exact: bool, z: tf.Tensor, op: Any) -> tf.Tensor:
        if self.handler is None:
            return _rescale_op(fn, exact)(z)
        return self.handler.rescale(fn, exact, z, op)

    def maxpool(self, forward_fn: Callable[[tf.Tensor], tf.Tensor], windows: _Windows, z: tf.Tensor) -> tf.Tensor:
        if self.handler is None:
            return _maxpool_op(forward_fn, windows)(z)
        return self.handler.maxpool(forward_fn, windows, z)

    def output(self, op: Any, out: Any) -> Any:
        """A layer's output, shown to the handler first (the shared engine's span crop captures the tensor
        at its boundary this way)."""
        if self.handler is not None:
            self.handler.output(op, out)
        return out


_SHARED = _Mode()


# --------------------------------------------------------------------------------------------------------
# Cached tf.function per (model, input shape).
# --------------------------------------------------------------------------------------------------------

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _engine(model: keras.Model, shape: tuple[int, ...]) -> tuple[Callable, int]:
    """(tf.function(x, r, target) -> (m, f_x, f_r), number of outputs) for this model and input shape.

    The function closes over a weak reference to the model so the cache does not keep models alive.
    """
    entry = _CACHE.setdefault(model, {})
    if shape in entry:
        return entry[shape]
    validate_keras_model(model)
    probe = model(np.zeros((1, *shape), dtype=np.float32), training=False)
    if isinstance(probe, (list, tuple)) or probe.shape.rank < 2 or any(s != 1 for s in probe.shape[2:]):
        raise UnsupportedModelError(
            f"DeepLIFT: the model must return one (B, T) tensor, got {getattr(probe, 'shape', type(probe))}"
        )
    n_out = int(probe.shape[1])
    ref = weakref.ref(model)
    spec = tf.TensorSpec((None, *shape), tf.float32)

    @tf.function(input_signature=[spec, spec, tf.TensorSpec((), tf.int32)], autograph=False)
    def run(x: tf.Tensor, r: tf.Tensor, target: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        half = tf.shape(x)[0]
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = _run(ref(), tf.concat([x, r], 0))
            y = tf.reshape(y, [tf.shape(y)[0], -1])
            scored = tf.gather(y, target, axis=1)
            total = tf.reduce_sum(scored[:half])
        return tape.gradient(total, x), scored[:half], scored[half:]

    entry[shape] = (run, n_out)
    return entry[shape]


def deeplift_multipliers_keras(
    model: keras.Model, x: np.ndarray, references: np.ndarray, target: int, batch_size: int = 64
) -> np.ndarray:
    """DeepLIFT multipliers of output ``target`` for every (sequence, reference) pair (Keras 3, TF backend).

    Same contract and rules as ``deeplift_torch.deeplift_multipliers_torch``: contribution of pair (i, r) is
    ``m[i, r] * (x[i] - references[i, r])``, summing over (L, 4) to ``f(x_i)[target] - f(ref_ir)[target]``;
    one RuntimeWarning counts the pairs that miss the tolerance in docs/deeplift.md.

    ``model`` is a Sequential or functional Keras 3 model mapping (B, L, 4) to (B, T) scored outputs (logits);
    nested models are walked; subclassed models and layers without a rule raise UnsupportedModelError naming
    them. ``x``, ``references``, ``target``, ``batch_size`` and the returned (N, R, L, 4) float32 multipliers are
    as documented for the PyTorch engine.
    """
    x, references = C.check_inputs(x, references, batch_size)
    n, r = references.shape[:2]
    run, n_out = _engine(model, tuple(x.shape[1:]))
    target = int(target)
    if not 0 <= target < n_out:
        raise InputError(f"DeepLIFT: target {target} out of range for {n_out} model outputs")
    out = np.zeros(references.shape, dtype=np.float32)
    f_x = np.zeros((n, r), dtype=np.float64)
    f_ref = np.zeros((n, r), dtype=np.float64)
    for seq, ref in C.pair_batches(n, r, int(batch_size)):
        m, yx, yr = run(tf.constant(x[seq]), tf.constant(references[seq, ref]), tf.constant(target, tf.int32))
        out[seq, ref] = m.numpy()
        f_x[seq, ref], f_ref[seq, ref] = yx.numpy(), yr.numpy()
    C.warn_violations(C.conservation_violations(out, x, references, f_x, f_ref), "Keras")
    return out
