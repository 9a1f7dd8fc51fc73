"""Uniform dinucleotide shuffling (Altschul & Erickson 1985; Kandel et al. 1996).

Why our own and not deeplift's / tangermeme's: those keep, for every letter, the *original* sequence's last
out-edge fixed and permute only the others. That is a valid Eulerian walk, but it only reaches the shuffles
whose "last-exit" arborescence equals the original one, a strict subset of the sequences with the same
dinucleotide counts, so the null is narrower than it should be. Here the last-exit edges are drawn as a
random spanning arborescence with probability proportional to the product of its edge multiplicities (the
distribution Wilson's algorithm gives on the multigraph of transitions; with four letters we enumerate the
16 trees per root and sample one exactly, which is the same distribution and vectorizes), then the other
out-edges of each letter are permuted uniformly. By the BEST theorem every sequence with the same
dinucleotide counts (and hence the same first and last base) is then equally likely.

The ``dinuc-shuf`` package (Rust, uniform by Colbourn's method) was considered: it is a single 0.1.0b1
release, rejects all-zero (N) columns and needs a compiled wheel, so we keep a small numpy implementation and
use ``dinuc-shuf`` only as a cross-check in the tests.

N handling: all-zero columns (N, or any non-ACGT letter in a string) stay where they are, and each maximal run
of ACGT between them is shuffled on its own, keeping its first and last base. All dinucleotide counts,
including those with an N, are therefore kept, and no N moves into a region that had real sequence.

Randomness: sequence ``i`` of a batch draws from its own generator (:func:`sequence_rngs`), so its shuffles
do not depend on the batch it is in.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import numpy as np

from kipoi_dfim.errors import InputError

SeedLike = int | np.integer | np.random.Generator | np.random.SeedSequence | None

_LOOKUP = np.full(256, 4, dtype=np.int8)
for _i, _c in enumerate("ACGT"):
    _LOOKUP[ord(_c)] = _i
    _LOOKUP[ord(_c.lower())] = _i

# Elements per chunk of the vectorized walk: bounds memory (~ 30 bytes per element) whatever the input size.
_CHUNK_ELEMENTS = 1 << 21


def _rooted_trees() -> np.ndarray:
    """All spanning in-trees of the complete graph on 4 letters, per root: array (4, 16, 4) of parents.

    ``trees[r, k, v]`` is the parent of letter ``v`` in tree ``k`` rooted at ``r`` (``trees[r, k, r] == r``).
    Cayley: 4**2 = 16 labelled trees, each with exactly one orientation towards a given root.
    """
    out = []
    for root in range(4):
        others = [v for v in range(4) if v != root]
        trees = []
        for choice in product(*[[p for p in range(4) if p != v] for v in others]):
            parent = np.arange(4)
            parent[others] = choice
            if all(_reaches(parent, v, root) for v in others):
                trees.append(parent)
        out.append(np.array(trees))
    return np.stack(out)


def _reaches(parent: np.ndarray, v: int, root: int) -> bool:
    for _ in range(4):
        if v == root:
            return True
        v = int(parent[v])
    return v == root


_TREES = _rooted_trees()  # (4, 16, 4)


def sequence_rngs(seed: SeedLike | Sequence | np.ndarray, n: int) -> list[np.random.Generator]:
    """One independent generator per sequence, so that a sequence's draws do not depend on its batch.

    Parameters
    ----------
    seed : int, numpy Generator, SeedSequence, None, or a sequence of length ``n`` of those
        An int ``s`` gives sequence ``i`` the stream ``SeedSequence([s, i])`` (the project convention). A
        Generator or SeedSequence is split with ``spawn(n)``. None draws fresh entropy. A sequence/array of
        length ``n`` gives each sequence its own seed (an int ``s_i`` means ``default_rng(s_i)``), which is
        how callers pass per-variant seeds.
    n : int
        Number of sequences.

    Returns
    -------
    list of numpy.random.Generator
    """
    if seed is None:
        return np.random.default_rng().spawn(n)
    if isinstance(seed, np.random.Generator):
        return seed.spawn(n)
    if isinstance(seed, np.random.SeedSequence):
        return [np.random.default_rng(s) for s in seed.spawn(n)]
    if isinstance(seed, int | np.integer):
        if seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed}")
        return [np.random.default_rng(np.random.SeedSequence([int(seed), i])) for i in range(n)]
    seeds = list(seed)
    if len(seeds) != n:
        raise InputError(f"expected one seed per sequence ({n}), got {len(seeds)}")
    out = []
    for s in seeds:
        if isinstance(s, np.random.Generator):
            out.append(s)
        elif isinstance(s, np.random.SeedSequence | int | np.integer):
            out.append(np.random.default_rng(s if not isinstance(s, np.integer) else int(s)))
        else:
            raise InputError(f"per-sequence seeds must be ints, SeedSequences or Generators, got {type(s)}")
    return out


def dinucleotide_shuffle(
    x: np.ndarray | str | Sequence[str],
    n: int = 1,
    seed: SeedLike | Sequence | np.ndarray = 0,
) -> np.ndarray | list[str] | list[list[str]]:
    """Shuffle sequences uniformly among all sequences with the same dinucleotide counts.

    Parameters
    ----------
    x : ndarray (L, 4) or (N, L, 4), str, or list of str
        One-hot ACGT sequences (all-zero columns = N), or strings (non-ACGT letters are kept in place; ACGT
        output is upper case).
    n : int
        Number of shuffles per sequence.
    seed : int, Generator, SeedSequence, None, or one seed per sequence
        See :func:`sequence_rngs`. A single (L, 4) sequence is treated as a batch of one, so
        ``dinucleotide_shuffle(x[i], seed=s_i)`` equals row ``i`` of ``dinucleotide_shuffle(x, seed=[..s_i..])``.

    Returns
    -------
    ndarray (n, L, 4) for (L, 4) input, (N, n, L, 4) for (N, L, 4) input, same dtype as ``x``;
    list of n str for a str; list of lists for a list of str.
    """
    n = int(n)
    if n < 0:
        raise InputError(f"n (number of shuffles) must be >= 0, got {n}")
    if isinstance(x, str):
        return _shuffle_strings([x], n, sequence_rngs(seed, 1))[0]
    if isinstance(x, list | tuple) and (len(x) == 0 or isinstance(x[0], str)):
        return _shuffle_strings(list(x), n, sequence_rngs(seed, len(x)))
    x = np.asarray(x)
    single = x.ndim == 2
    xb = x[None] if single else x
    codes = _codes_from_one_hot(xb)
    rngs = sequence_rngs(seed, codes.shape[0])
    shuffled = shuffle_codes(codes, n, rngs)
    out = (shuffled[..., None] == np.arange(4, dtype=np.int8)).astype(x.dtype)
    return out[0] if single else out


def _codes_from_one_hot(x: np.ndarray) -> np.ndarray:
    """(N, L, 4) one-hot -> (N, L) int8 codes 0..3, 4 for an all-zero column; rejects anything else."""
    if x.ndim != 3 or x.shape[-1] != 4:
        raise InputError(f"expected one-hot (L, 4) or (N, L, 4), got shape {x.shape}")
    col = x.sum(-1)
    if not (np.isin(x, (0, 1)).all() and np.isin(col, (0, 1)).all()):
        raise InputError("dinucleotide_shuffle needs one-hot input: 0/1 values, at most one 1 per position")
    codes = np.where(col > 0, x.argmax(-1), 4).astype(np.int8)
    return codes


def _shuffle_strings(seqs: list[str], n: int, rngs: list[np.random.Generator]) -> list[list[str]]:
    out = []
    for s, rng in zip(seqs, rngs, strict=True):
        raw = np.frombuffer(s.encode("ascii"), dtype=np.uint8)
        codes = _LOOKUP[raw]
        sh = shuffle_codes(codes[None], n, [rng])[0]  # (n, L)
        chars = np.where(sh < 4, np.frombuffer(b"ACGT", dtype=np.uint8)[np.minimum(sh, 3)], raw[None])
        out.append([row.astype(np.uint8).tobytes().decode("ascii") for row in chars])
    return out


def _segments(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal ACGT runs that a shuffle can change (length >= 4): (sequence index, start, length)."""
    valid = codes < 4
    padded = np.zeros((codes.shape[0], codes.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = valid
    d = np.diff(padded, axis=1)
    si, st = np.nonzero(d == 1)
    _, en = np.nonzero(d == -1)  # row-major order pairs starts and ends
    length = en - st
    keep = length >= 4  # runs of <= 3 letters have a single arrangement
    return si[keep], st[keep], length[keep]


def shuffle_codes(codes: np.ndarray, n: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """Shuffle integer-coded sequences (N, L) (0..3 = ACGT, 4 = N fixed) ``n`` times -> (N, n, L) int8.

    Sequence ``i`` uses only ``rngs[i]``: it draws ``n * L`` edge keys and then ``n * S_i`` tree uniforms
    (``S_i`` = number of shuffleable runs), whatever else is in the batch.
    """
    codes = np.asarray(codes, dtype=np.int8)
    N, L = codes.shape
    out = np.broadcast_to(codes[:, None, :], (N, n, L)).copy()
    if n == 0 or L < 4:
        return out
    seg_i, seg_a, seg_m = _segments(codes)
    if len(seg_i) == 0:
        return out
    n_seg = np.bincount(seg_i, minlength=N)
    # Random numbers, drawn per sequence from its own generator.
    keys = np.empty((N, n, L), dtype=np.float64)
    tree_u_per_seq = []
    for i, rng in enumerate(rngs):
        keys[i] = rng.random((n, L))
        tree_u_per_seq.append(rng.random((n_seg[i], n)))
    tree_u = np.concatenate(tree_u_per_seq, axis=0)  # (S, n), segments in the order of _segments

    # One row per (segment, shuffle); process rows in chunks of similar size.
    S = len(seg_i)
    rows_seg = np.repeat(np.arange(S), n)
    rows_k = np.tile(np.arange(n), S)
    order = np.argsort(-seg_m[rows_seg], kind="stable")  # long rows together: less padding per chunk
    start = 0
    while start < len(order):
        m_max = int(seg_m[rows_seg[order[start]]])
        stop = min(len(order), start + max(1, _CHUNK_ELEMENTS // m_max))
        idx = order[start:stop]
        s, k = rows_seg[idx], rows_k[idx]
        i, a, m = seg_i[s], seg_a[s], seg_m[s]
        pos = a[:, None] + np.arange(m_max)[None, :]
        inside = np.arange(m_max)[None, :] < m[:, None]
        pos_c = np.where(inside, pos, 0)
        seg_codes = np.where(inside, codes[i[:, None], pos_c], 4).astype(np.int8)
        seg_keys = keys[i[:, None], k[:, None], pos_c]
        walk = _shuffle_rows(seg_codes, m, seg_keys, tree_u[s, k])
        out[i[:, None], k[:, None], pos_c] = np.where(inside, walk, out[i[:, None], k[:, None], pos_c])
        start = stop
    return out


def _shuffle_rows(seq: np.ndarray, m: np.ndarray, keys: np.ndarray, tree_u: np.ndarray) -> np.ndarray:
    """Core: one uniform shuffle per row of padded ACGT rows ``seq`` (R, M) of true lengths ``m`` (R,).

    ``keys`` (R, M) uniforms order the out-edges; ``tree_u`` (R,) picks the last-exit arborescence.
    """
    R, M = seq.shape
    rows = np.arange(R)
    src = seq[:, :-1].astype(np.int64)  # edge j: seq[j] -> seq[j+1]; padding edges have src 4
    dst = seq[:, 1:].astype(np.int64)
    real = np.arange(M - 1)[None, :] < (m - 1)[:, None]
    src = np.where(real, src, 4)
    dst = np.where(real, dst, 4)
    # Transition multigraph: counts c[r, v, w].
    flat = rows[:, None] * 16 + np.minimum(src, 3) * 4 + np.minimum(dst, 3)
    counts = np.bincount(flat[real], minlength=R * 16).reshape(R, 4, 4).astype(np.float64)
    outdeg = counts.sum(-1)
    root = seq[rows, m - 1].astype(np.int64)
    first = seq[:, 0].astype(np.int64)

    # Arborescence weights: product over non-root letters of the multiplicity of the edge to the parent.
    # A letter absent from the run (no out-edge, not the root) is attached to the root with weight 1.
    present = outdeg > 0
    is_root = np.arange(4)[None, :] == root[:, None]
    w = np.where(present[:, :, None], counts, 0.0)
    absent = ~present & ~is_root
    w[absent[:, :, None] & (np.arange(4)[None, None, :] == root[:, None, None])] = 1.0
    w[is_root] = 1.0  # the root's factor is 1 whatever its "parent" (itself)
    trees = _TREES[root]  # (R, 16, 4)
    factors = np.take_along_axis(w[:, None, :, :], trees[:, :, :, None], axis=3)[..., 0]  # (R, 16, 4)
    weight = factors.prod(-1)
    cum = np.cumsum(weight, axis=1)
    pick = (cum <= (tree_u * cum[:, -1])[:, None]).sum(1)
    pick = np.minimum(pick, 15)
    parent = trees[rows, pick]  # (R, 4)

    # Edge order keys: letter-major, uniform within a letter, the last-exit edge last.
    ekey = np.where(real, 2.0 * src + keys[:, : M - 1], 100.0)
    for v in range(4):
        need = present[:, v] & (root != v)
        hit = (src == v) & (dst == parent[:, v : v + 1]) & need[:, None]
        j = hit.argmax(1)
        has = hit[rows, j]
        ekey[rows[has], j[has]] = 2.0 * v + 1.5
    perm = np.argsort(ekey, axis=1)  # keys are distinct with probability 1: no need for a stable sort
    dst_sorted = np.take_along_axis(dst, perm, axis=1).astype(np.int8).ravel()
    # Pointer to the next unused out-edge of each letter, as flat indices into dst_sorted.
    ptr = np.zeros((R, 4), dtype=np.int64)
    ptr[:, 1:] = np.cumsum(outdeg, axis=1)[:, :-1].astype(np.int64)
    ptr = (ptr + (rows * (M - 1))[:, None]).ravel()
    last = len(dst_sorted) - 1

    walk = np.empty((R, M), dtype=np.int8)
    walk[:, 0] = first
    cur = first
    steps = m - 1
    slot = rows * 4
    for t in range(M - 1):
        k = slot + cur
        p = ptr[k]
        active = t < steps
        cur = np.where(active, dst_sorted[np.minimum(p, last)], cur).astype(np.int64)
        ptr[k] = p + active
        walk[:, t + 1] = cur
    return walk


def variant_seeds(seed: int, variants: Sequence, stream: int) -> np.ndarray:
    """One seed per variant for one purpose (``stream``): ``SeedSequence([seed, record, ALT, stream])``.

    Why: a variant's random draws (its references, its null backgrounds) then depend only on the run's seed and
    the variant's place in the VCF, never on the chunk or batch it is scored in, or on the worker scoring it.
    """
    return np.array(
        [np.random.SeedSequence([int(seed), v.record_index, v.alt_index, int(stream)]).generate_state(1)[0]
         for v in variants], dtype=np.uint64)
