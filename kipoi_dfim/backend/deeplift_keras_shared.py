"""DFIM's shared-reference DeepLIFT engine for Keras 3 (TensorFlow backend): the twin of the PyTorch
``SharedPlan`` (``deeplift_torch``), with the same rules and numbers as the pairwise engine in
``deeplift_keras``.

Why two phases: the K windows of a variant share their R references, so the references' activations are
needed once per variant, not once per (window, target). Phase 1 runs the windows and references of a chunk
of variants through ONE forward pass and records, per row, what the rules need. Phase 2 computes the
multipliers of a block of (variant, window, target, reference) pair rows with one backward pass: the model
is re-run on a block-sized batch of zeros whose nonlinear layers carry the rules' multipliers as their
gradients. Nothing in that backward pass reads the forward values of the block (a linear layer's
vector-Jacobian product does not depend on the point, the rules read phase 1's records), and the shapes are
static, so TensorFlow prunes the block's forward computation: the block costs one backward pass.

The block is laid out (V variants, K windows, Tb targets, R references), so a rule reads its windows' rows
as (V, K, 1, 1, ...) and its references' rows as (V, 1, 1, R, ...) slices that broadcast against each other:
no row is gathered per pair and each multiplier is formed once for all the block's targets. A relu (or
relu6) whose only consumer is a max-pool with side-by-side windows is fused with it ("relu-pool": one
factor per (window, reference), as in the torch twin), and its elementwise arithmetic is compiled with XLA,
which fuses it into one pass over memory.

With a ``span`` (the positions DFIM reads), the backward pass stops at the top of the model's local bottom
chain and replays the chain only on the slices that reach the span (``deeplift_keras_crop``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kipoi_dfim.backend import _deeplift_common as C
from kipoi_dfim.backend.deeplift_keras import _SHARED, _call, _engine, _run, _Windows, maxpool_multiplier_tf
from kipoi_dfim.backend.deeplift_keras_crop import Chain, Slices, crop_plan, find_chain
from kipoi_dfim.errors import InputError

__all__ = ["SharedPathUnavailable", "deeplift_shared_keras"]


class SharedPathUnavailable(Exception):
    """The shared-reference engine cannot run this model (the caller falls back to the pairwise engine).

    Part of the adapters' protocol (the PyTorch twin raises it for graphs torch.fx cannot trace); this engine
    serves every model the pairwise Keras engine serves, and raises UnsupportedModelError for the others.
    """


# --------------------------------------------------------------------------------------------------------
# Phase 1: the shared forward pass, recording per-row parts of the rules.
# --------------------------------------------------------------------------------------------------------


def _single_consumer(op: Any) -> bool:
    """Whether the layer/op is called once and its output feeds exactly one layer (so a rule may be fused)."""
    return len(getattr(op, "_inbound_nodes", ())) == 1 and len(getattr(op, "_outbound_nodes", ())) == 1


def _tiled(windows: _Windows) -> bool:
    """Windows side by side along the length axis (channels last), starting at 0, none padded."""
    a = windows.spec[0]
    return windows.tiled and windows.axes == [1] and a["left"] == 0 and a["out"] * a["kernel"] <= a["length"]


class _Capture:
    """Keeps the output of one op (``boundary_op``, the top of the span crop's chain) as ``boundary``."""

    boundary_op: Any = None
    boundary: tf.Tensor | None = None

    def output(self, op: Any, out: Any) -> None:
        if op is self.boundary_op and self.boundary is None:
            self.boundary = out


class _Recorder(_Capture):
    """Phase-1 handler of ``deeplift_keras._SHARED``: the plain layers, recording per nonlinear layer.

    ``records`` (tensors, returned by the traced forward function) and ``meta`` (static facts: the kind of
    each record, which relu is fused into the next pool) are in call order.
    """

    def __init__(self, n_windows: tf.Tensor):
        self.n_windows = n_windows
        self.records: list[dict[str, tf.Tensor]] = []
        self.meta: list[dict[str, Any]] = []
        self._fusable: dict[int, tuple[tf.Tensor, int]] = {}  # id(output) -> (output, record index)

    def rescale(self, fn: Callable[[tf.Tensor], tf.Tensor], exact: bool, z: tf.Tensor, op: Any) -> tf.Tensor:
        zz = z if exact else tf.cast(z, tf.float64)
        wx = zz[: self.n_windows]
        with tf.GradientTape() as tape:
            tape.watch(wx)
            traced = fn(wx)
        derivative = tape.gradient(traced, wx)
        y = fn(z)
        self.records.append({"z": zz, "y": y if exact else fn(zz),
                             "d": tf.zeros_like(wx) if derivative is None else derivative})
        self.meta.append({"kind": "rescale", "fused": False})
        if exact and _single_consumer(op):
            self._fusable[id(y)] = (y, len(self.records) - 1)
        return y

    def maxpool(self, forward_fn: Callable[[tf.Tensor], tf.Tensor], windows: _Windows, z: tf.Tensor) -> tf.Tensor:
        y = forward_fn(z)
        if not _tiled(windows):
            self.records.append({"z": z})
            self.meta.append({"kind": "pool", "windows": windows})
            return y
        relu = self._fusable.pop(id(z), None)
        fused = relu is not None and relu[0] is z
        a = windows.spec[0]
        top = tf.reshape(y, tf.concat([[-1, a["out"]], tf.shape(z)[2:]], 0))  # a global pool drops the axis
        if fused:  # the relu's record moves into the pool's (the relu passes its cotangent through)
            self.meta[relu[1]]["fused"] = True
            record = {**self.records[relu[1]], "top": top}
            self.records[relu[1]] = {}
        else:
            shape = tf.concat([[-1, a["out"], a["kernel"]], tf.shape(z)[2:]], 0)
            is_max = tf.cast(tf.equal(tf.reshape(z[:, : a["out"] * a["kernel"]], shape), tf.expand_dims(top, 2)),
                             z.dtype)
            record = {"z": z, "top": top, "is_max": is_max, "inv": 1.0 / tf.reduce_sum(is_max, axis=2)}
        self.records.append(record)
        self.meta.append({"kind": "relupool" if fused else "tiledpool", "windows": windows})
        return y


# --------------------------------------------------------------------------------------------------------
# Phase 2: the block backward pass.
# --------------------------------------------------------------------------------------------------------


class _Block:
    """A block of pair rows: variants [v0, v0 + V) of the chunk, K windows, Tb targets, R references.

    The chunk's records hold its n_windows window rows first, then the reference rows; ``window`` and
    ``reference`` cut the block's rows out as broadcastable (V, K, 1, 1, ...) and (V, 1, 1, R, ...) views.
    """

    def __init__(self, v0: tf.Tensor, v: int, k: int, tb: int, r: int, n_windows: tf.Tensor):
        self.v0, self.v, self.k, self.tb, self.r, self.n_windows = v0, v, k, tb, r, n_windows
        self.p = v * k * tb * r

    def window(self, t: tf.Tensor) -> tf.Tensor:
        rows = t[self.v0 * self.k: (self.v0 + self.v) * self.k]
        return tf.reshape(rows, [self.v, self.k, 1, 1, *t.shape[1:]])

    def reference(self, t: tf.Tensor) -> tf.Tensor:
        start = self.n_windows + self.v0 * self.r
        rows = t[start: start + self.v * self.r]
        return tf.reshape(rows, [self.v, 1, 1, self.r, *t.shape[1:]])

    def grid(self, g: tf.Tensor) -> tf.Tensor:
        """A (P, ...) cotangent as (V, K, Tb, R, ...)."""
        return tf.reshape(g, [self.v, self.k, self.tb, self.r, *g.shape[1:]])


def _safe_div(num: tf.Tensor, den: tf.Tensor, where: tf.Tensor, fallback: tf.Tensor) -> tf.Tensor:
    """``fallback`` where ``where`` holds, else num / den (den replaced by 1 there, so no inf/nan)."""
    return tf.where(where, fallback, num / tf.where(where, tf.ones_like(den), den))


def _rescale_block(record: dict[str, tf.Tensor], block: _Block, g: tf.Tensor) -> tf.Tensor:
    """Cotangent g (P, ...) times the Rescale multipliers of the block's pairs (the pairwise rule's numbers)."""
    z, y = record["z"], record["y"]
    delta = block.window(z) - block.reference(z)
    small = tf.abs(delta) < C.RESCALE_EPS
    m = _safe_div(block.window(y) - block.reference(y), delta, small, block.window(record["d"]))
    return tf.reshape(block.grid(g) * tf.cast(m, g.dtype), tf.shape(g))


def _pool_general_block(record: dict[str, tf.Tensor], windows: _Windows, block: _Block, g: tf.Tensor) -> tf.Tensor:
    """Any pooling geometry: the pairwise rule on the block's (window, reference) rows, broadcast to P."""
    z = record["z"]
    shape = [block.v, block.k, block.tb, block.r, *z.shape[1:]]
    zx = tf.reshape(tf.broadcast_to(block.window(z), shape), [block.p, *z.shape[1:]])
    zr = tf.reshape(tf.broadcast_to(block.reference(z), shape), [block.p, *z.shape[1:]])
    return tf.cast(maxpool_multiplier_tf(windows, zx, zr, tf.cast(g, z.dtype)), g.dtype)


def _tiled_pool_block(record: dict[str, tf.Tensor], block: _Block, g: tf.Tensor) -> tf.Tensor:
    """Side-by-side windows: the max-pool rule from the recorded window maxima and tie shares.

    The same numbers as ``maxpool_multiplier_tf``: with c = max(y_x, y_r) per window, (c - y_r) goes to the
    maxima of the window row and (y_x - c) to those of the reference row, ties split; divided by x - r, the
    (tie-split) gradient at x where x == r.
    """
    z, top, is_max, inv = record["z"], record["top"], record["is_max"], record["inv"]
    out, kernel = is_max.shape[1], is_max.shape[2]
    gg = block.grid(tf.reshape(tf.cast(g, z.dtype), [block.p, *top.shape[1:]]))
    top_x, top_r = block.window(top), block.reference(top)
    cross = tf.maximum(top_x, top_r)
    ax = tf.expand_dims(gg * (cross - top_r) * block.window(inv), -2)
    br = tf.expand_dims(gg * (top_x - cross) * block.reference(inv), -2)
    routed = block.window(is_max) * ax + block.reference(is_max) * br
    fallback = block.window(is_max) * tf.expand_dims(gg * block.window(inv), -2)
    covered = out * kernel
    zc = z[:, :covered]
    delta = tf.reshape(block.window(zc) - block.reference(zc), [block.v, block.k, 1, block.r, out, kernel,
                                                               *z.shape[2:]])
    m = _safe_div(routed, delta, tf.equal(delta, 0.0), fallback)
    return _unpool(m, block, z, g.dtype)


def _unpool(m: tf.Tensor, block: _Block, z: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """(V, K, Tb, R, out, kernel, C) multipliers as (P, L, C), zero after the last window."""
    out, kernel = m.shape[4], m.shape[5]
    m = tf.reshape(m, [block.p, out * kernel, *z.shape[2:]])
    rest = z.shape[1] - out * kernel
    if rest:
        m = tf.pad(m, [[0, 0], [0, rest]] + [[0, 0]] * (len(z.shape) - 2))
    return tf.cast(m, dtype)


@tf.function(jit_compile=True, autograph=False, reduce_retracing=True)
def _relu_pool_multipliers(gg: tf.Tensor, top_x: tf.Tensor, top_r: tf.Tensor, zx: tf.Tensor, zr: tf.Tensor,
                           yx: tf.Tensor, yr: tf.Tensor, dx: tf.Tensor) -> tf.Tensor:
    """The cotangent at the input of a relu followed by a tiled max-pool: gg (the pooled cotangent,
    broadcast over each window) times the per-pair factor, shaped (..., out, kernel, C). XLA fuses it all
    into one pass over memory.

    ``top`` are the window maxima (the pool's output), ``z``/``y`` the relu's input/output by pooling window,
    ``dx`` the relu's derivative at the window row. Where each row attains its maxima (ties split evenly)
    is recomputed here rather than recorded: inside the fused pass it costs no memory traffic. The pool
    multiplier routed / (y_x - y_r) times the Rescale multiplier (y_x - y_r) / (z_x - z_r) is
    numerator / (z_x - z_r) (the relu multiplier is 0 where y_x == y_r but z_x != z_r, and so is the
    numerator; docs/deeplift.md). Where |z_x - z_r| < RESCALE_EPS the two factors are formed separately, with
    the relu derivative at x and the pool's fallback where y_x == y_r, as in the pairwise engine.
    """
    share_x, share_r = _shares(yx, top_x), _shares(yr, top_r)
    cross = tf.expand_dims(tf.maximum(top_x, top_r), -2)
    num = share_x * (cross - tf.expand_dims(top_r, -2)) + share_r * (tf.expand_dims(top_x, -2) - cross)
    delta = zx - zr
    dy = yx - yr
    pool_m = _safe_div(num, dy, tf.equal(dy, 0.0), share_x)
    return gg * _safe_div(num, delta, tf.abs(delta) < C.RESCALE_EPS, pool_m * dx)


def _shares(y: tf.Tensor, top: tf.Tensor) -> tf.Tensor:
    """(..., out, kernel, C) share of each position in its window's maximum: 1 / ties at the maxima, else 0."""
    is_max = tf.cast(tf.equal(y, tf.expand_dims(top, -2)), y.dtype)
    return is_max / tf.reduce_sum(is_max, axis=-2, keepdims=True)


def _relu_pool_block(record: dict[str, tf.Tensor], kernel: int, block: _Block, g: tf.Tensor) -> tf.Tensor:
    """Fused relu -> tiled max-pool (windows of ``kernel``): pooled cotangent g (P, out, C) to the relu's
    input (P, L, C)."""
    top = record["top"]
    out = top.shape[1]
    covered = out * kernel

    def split(t: tf.Tensor, select: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
        v = select(t[:, :covered])
        return tf.reshape(v, [*v.shape[:4], out, kernel, *t.shape[2:]])

    w, rf = block.window, block.reference
    gg = tf.expand_dims(block.grid(tf.reshape(g, [block.p, *top.shape[1:]])), -2)
    m = _relu_pool_multipliers(gg, w(top), rf(top), split(record["z"], w), split(record["z"], rf),
                               split(record["y"], w), split(record["y"], rf), split(record["d"], w))
    return _unpool(m, block, record["z"], g.dtype)


class _Replayer(_Capture):
    """Phase-2 handler of ``deeplift_keras._SHARED``: nonlinear layers with the block's multipliers as their
    gradients (their forward values are never read, so TensorFlow prunes them)."""

    def __init__(self, records: list[dict[str, tf.Tensor]], meta: list[dict[str, Any]], block: _Block):
        self.records, self.meta, self.block = records, meta, block
        self.position = 0

    def _next(self) -> tuple[dict[str, tf.Tensor], dict[str, Any]]:
        self.position += 1
        return self.records[self.position - 1], self.meta[self.position - 1]

    def rescale(self, fn: Callable[[tf.Tensor], tf.Tensor], exact: bool, z: tf.Tensor, op: Any) -> tf.Tensor:
        record, meta = self._next()
        rule = (lambda g: g) if meta["fused"] else (lambda g: _rescale_block(record, self.block, g))
        return _with_gradient(fn, rule)(z)

    def maxpool(self, forward_fn: Callable[[tf.Tensor], tf.Tensor], windows: _Windows, z: tf.Tensor) -> tf.Tensor:
        record, meta = self._next()
        rules = {
            "pool": lambda g: _pool_general_block(record, windows, self.block, g),
            "tiledpool": lambda g: _tiled_pool_block(record, self.block, g),
            "relupool": lambda g: _relu_pool_block(record, windows.spec[0]["kernel"], self.block, g),
        }
        return _with_gradient(forward_fn, rules[meta["kind"]])(z)


class _CropReplayer(_Replayer):
    """The replayer of one span-crop chain layer run on its input positions [s, s + length): the layer's
    record is sliced along axis 1 to the positions of the tensor it is applied to.

    Set ``position`` to the layer's first record. The convolutions of the chain keep positions aligned
    (``deeplift_keras_crop``), so an activation's record starts at s; a max-pool's output-side records
    (window maxima, tie shares) start at s / kernel (s is a multiple of the kernel).
    """

    def __init__(self, records: list[dict[str, tf.Tensor]], meta: list[dict[str, Any]], block: _Block, s: int):
        super().__init__(list(records), meta, block)
        self.offset = s

    def rescale(self, fn: Callable[[tf.Tensor], tf.Tensor], exact: bool, z: tf.Tensor, op: Any) -> tf.Tensor:
        self._slice(z.shape[1], 0, 1)
        return super().rescale(fn, exact, z, op)

    def maxpool(self, forward_fn: Callable[[tf.Tensor], tf.Tensor], windows: _Windows, z: tf.Tensor) -> tf.Tensor:
        a = windows.spec[0]
        self._slice(z.shape[1], a["out"], a["kernel"])
        return super().maxpool(forward_fn, windows, z)

    def _slice(self, length: int, out: int, kernel: int) -> None:
        """Cut the next record to the slice: input-side tensors to ``length`` positions, pooled-side ones
        (window maxima, tie shares) to ``out`` windows."""
        s, q = self.offset, self.offset // kernel
        self.records[self.position] = {
            key: t[:, q: q + out] if key in ("top", "is_max", "inv") else t[:, s: s + length]
            for key, t in self.records[self.position].items()
        }


def _with_gradient(fn: Callable[[tf.Tensor], tf.Tensor], rule: Callable[[tf.Tensor], tf.Tensor]) -> Callable:
    """fn with ``rule`` (cotangent -> cotangent) as its gradient."""

    @tf.custom_gradient
    def op(z: tf.Tensor) -> Any:
        return fn(z), rule

    return op


# --------------------------------------------------------------------------------------------------------
# The traced functions, cached per (model, input shape), and the entry point.
# --------------------------------------------------------------------------------------------------------

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _onehot(block: _Block, targets: tf.Tensor, n_out: int) -> tf.Tensor:
    """(P, n_out) output cotangents: row (v, k, t, r) selects the block's t-th target."""
    onehot = tf.one_hot(targets, n_out, dtype=tf.float32)[None, None, :, None]
    return tf.reshape(tf.broadcast_to(onehot, [block.v, block.k, block.tb, block.r, n_out]), [block.p, n_out])


class _Engine:
    """The traced phases for one model and input shape (forward: dynamic batch; backward: one trace per
    block shape, so that the block's shapes are static and its forward computation is pruned; the cropped
    backward: one trace per block shape and input slice, ``deeplift_keras_crop``)."""

    def __init__(self, model: keras.Model, shape: tuple[int, ...]):
        _, self.n_out = _engine(model, shape)  # validates the model and its output shape
        self.shape = shape
        self.meta: list[dict[str, Any]] = []
        self.chain: Chain | None = find_chain(model) if len(shape) == 2 else None
        self.model = weakref.ref(model)
        self.forward = tf.function(self._forward, autograph=False,
                                   input_signature=[tf.TensorSpec((None, *shape), tf.float32),
                                                    tf.TensorSpec((), tf.int32)])
        self.backward = tf.function(self._backward, autograph=False, reduce_retracing=True)
        self.backward_crop = tf.function(self._backward_crop, autograph=False, reduce_retracing=True)

    def _forward(self, rows: tf.Tensor, n_windows: tf.Tensor) -> tuple[tf.Tensor, list, tf.Tensor]:
        """(scored outputs (B, T), the rules' records, the chain's top activations or an empty tensor)."""
        recorder = _Recorder(n_windows)
        recorder.boundary_op = self.chain.last if self.chain else None
        with _SHARED.use(recorder):
            y = _run(self.model(), rows)
        self.meta = recorder.meta
        top = recorder.boundary if recorder.boundary is not None else tf.zeros((0,))
        return tf.reshape(y, [tf.shape(y)[0], -1]), recorder.records, top

    def _top_cotangent(self, records: list, block: _Block, targets: tf.Tensor, below: Any) -> tf.Tensor:
        """The block's cotangent at the output of op ``below`` (the model's input when None)."""
        u = tf.zeros((block.p, *self.shape), tf.float32)
        replayer = _Replayer(records, self.meta, block)
        replayer.boundary_op = below
        with tf.GradientTape() as tape:
            tape.watch(u)
            with _SHARED.use(replayer):
                y = tf.reshape(_run(self.model(), u), [block.p, -1])
        at = u if below is None else replayer.boundary
        return tape.gradient(y, at, output_gradients=_onehot(block, targets, self.n_out),
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def _backward(self, records: list, n_windows: tf.Tensor, v0: tf.Tensor, targets: tf.Tensor,
                  block_shape: tuple[int, int, int, int]) -> tf.Tensor:
        """(P, L, 4) input multipliers of a block of pair rows."""
        return self._top_cotangent(records, _Block(v0, *block_shape, n_windows), targets, None)

    def _backward_crop(self, records: list, top: tf.Tensor, n_windows: tf.Tensor, v0: tf.Tensor,
                       targets: tf.Tensor, block_shape: tuple[int, int, int, int], plan: tuple[Slices, ...]
                       ) -> tuple[tf.Tensor, tf.Tensor]:
        """((P, b - a, 4) input multipliers on the plan's kept input positions [a, b); (P,) float64 sums of
        the contributions at the chain's top).

        The layers above the chain run on the whole block (their cotangent at the chain's top is exact);
        then each chain layer, top down, is replayed on its slice only, with its records sliced to match
        (``deeplift_keras_crop.crop_plan``).
        """
        block = _Block(v0, *block_shape, n_windows)
        g_top = self._top_cotangent(records, block, targets, self.chain.last)
        g = g_top[:, plan[-1][4]: plan[-1][5]]
        for step, (lo, hi, in_lo, in_hi, _, _) in zip(reversed(self.chain.steps), reversed(plan), strict=True):
            u = tf.zeros((block.p, in_hi - in_lo, step.channels), tf.float32)
            replayer = _CropReplayer(records, self.meta, block, in_lo)
            replayer.position = step.record
            with tf.GradientTape() as tape:
                tape.watch(u)
                with _SHARED.use(replayer):
                    h = _call(step.op, (u,), {})
            g = tape.gradient(h, u, output_gradients=g)[:, lo - in_lo: hi - in_lo]
        delta = tf.cast(block.window(top) - block.reference(top), tf.float64)
        sums = tf.reduce_sum(block.grid(tf.cast(g_top, tf.float64)) * delta, axis=list(range(4, len(delta.shape))))
        return g, tf.reshape(sums, [block.p])

    def plan(self, span: tuple[int, int] | None) -> tuple[Slices, ...] | None:
        """The cropped backward pass's slices for ``span``, or None (the full backward pass)."""
        if span is None or self.chain is None:
            return None
        a, b = int(span[0]), int(span[1])
        if not 0 <= a < b <= self.shape[0]:
            raise InputError(f"DeepLIFT: span {span} outside the input positions [0, {self.shape[0]})")
        return crop_plan(self.chain, (a, b), self.shape[0])


def _shared_engine(model: keras.Model, shape: tuple[int, ...]) -> _Engine:
    entry = _CACHE.setdefault(model, {})
    if shape not in entry:
        entry[shape] = _Engine(model, shape)
    return entry[shape]


def deeplift_shared_keras(
    model: keras.Model, x: np.ndarray, references: np.ndarray, targets: list[int], batch_size: int = 64,
    span: tuple[int, int] | None = None,
) -> np.ndarray:
    """Hypothetical DeepSHAP scores of K windows per variant sharing R references, for T targets (Keras).

    The Keras twin of ``deeplift_torch.deeplift_shared_torch``: the windows and references of about
    ``batch_size / (K R)`` variants go through one forward pass; then, per block of about ``batch_size``
    (window, target, reference) rows, one backward pass forms the multipliers (module docstring). Same rules
    and numbers as ``deeplift_keras.deeplift_multipliers_keras``; summation-to-delta is checked for every row.

    Parameters
    ----------
    model : keras.Model
        Sequential or functional Keras 3 model mapping (B, L, 4) to (B, T) scored outputs (logits).
    x, references, targets, batch_size
        (N, K, L, 4) windows, (N, R, L, 4) references shared by a variant's windows, output columns, and
        (window, target, reference) rows per backward pass: as for ``deeplift_torch.deeplift_shared_torch``.
    span : (int, int), optional
        Input positions [a, b) the caller reads. Where the bottom of the model is a chain of local layers
        (``deeplift_keras_crop``), the backward pass below the chain's top runs on a slice around [a, b)
        only: the scores in [a, b) are the same, the scores outside are 0, and summation-to-delta is checked
        at the chain's top. None (or a model without such a chain): every position.

    Returns
    -------
    np.ndarray
        float32 (N, K, T, L, 4) hypothetical scores, averaged over the references.

    Raises
    ------
    UnsupportedModelError
        Naming a layer or op without a rule.
    """
    x, references = C.check_shared_inputs(x, references, targets, batch_size)
    n, k, length = x.shape[:3]
    t = len(targets)
    engine = _shared_engine(model, tuple(x.shape[2:]))
    for target in targets:
        if not 0 <= int(target) < engine.n_out:
            raise InputError(f"DeepLIFT: target {target} out of range for {engine.n_out} model outputs")
    plan = engine.plan(span)
    crop = None if plan is None else (plan, (int(span[0]), int(span[1])))
    out = np.zeros((n, k, t, length, 4), np.float32)
    masks = []
    for a, b in C.variant_chunks(n, k, references.shape[1], batch_size):
        out[a:b], mask = _shared_chunk(engine, x[a:b], references[a:b], targets, batch_size, crop)
        masks.append(mask.ravel())
    C.warn_violations(np.concatenate(masks), "Keras", "(window, reference, target) triples")
    return out


def _shared_chunk(engine: _Engine, x: np.ndarray, references: np.ndarray, targets: list[int], batch_size: int,
                  crop: tuple[tuple[Slices, ...], tuple[int, int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(hypothetical scores (n, K, T, L, 4), violation mask (n, K, T, R)) of one chunk of variants; with
    ``crop`` = (plan, span [a, b)), multipliers on [a, b) only (zero scores elsewhere; the plan's kept
    positions are a bucketed superset), checked at the chain's top."""
    n, k, length = x.shape[:3]
    r, t = references.shape[1], len(targets)
    rows = np.concatenate([x.reshape(n * k, length, 4), references.reshape(n * r, length, 4)])
    n_windows = tf.constant(n * k, tf.int32)
    y, records, top = engine.forward(tf.constant(rows), n_windows)
    a, b = (0, length) if crop is None else crop[1]
    m = np.empty((n, k, t, r, b - a, 4), np.float32)
    sums = np.empty((n, k, t, r), np.float64)
    for v0, v1, t0, t1 in C.pair_blocks(n, k, t, r, batch_size):
        tsel = tf.constant(np.asarray(targets[t0:t1], np.int32))
        block = (v1 - v0, k, t1 - t0, r)
        if crop is None:
            mb = engine.backward(records, n_windows, tf.constant(v0, tf.int32), tsel, block).numpy()
        else:
            plan = crop[0]
            mb, sb = engine.backward_crop(records, top, n_windows, tf.constant(v0, tf.int32), tsel, block, plan)
            mb = mb.numpy()[:, a - plan[0][0]: b - plan[0][0]]
            sums[v0:v1, :, t0:t1] = sb.numpy().reshape(block)
        m[v0:v1, :, t0:t1] = mb.reshape(*block, b - a, 4)
    f = y.numpy().astype(np.float64)[:, targets]
    f_x, f_r = f[: n * k].reshape(n, k, t), f[n * k:].reshape(n, r, t)
    if crop is None:
        return C.hypothetical_mean(m, references), C.shared_violations(m, x, references, f_x, f_r)
    hyp = np.zeros((n, k, t, length, 4), np.float32)
    hyp[..., a:b, :] = C.hypothetical_mean(m, references[:, :, a:b])
    return hyp, C.delta_violations(sums, f_x, f_r)
