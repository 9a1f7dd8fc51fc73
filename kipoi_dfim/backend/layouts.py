"""Input layouts: convert kipoi-dfim's (N, L, 4) one-hot to the model's own input shape and back.

Kipoi models declare their input shape in the schema without the batch axis, e.g. ``(1000, 4)``,
``(4, 1000)``, Theano-era ``(1, 4, 1000)``, Basset's ``(4, 600, 1)`` or DeepSEA's ``(4, 1, 1000)``. A layout is
written like the schema with ``L`` for the length: one ``L`` axis, one ``4`` axis and any number of singleton
axes anywhere (``(4,L,1)``, ``(L,1,4)``, ``(1,1,L,4)``, ...). The zoo's dataloaders build these shapes with
kipoiseq's ``alphabet_axis``/``dummy_axis`` arguments, which :func:`layout_from_dataloader` reads.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from kipoi_dfim.errors import InputError

#: Common layouts (any other arrangement of one L, one 4 and singleton axes is accepted too).
LAYOUTS = ("(L,4)", "(4,L)", "(1,4,L)", "(4,1,L)", "(L,4,1)", "(1,L,4)", "(4,L,1)", "(L,1,4)")


@functools.lru_cache(maxsize=256)
def layout_spec(layout: str) -> tuple[tuple[int, int, int], tuple[int, ...]]:
    """(permutation of (N, L, 4), positions of the singleton axes in the model's batched shape).

    The permutation orders L and 4 as they appear in the layout; the singleton axes are then inserted, in
    increasing position order, so that ``expand_dims`` at each position gives the model's shape.
    """
    s = layout.replace(" ", "").upper()
    if not s.startswith("("):
        s = f"({s})"
    names = [a for a in s.strip("()").split(",") if a != ""]
    if sorted(n for n in names if n != "1") != ["4", "L"] or any(n not in ("1", "4", "L") for n in names):
        raise InputError(
            f"unknown input layout {layout!r}: it needs one 'L' axis, one '4' axis and optional '1' axes, "
            f"e.g. {', '.join(LAYOUTS)}"
        )
    core = [n for n in names if n != "1"]
    perm = (0, 1, 2) if core == ["L", "4"] else (0, 2, 1)
    singles = tuple(i + 1 for i, n in enumerate(names) if n == "1")
    return perm, singles


def normalise_layout(layout: str) -> str:
    """Canonical spelling ``(A,B,...)`` of a layout; raises InputError for an invalid one."""
    layout_spec(layout)
    s = layout.replace(" ", "").upper()
    return s if s.startswith("(") else f"({s})"


def layout_from_dataloader(alphabet_axis: int | None, dummy_axis: int | None) -> str:
    """The layout kipoiseq's one-hot transform produces for ``alphabet_axis``/``dummy_axis``.

    kipoiseq starts from ``(L, 4)``, inserts the dummy axis at ``dummy_axis``, then swaps the alphabet axis
    with ``alphabet_axis`` (``OneHot`` in kipoiseq.transforms), so e.g. ``alphabet_axis=0, dummy_axis=2`` is
    Basset's ``(4,L,1)`` and ``alphabet_axis=0, dummy_axis=1`` DeepSEA's ``(4,1,L)``.
    """
    names = ["L", "4"]
    existing = 1
    if dummy_axis is not None:
        names.insert(int(dummy_axis), "1")
        existing = names.index("4")
    if alphabet_axis is not None and int(alphabet_axis) != existing:
        a = int(alphabet_axis)
        if not 0 <= a < len(names):
            raise InputError(f"alphabet_axis={alphabet_axis} does not fit a {len(names)}-axis input")
        names[a], names[existing] = names[existing], names[a]
    return "(" + ",".join(names) + ")"


def layout_from_shape(
    shape: Sequence[int | None], seq_len: int | None = None, alphabet_axis: int | None = None
) -> tuple[str, int | None]:
    """Find the layout and length from a schema shape without the batch axis, e.g. (1, 4, 1000).

    The alphabet axis is ``alphabet_axis`` when given (the dataloader's), else the first axis of size 4;
    the length axis is the remaining axis that is not a singleton (or unknown). Singleton axes may sit
    anywhere.
    """
    shape = tuple(None if (d is None or (isinstance(d, int) and d < 0)) else int(d) for d in shape)
    four = alphabet_axis if alphabet_axis is not None and alphabet_axis < len(shape) else None
    if four is not None and shape[four] not in (4, None):
        four = None
    if four is None:
        fours = [i for i, d in enumerate(shape) if d == 4]
        # with L == 4 (or a (4, 4) input) prefer the last 4 as the alphabet, as kipoi's default (L, 4)
        four = fours[-1] if len(fours) > 1 else (fours[0] if fours else None)
    rest = [i for i in range(len(shape)) if i != four and shape[i] != 1]
    if four is None or len(rest) > 1 or (not rest and seq_len not in (None, 1)) or len(shape) < 2:
        raise InputError(
            f"cannot read a sequence input layout from shape {shape}: need one axis of size 4 (the alphabet), "
            f"one length axis and optional singleton axes, e.g. {', '.join(LAYOUTS)}"
        )
    if not rest:  # (4, 1) with a length-1 sequence
        rest = [next(i for i in range(len(shape)) if i != four)]
    names = ["1"] * len(shape)
    names[four], names[rest[0]] = "4", "L"
    length = shape[rest[0]]
    if seq_len is not None and length is not None and seq_len != length:
        raise InputError(f"the model's input length is fixed at {length}, but --seq-len {seq_len} (Python: "
                         f"seq_len={seq_len}) was given; leave it out or give {length}")
    return "(" + ",".join(names) + ")", (length if length is not None else seq_len)


def alphabet_index(alphabet: str | None) -> list[int] | None:
    """Column order that turns ACGT one-hot into the model's alphabet order (None when it is ACGT).

    ``x[..., idx]`` has column j = base ``alphabet[j]``; e.g. ``AGCT`` (DeepSEA, Beluga) -> [0, 2, 1, 3].
    """
    if alphabet is None:
        return None
    a = "".join(alphabet).upper().replace("U", "T")
    if sorted(a) != sorted("ACGT"):
        raise InputError(f"model alphabet {alphabet!r} is not a permutation of ACGT")
    return None if a == "ACGT" else ["ACGT".index(c) for c in a]


def model_shape(layout: str, seq_len: int) -> tuple[int, ...]:
    """The model's input shape without the batch axis, e.g. ``(4, 600, 1)`` for ``(4,L,1)`` and L=600."""
    names = normalise_layout(layout).strip("()").split(",")
    return tuple(int(seq_len) if n == "L" else int(n) for n in names)


def to_model_layout(x: np.ndarray, layout: str):
    """(N, L, 4) -> the model's layout. Works on numpy arrays and torch tensors (uses .permute/.unsqueeze).

    Torch results are made contiguous: a permuted view reaches the model with channels-last strides, convs
    then return channels-last tensors and a later ``.view`` (DeepSEA/Beluga flatten) fails.
    """
    perm, singles = layout_spec(layout)
    if isinstance(x, np.ndarray):
        y = np.transpose(x, perm)
        for pos in singles:
            y = np.expand_dims(y, pos)
        return y
    y = x.permute(*perm) if perm != (0, 1, 2) else x
    for pos in singles:
        y = y.unsqueeze(pos)
    return y.contiguous()


def from_model_layout(y: np.ndarray, layout: str) -> np.ndarray:
    """The model's layout -> (N, L, 4) (inverse of :func:`to_model_layout`, numpy only)."""
    perm, singles = layout_spec(layout)
    if singles:
        y = np.squeeze(y, axis=singles)
    return np.transpose(y, np.argsort(perm))
