"""User-supplied DeepLIFT references / integrated-gradients baselines (``--references FILE``).

Why a file: the built-in choices (``shuffle``, ``gc``, ``uniform``, ``zeros`` in :mod:`kipoi_dfim.attribution`)
cover the common cases, but a user may want the references the model's authors used (e.g. sequences from
the training negatives, or a background of the genome's own composition). This module only reads and checks
them; :func:`kipoi_dfim.attribution.importance` takes the returned array as ``references=`` / ``baseline=``
(an (R, L, 4) array is shared by every sequence and the attributions are averaged over the R references).

Formats
-------
* FASTA (``.fa``, ``.fasta``, ``.fna``, optionally gzipped): one reference per record, each exactly ``seq_len``
  bases of ``ACGTN`` (any case); N becomes an all-zero column, as in :func:`kipoi_dfim.sequence.one_hot`.
* NumPy ``.npy``: (R, L, 4) or (L, 4) ACGT-ordered values in [0, 1] whose per-position sum is at most 1
  (one-hot sequences or expected base frequencies such as a GC background).
"""

from __future__ import annotations

import os

import numpy as np
import pysam

from kipoi_dfim.errors import InputError
from kipoi_dfim.sequence import one_hot

__all__ = ["load_references"]

_FASTA_EXT = (".fa", ".fasta", ".fna", ".fa.gz", ".fasta.gz", ".fna.gz")
_ALLOWED = set("ACGTNacgtn")


def load_references(path: str | os.PathLike, seq_len: int) -> np.ndarray:
    """Read references from a FASTA or .npy file as a float32 array (R, seq_len, 4).

    Parameters
    ----------
    path : str or PathLike
        FASTA (one reference per record) or ``.npy`` file; the format is chosen by the extension.
    seq_len : int
        The model's input length; every reference must have exactly this length (a reference of another
        length would silently shift the attributions, so it is an error rather than a crop or pad).

    Returns
    -------
    ndarray float32 (R, seq_len, 4), R >= 1.

    Raises
    ------
    InputError
        One line naming the file (and the record) and the problem.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputError("references file not found", path=p)
    low = p.lower()
    if low.endswith(".npy"):
        return _load_npy(p, int(seq_len))
    if low.endswith(_FASTA_EXT):
        return _load_fasta(p, int(seq_len))
    raise InputError("references must be a FASTA (.fa/.fasta/.fna[.gz]) or a .npy file", path=p)


def _load_fasta(p: str, seq_len: int) -> np.ndarray:
    seqs = []
    try:
        with pysam.FastxFile(p) as fh:
            for k, rec in enumerate(fh, start=1):
                name, seq = rec.name, rec.sequence or ""
                bad = set(seq) - _ALLOWED
                if bad:
                    raise InputError(f"record {k} ({name}): letters {''.join(sorted(bad))} are not ACGTN", path=p)
                if len(seq) != seq_len:
                    raise InputError(f"record {k} ({name}) has {len(seq)} bases, the model takes {seq_len}", path=p)
                seqs.append(seq)
    except (OSError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"not a readable FASTA file ({e})", path=p) from e
    if not seqs:
        raise InputError("no FASTA records found", path=p)
    return one_hot(seqs).astype(np.float32)


def _load_npy(p: str, seq_len: int) -> np.ndarray:
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"not a readable .npy array ({e})", path=p) from e
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (seq_len, 4) or arr.shape[0] < 1:
        raise InputError(f"array must be (R, {seq_len}, 4) or ({seq_len}, 4), got {np.shape(arr)}", path=p)
    if arr.dtype.kind not in "fiub":
        raise InputError(f"array must be numeric, got dtype {arr.dtype}", path=p)
    a = arr.astype(np.float32)
    if not np.isfinite(a).all() or (a < 0).any() or (a > 1).any():
        raise InputError("values must be finite and in [0, 1] (one-hot or base frequencies)", path=p)
    worst = a.sum(-1).max()
    if worst > 1 + 1e-4:
        r, t = np.unravel_index(int(a.sum(-1).argmax()), a.shape[:2])
        raise InputError(f"reference {r}, position {t}: base values sum to {worst:.4g} > 1", path=p)
    return a
