"""Where the Keras shared-reference backward pass may be cut to the input positions a caller reads.

Why: DFIM reads importance only around the variant (``attribution.read_span``), yet a backward pass forms
multipliers at every position of every layer, and in a sequence CNN most of that work is in the wide lower
layers. Below the first layer that mixes all positions (Flatten, Dense, a global pooling), a chain of
stride-1 convolutions, side-by-side max-pools and pointwise layers is local along the sequence: the input
multiplier at position i depends only on the cotangent inside the chain's receptive field around i. So the
engine (``deeplift_keras_shared``) takes the cotangent at the chain's top (the boundary) from the full
backward pass of the layers above it, and replays only the chain on an input slice [s, e) that contains
[a, b) plus a margin wider than the receptive field: the multipliers inside [a, b) are the full pass's.

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

__all__ = ["Chain", "crop_window", "find_chain"]

_L = keras.layers
_POINTWISE = (_L.Dropout, _L.SpatialDropout1D, _L.Activation, _L.ReLU, _L.LeakyReLU, _L.ELU)
#: Traced slice bounds are multiples of this, so that many different spans reuse a few traces.
BUCKET = 32


@dataclass(frozen=True)
class Chain:
    """The local bottom of a model.

    ``ops`` in call order (flattened out of a nested model), ``last`` the op whose output is the boundary
    tensor, ``pool`` the product of the max-pool kernels (positions per boundary position), ``field`` the
    receptive field of one boundary position, in input positions.
    """

    ops: tuple[Any, ...]
    pool: int
    field: int

    @property
    def last(self) -> Any:
        return self.ops[-1]


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
    pooling = ("maxpool",)
    while chain and _kind(boundary) in pooling and _kind(chain[-1]) in ("activation", "rescale"):
        boundary = chain.pop()
    if not chain or len(getattr(chain[-1], "_outbound_nodes", ())) != 1:
        return None
    pool, field = 1, 1
    for op in chain:
        kernel, factor = _local(op)
        field += (kernel - 1) * pool
        pool *= factor
    return Chain(tuple(chain), pool, field)


def crop_window(chain: Chain, span: tuple[int, int], length: int) -> tuple[int, int] | None:
    """Input slice [s, e) to replay the chain on for multipliers exact on ``span`` = [a, b); None where
    the slice would be the whole input.

    The margin (receptive field + pool product on each side) covers the positions whose cotangent the
    slice gets wrong at its edges (no layer below sees outside it). s is a multiple of the pool product
    (and of about ``BUCKET``), e of ``BUCKET`` (or the length), so the max-pool windows line up with the
    full tensor's and nearby spans share one traced backward pass.
    """
    a, b = span
    margin = chain.field + chain.pool
    step = chain.pool * -(-BUCKET // chain.pool)
    s = max(0, a - margin) // step * step
    e = min(length, -(-(b + margin) // BUCKET) * BUCKET)
    return None if (s, e) == (0, length) else (s, e)
