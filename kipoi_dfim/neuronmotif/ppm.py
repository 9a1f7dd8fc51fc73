"""Position probability matrices of CN CRMs: activation-weighted stacking, Laplace smoothing, information content.

A CRM (cis-regulatory module) of a convolutional neuron is summarised, as in NeuronMotif, by stacking the one-hot
sequences of one demixed cluster *per activation bin*: the bin (0, max] is cut into ``B`` equal bins, each bin's
sequences give a PPM, and the bin PPMs are averaged with the bin's mean activation as weight. Weighting by bin
rather than by sequence keeps the many weakly-activating sequences from drowning the strongly-activating ones.
"""

from __future__ import annotations

import numpy as np

ALPHABET = "ACGT"


def binned_ppm(x: np.ndarray, values: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Activation-bin-weighted PPM (W, 4) of one-hot sequences ``x`` (N, W, 4) with activations ``values`` (N,).

    Only sequences with a positive activation count; empty bins are skipped. Returns a uniform PPM when no
    sequence is positive.
    """
    x = np.asarray(x, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    keep = v > 0
    if not keep.any():
        return np.full(x.shape[1:], 0.25)
    x, v = x[keep], v[keep]
    edges = np.linspace(0.0, v.max(), n_bins + 1)
    b = np.clip(np.searchsorted(edges, v, side="left") - 1, 0, n_bins - 1)
    acc = np.zeros(x.shape[1:])
    wsum = 0.0
    for i in np.unique(b):
        sel = b == i
        p = x[sel].mean(axis=0)
        p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
        w = v[sel].mean()
        acc += w * p
        wsum += w
    return acc / wsum


def laplace(ppm: np.ndarray, n: int, pseudocount: float = 1.0) -> np.ndarray:
    """Laplace-smoothed PPM: (n * ppm + pseudocount) / (n + 4 * pseudocount), n = sequences behind the PPM."""
    ppm = np.asarray(ppm, dtype=np.float64)
    return (n * ppm + pseudocount) / (n + 4.0 * pseudocount)


def information_content(ppm: np.ndarray) -> np.ndarray:
    """Per-position information content in bits, 2 - H (uniform background)."""
    p = np.clip(np.asarray(ppm, dtype=np.float64), 1e-12, 1.0)
    return 2.0 + (p * np.log2(p)).sum(axis=1)


def consensus_onehot(ppm: np.ndarray) -> np.ndarray:
    """The most probable sequence of a PPM as a float32 one-hot (W, 4)."""
    return np.eye(4, dtype=np.float32)[np.asarray(ppm).argmax(axis=1)]


def consensus(ppm: np.ndarray) -> str:
    """The most probable sequence of a PPM as a string."""
    return "".join(ALPHABET[i] for i in np.asarray(ppm).argmax(axis=1))


def decode(x: np.ndarray) -> list[str]:
    """One-hot (N, W, 4) -> strings (all-zero columns are N)."""
    idx = np.where(x.sum(axis=2) > 0, x.argmax(axis=2), 4)
    letters = np.array(list(ALPHABET + "N"))
    return ["".join(row) for row in letters[idx]]


def onehot(seqs: list[str]) -> np.ndarray:
    """Strings of equal length -> float32 one-hot (N, W, 4), ACGT."""
    lut = np.full(256, 4, dtype=np.int64)
    for i, c in enumerate(ALPHABET):
        lut[ord(c)] = i
        lut[ord(c.lower())] = i
    idx = np.stack([lut[np.frombuffer(s.encode(), dtype=np.uint8)] for s in seqs])
    return np.concatenate([np.eye(4, dtype=np.float32), np.zeros((1, 4), np.float32)])[idx]
