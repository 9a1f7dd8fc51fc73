"""Where the Keras shared-reference backward pass may be cut to the input positions a caller reads.

Why: DFIM reads importance only around the variant (``attribution.read_span``), yet a backward pass forms
multipliers at every position of every layer, and in a sequence CNN most of that work is in the wide lower
layers. Below the first layer that mixes all positions (Flatten, Dense, a global pooling), a chain of
stride-1 convolutions, side-by-side max-pools and pointwise layers is local along the sequence: the input
multiplier at position i depends only on the cotangent inside the chain's receptive field around i. So the
engine (``deeplift_keras_shared``) takes the cotangent at the chain's top (the boundary) from the full
backward pass of the layers above it, and replays the chain's layers one by one, top down, each on the
slice of its positions whose cotangent reaches [a, b): the multipliers inside [a, b) are the full pass's.

This module only recognises the chain and chooses the slice; it does not run anything. The chain is the
first layers of a Sequential model, or of a functional model whose layers up to the boundary each read only
the previous one's output and feed only the next one (a nested model that is the first layer after the
input is walked into, as the adapters build it). Anything else (Conv2D, branches, layout layers) means no
crop: every position is computed, as without a span.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from kipoi_dfim.backend.deeplift_keras import _kind, _operations

__all__ = ["Chain", "Step", "crop_plan", "find_chain"]

_L = keras.layers
_POINTWISE = (_L.Dropout, _L.SpatialDropout1D, _L.Activation, _L.ReLU, _L.LeakyReLU, _L.ELU)
#: Traced slice bounds are multiples of this, so that many different spans reuse a few traces.
BUCKET = 32


@dataclass(frozen=True)
class Step:
    """One chain layer: how it maps positions ("valid"/"same" convolution, tiled "pool", "point"wise), its
    kernel, its input channels, and the index of its first record in the engine's call-order records."""

    op: Any
    kind: str
    kernel: int
    channels: int
    record: int


@dataclass(frozen=True)
class Chain:
    """The local bottom of a model: its ``steps`` in call order (flattened out of a nested model); the
    boundary tensor is the last step's output."""

    steps: tuple[Step, ...]

    @property
    def last(self) -> Any:
        return self.steps[-1].op


#: One step of a crop plan: the positions (lo, hi) whose input cotangent is kept, the input slice
#: (in_lo, in_hi) the step is replayed on and the output positions (out_lo, out_hi) that replay produces.
Slices = tuple[int, int, int, int, int, int]


def _local(op: Any) -> tuple[int, int] | None:
    """(kernel, pool factor) of a layer that is local along axis 1 of channels-last tensors, else None.

    Convolutions must keep positions aligned (stride and dilation 1, "valid" or "same"), max-pools must
    have side-by-side windows starting at 0 ("valid", pool_size == strides): then position s of a slice
    starting at a multiple of the pool product is position s of the full tensor, at every layer.
    """
    if getattr(op, "data_format", "channels_last") != "channels_last":
        return None
    if type(op) is _L.Conv1D:
        ok = tuple(op.strides) == (1,) and tuple(op.dilation_rate) == (1,) and op.padding in ("valid", "same")
        return (int(op.kernel_size[0]), 1) if ok else None
    if type(op) is _L.MaxPooling1D:
        k = int(op.pool_size[0])
        ok = tuple(op.strides or op.pool_size) == (k,) and op.padding == "valid"
        return (k, k) if ok else None
    if type(op) is _L.BatchNormalization:
        return (1, 1) if op.axis in (-1, 2) else None
    return (1, 1) if isinstance(op, _POINTWISE) else None


def _links(op: Any, below: Any) -> bool:
    """Whether ``op`` is called once, on ``below`` (the previous op's output) only."""
    nodes = getattr(op, "_inbound_nodes", ())
    if len(nodes) != 1:
        return False
    inputs = list(nodes[0].input_tensors)
    return below is None or (len(inputs) == 1 and inputs[0] is below)


def _walk(model: keras.Model) -> tuple[list[Any], Any] | None:
    """(chain ops, boundary op) of a model, walking into a nested model that is its first layer; None when
    the bottom is not a chain or the whole model is one (nothing to cut at)."""
    ops, chain = _operations(model), []
    below = model.inputs[0] if len(getattr(model, "inputs", None) or ()) == 1 else None
    for op in ops:
        if isinstance(op, _L.InputLayer):
            if chain:
                return None
            below = op.output
            continue
        if not _links(op, below):
            return None
        if isinstance(op, keras.Model):
            return _walk(op) if not chain else None
        if _local(op) is None:
            return (chain, op) if chain else None
        if chain and len(getattr(chain[-1], "_outbound_nodes", ())) != 1:
            return None
        chain.append(op)
        below = op.output
    return None


def find_chain(model: keras.Model) -> Chain | None:
    """The local chain at the bottom of ``model``, or None (no crop: every position is computed).

    A chain ending in a nonlinear layer just below a max-pool is shortened by that layer: the engine fuses
    such a relu into the pool's rule, so the pool's input cotangent already carries the relu's multiplier
    and summation-to-delta at that tensor would not hold.
    """
    try:
        found = _walk(model)
    except (AttributeError, ValueError, TypeError):  # a model without node bookkeeping: no crop
        return None
    if found is None:
        return None
    chain, boundary = found
    while chain and _kind(boundary) == "maxpool" and _kind(chain[-1]) in ("activation", "rescale"):
        boundary = chain.pop()
    if not chain or len(getattr(chain[-1], "_outbound_nodes", ())) != 1:
        return None
    steps, record = [], 0
    for op in chain:
        kernel, factor = _local(op)
        kind = "pool" if factor > 1 else "point" if kernel == 1 and type(op) is not _L.Conv1D else op.padding
        steps.append(Step(op, kind, kernel, int(op.input.shape[-1]), record))
        record += _kind(op) in ("activation", "rescale", "maxpool")
    return Chain(tuple(steps))


def _step_slices(step: Step, lo: int, hi: int, n: int) -> tuple[Slices, int]:
    """(the step's slices for kept input positions [lo, hi) of an n-long input, its output length): the
    output positions whose cotangent reaches [lo, hi), and the input slice whose replay yields exactly them
    (a "same" convolution's slice is as long as its output; its edge outputs see zeros, but the gradient of
    an output with respect to an input inside the slice is the full layer's)."""
    k = step.kernel
    if step.kind == "valid":
        out_lo, out_hi = max(0, lo - k + 1), min(n - k + 1, hi)
        return (lo, hi, out_lo, out_hi + k - 1, out_lo, out_hi), n - k + 1
    if step.kind == "same":
        out_lo, out_hi = max(0, lo - k + 1), min(n, hi + k - 1)
        return (lo, hi, out_lo, out_hi, out_lo, out_hi), n
    if step.kind == "pool":
        out_lo, out_hi = lo // k, min(-(-hi // k), n // k)
        return (lo, hi, out_lo * k, max(out_hi * k, hi), out_lo, out_hi), n // k
    return (lo, hi, lo, hi, lo, hi), n


def crop_plan(chain: Chain, span: tuple[int, int], length: int) -> tuple[Slices, ...] | None:
    """Per chain step, bottom up, the slices of the cropped backward pass for input positions ``span``
    (widened to multiples of ``BUCKET``, so nearby spans share one traced pass); None where the widened span
    is the whole input.

    Each step keeps the positions the step below needs and replays on the slice whose outputs are all the
    positions those depend on: with the exact cotangent on those outputs, the kept input cotangent is exact.
    """
    lo, hi = span[0] // BUCKET * BUCKET, min(length, -(-span[1] // BUCKET) * BUCKET)
    if (lo, hi) == (0, length):
        return None
    plan, n = [], length
    for step in chain.steps:
        slices, n = _step_slices(step, lo, hi, n)
        plan.append(slices)
        lo, hi = slices[4], slices[5]
    return tuple(plan)
