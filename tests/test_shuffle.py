"""Uniform dinucleotide shuffle: exhaustive uniformity, exact counts, seeds, N handling."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from tangermeme.ersatz import dinucleotide_shuffle as tangermeme_shuffle

from kipoi_dfim.errors import InputError
from kipoi_dfim.sequence import decode, one_hot
from kipoi_dfim.shuffle import dinucleotide_shuffle

# Chosen so that the fixed-last-edge algorithm misses most valid shuffles (found 6 of 36 / 12 of 24).
SHORT = ["AACGTTGCAAGT", "GATTACAGATC"]


def enumerate_same_dinucleotides(s: str) -> set[str]:
    """Oracle: every sequence with the dinucleotide counts of ``s`` (hence its first base), by depth-first
    search over the remaining transitions (independent of any Eulerian-walk theory)."""
    counts = collections.Counter(zip(s, s[1:], strict=False))
    found = set()

    def extend(prefix: str) -> None:
        if len(prefix) == len(s):
            found.add(prefix)
            return
        for (a, b), k in list(counts.items()):
            if a == prefix[-1] and k > 0:
                counts[(a, b)] -= 1
                extend(prefix + b)
                counts[(a, b)] += 1

    extend(s[0])
    return found


def dinucleotide_counts(codes: np.ndarray) -> np.ndarray:
    """(…, L) codes 0..4 -> (…, 25) counts of each ordered pair, N (4) included."""
    pair = codes[..., :-1].astype(np.int64) * 5 + codes[..., 1:]
    return np.stack([(pair == k).sum(-1) for k in range(25)], axis=-1)


def codes_of(x: np.ndarray) -> np.ndarray:
    return np.where(x.sum(-1) > 0, x.argmax(-1), 4)


@pytest.mark.parametrize("seq", SHORT)
def test_uniform_over_all_valid_sequences(seq):
    valid = enumerate_same_dinucleotides(seq)
    n_draws = 400 * len(valid)
    draws = collections.Counter(dinucleotide_shuffle(seq, n_draws, seed=1))
    assert set(draws) == valid  # every valid sequence reached, nothing else
    observed = [draws[v] for v in sorted(valid)]
    stat, p = chisquare(observed)
    assert p > 1e-3, (stat, p)


@pytest.mark.parametrize("seq", SHORT)
def test_fixed_last_edge_algorithm_reaches_strict_subset(seq):
    """tangermeme (deeplift's algorithm) keeps the original last out-edges, so it misses valid shuffles."""
    valid = enumerate_same_dinucleotides(seq)
    x = torch.tensor(one_hot(seq).T[None])
    y = tangermeme_shuffle(x, n=3000, random_state=0)[0].permute(0, 2, 1).numpy()
    reached = set(decode(y))
    assert reached < valid
    assert len(reached) <= len(valid) // 2
    ours = set(dinucleotide_shuffle(seq, 3000, seed=0))
    assert ours == valid


def test_counts_and_ends_kept_on_random_1kb():
    rng = np.random.default_rng(5)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (20, 1000))]
    y = dinucleotide_shuffle(x, n=5, seed=3)
    assert y.shape == (20, 5, 1000, 4) and y.dtype == np.float32
    c, cy = codes_of(x), codes_of(y)
    np.testing.assert_array_equal(dinucleotide_counts(cy), np.repeat(dinucleotide_counts(c)[:, None], 5, 1))
    np.testing.assert_array_equal(cy[..., 0], np.repeat(c[:, None, 0], 5, 1))
    np.testing.assert_array_equal(cy[..., -1], np.repeat(c[:, None, -1], 5, 1))
    # shuffles differ from the input and from each other
    assert (cy != c[:, None]).mean() > 0.5
    assert (cy[:, 0] != cy[:, 1]).mean() > 0.5


def test_seed_reproducible_and_batch_independent():
    rng = np.random.default_rng(0)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (6, 200))]
    a = dinucleotide_shuffle(x, n=3, seed=11)
    np.testing.assert_array_equal(a, dinucleotide_shuffle(x, n=3, seed=11))
    assert not np.array_equal(a, dinucleotide_shuffle(x, n=3, seed=12))
    # sequence i uses SeedSequence([seed, i]) whatever the batch: a sub-batch with explicit seeds matches
    seeds = [np.random.SeedSequence([11, i]) for i in (4, 2)]
    np.testing.assert_array_equal(dinucleotide_shuffle(x[[4, 2]], n=3, seed=seeds), a[[4, 2]])
    # single sequence == batch of one with the same seed
    per_seq = [123, 456, 7, 8, 9, 10]
    b = dinucleotide_shuffle(x, n=2, seed=per_seq)
    np.testing.assert_array_equal(dinucleotide_shuffle(x[1], n=2, seed=[456]), b[1])
    np.testing.assert_array_equal(dinucleotide_shuffle(x[1], n=2, seed=[np.random.default_rng(456)]), b[1])
    # a Generator seed is reproducible too
    g1 = dinucleotide_shuffle(x, n=2, seed=np.random.default_rng(5))
    g2 = dinucleotide_shuffle(x, n=2, seed=np.random.default_rng(5))
    np.testing.assert_array_equal(g1, g2)


def test_n_positions_fixed_and_runs_shuffled_separately():
    seq = "ACGTTGCAAGTC" + "NN" + "GATTACAGATC" + "N" + "AC" + "N" + "TTGCA"
    out = dinucleotide_shuffle(seq, 2000, seed=2)
    n_pos = [i for i, ch in enumerate(seq) if ch == "N"]
    for s in out:
        assert [i for i, ch in enumerate(s) if ch == "N"] == n_pos
        assert s[12:14] == "NN" and s[25:29] == "NACN"  # a 2-letter run cannot change
    # each run is an independent uniform shuffle of itself
    first = collections.Counter(s[:12] for s in out)
    assert set(first) == enumerate_same_dinucleotides(seq[:12])
    second = collections.Counter(s[14:25] for s in out)
    assert set(second) == enumerate_same_dinucleotides(seq[14:25])
    assert chisquare(list(second.values())).pvalue > 1e-3
    # one-hot path: N columns stay all-zero at the same positions, all 25 pair counts (N included) kept
    x = one_hot(seq)
    y = dinucleotide_shuffle(x, n=50, seed=0)
    assert y.shape == (50, len(seq), 4)
    np.testing.assert_array_equal(y.sum(-1), np.repeat(x.sum(-1)[None], 50, 0))
    np.testing.assert_array_equal(
        dinucleotide_counts(codes_of(y)), np.repeat(dinucleotide_counts(codes_of(x))[None], 50, 0)
    )
    # strings and one-hot go through the same code with the same per-sequence stream
    assert decode(y[0]) == dinucleotide_shuffle(seq, 50, seed=0)[0]


def test_string_lists_and_lowercase():
    out = dinucleotide_shuffle(["acgtacgatcga", "GATTACAGATC"], n=3, seed=0)
    assert len(out) == 2 and all(len(o) == 3 for o in out)
    assert all(s in enumerate_same_dinucleotides("ACGTACGATCGA") for s in out[0])
    assert out[1] == dinucleotide_shuffle(["GATTACAGATC"], n=3, seed=[np.random.SeedSequence([0, 1])])[0]


def test_rejects_non_one_hot():
    with pytest.raises(InputError):
        dinucleotide_shuffle(np.full((10, 4), 0.25, dtype=np.float32))
    with pytest.raises(InputError):
        dinucleotide_shuffle(np.zeros((10, 5)))
