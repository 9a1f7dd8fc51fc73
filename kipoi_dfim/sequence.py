"""One-hot encoding helpers shared by every module.

All arrays in kipoi-dfim are one-hot (N, L, 4) in ACGT order, float32. 'N' (or any other letter) is encoded
as an all-zero column, as kipoiseq's ``one_hot_dna`` does, so that it carries no importance.
"""

from __future__ import annotations

import numpy as np

ALPHABET = "ACGT"
_LOOKUP = np.full(256, -1, dtype=np.int8)
for _i, _c in enumerate(ALPHABET):
    _LOOKUP[ord(_c)] = _i
    _LOOKUP[ord(_c.lower())] = _i
_COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")


def one_hot(seq: str | list[str], dtype=np.float32) -> np.ndarray:
    """Encode one sequence (L, 4) or a list of equal-length sequences (N, L, 4); non-ACGT -> zeros."""
    if isinstance(seq, str):
        idx = _LOOKUP[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]
        out = np.zeros((len(seq), 4), dtype=dtype)
        ok = idx >= 0
        out[np.nonzero(ok)[0], idx[ok]] = 1
        return out
    return np.stack([one_hot(s, dtype=dtype) for s in seq]) if len(seq) else np.zeros((0, 0, 4), dtype)


def decode(x: np.ndarray) -> str | list[str]:
    """Inverse of :func:`one_hot`; all-zero columns decode to 'N'."""
    x = np.asarray(x)
    if x.ndim == 3:
        return [decode(xi) for xi in x]
    letters = np.array(list(ALPHABET + "N"))
    idx = np.where(x.sum(-1) > 0, x.argmax(-1), 4)
    return "".join(letters[idx])


def reverse_complement(x: np.ndarray) -> np.ndarray:
    """Reverse complement of one-hot (..., L, 4) ACGT arrays (reverse positions and the base axis)."""
    return np.ascontiguousarray(x[..., ::-1, ::-1])


def reverse_complement_str(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def background_frequencies(gc: float = 0.46) -> np.ndarray:
    """ACGT background frequencies for a GC fraction: A,T = (1-gc)/2, C,G = gc/2 (the paper uses 0.46)."""
    at = (1.0 - gc) / 2.0
    return np.array([at, gc / 2.0, gc / 2.0, at], dtype=np.float32)
