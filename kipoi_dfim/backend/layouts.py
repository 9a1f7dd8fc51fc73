"""Input layouts: convert kipoi-dfim's (N, L, 4) one-hot to the model's own input shape and back.

Kipoi models declare their input shape in the schema without the batch axis, e.g. ``(1000, 4)``,
``(4, 1000)`` or Theano-era ``(1, 4, 1000)``. A layout is written like the schema with ``L`` for the length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kipoi_dfim.errors import InputError

LAYOUTS = ("(L,4)", "(4,L)", "(1,4,L)", "(4,1,L)", "(L,4,1)", "(1,L,4)")

# For each layout: the permutation of (N, L, 4) and where a singleton axis is inserted (after permuting).
_SPEC = {
    "(L,4)": ((0, 1, 2), None),
    "(4,L)": ((0, 2, 1), None),
    "(1,4,L)": ((0, 2, 1), 1),
    "(4,1,L)": ((0, 2, 1), 2),
    "(L,4,1)": ((0, 1, 2), 3),
    "(1,L,4)": ((0, 1, 2), 1),
}


def normalise_layout(layout: str) -> str:
    s = layout.replace(" ", "").upper()
    if not s.startswith("("):
        s = f"({s})"
    if s not in _SPEC:
        raise InputError(f"unknown input layout {layout!r}; supported: {', '.join(LAYOUTS)}")
    return s


def layout_from_shape(shape: Sequence[int | None], seq_len: int | None = None) -> tuple[str, int | None]:
    """Find the layout and length from a schema shape without the batch axis, e.g. (1, 4, 1000).

    The alphabet axis is the axis of size 4; the length axis is the other non-singleton (or unknown) axis.
    """
    shape = tuple(None if (d is None or (isinstance(d, int) and d < 0)) else int(d) for d in shape)
    names = []
    length = None
    four_seen = False
    for d in shape:
        if d == 4 and not four_seen and not (seq_len == 4):
            names.append("4")
            four_seen = True
        elif d == 1 and len(shape) == 3:
            names.append("1")
        else:
            names.append("L")
            length = d
    layout = "(" + ",".join(names) + ")"
    if layout not in _SPEC:
        # e.g. (4, 4) or (L, 4) with L==4; fall back to the first axis as L
        raise InputError(
            f"cannot read a sequence input layout from shape {shape}; supported: {', '.join(LAYOUTS)}"
        )
    if seq_len is not None and length is not None and seq_len != length:
        raise InputError(f"model input length is {length}, but seq_len={seq_len} was given")
    return layout, (length if length is not None else seq_len)


def to_model_layout(x: np.ndarray, layout: str):
    """(N, L, 4) -> the model's layout. Works on numpy arrays and torch tensors (uses .permute/.unsqueeze)."""
    perm, insert = _SPEC[layout]
    if isinstance(x, np.ndarray):
        y = np.transpose(x, perm)
        return y if insert is None else np.expand_dims(y, insert)
    y = x.permute(*perm) if perm != (0, 1, 2) else x
    return y if insert is None else y.unsqueeze(insert)


def from_model_layout(y: np.ndarray, layout: str) -> np.ndarray:
    """The model's layout -> (N, L, 4) (inverse of :func:`to_model_layout`, numpy only)."""
    perm, insert = _SPEC[layout]
    if insert is not None:
        y = np.squeeze(y, axis=insert)
    return np.transpose(y, np.argsort(perm))
