"""Layer 1: sample receptive-field sequences of a first-layer CN (enumerate all when there are few).

A first-layer CN's value before its nonlinearity is affine in the one-hot input, v(x) = sum_j w[j, x_j] + b, so
its weights are the gradient at any input. When 4^RF is small every sequence is enumerated, as in the paper.
Otherwise sequences are drawn from exponentially tilted distributions p_beta(x) ~ exp(beta v(x)) for a ladder of
temperatures (beta = 0 is uniform sampling). Conditioned on a narrow activation bin, tilting by exp(beta v) is
(almost) constant, so each bin's PPM is the same as under uniform sampling, while high bins, which uniform sampling
never reaches for long filters, are populated. Values are computed from the weights and bias, which are read
through the model's gradients and checked against its forward pass (:func:`affine_weights`).
"""

from __future__ import annotations

import numpy as np

from kipoi_dfim.errors import InputError


def affine_weights(probe, neurons: list[int], check_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Weights (n, RF, 4) and biases (n,) of first-layer CNs, read through gradients and checked on random input.

    Raises
    ------
    InputError
        If the CN values are not affine in the input (then the layer is not a first conv layer).
    """
    rf = probe.receptive_field
    base = np.full((1, rf, 4), 0.25, np.float32)
    w = np.concatenate([probe.gradient(base, n) for n in neurons]).astype(np.float64)
    b = probe.values(base, neurons)[0].astype(np.float64) - 0.25 * w.sum(axis=(1, 2))
    rng = np.random.default_rng(check_seed)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (8, rf))]
    got = probe.values(x, neurons)
    want = np.einsum("nwk,mwk->nm", x, w) + b
    if not np.allclose(got, want, rtol=1e-3, atol=1e-3 * (1 + np.abs(want).max())):
        raise InputError("layer 1 CN values are not affine in the input: is the first layer a convolution?")
    return w, b


def enumerate_all(rf: int) -> np.ndarray:
    """All 4^rf one-hot sequences (4^rf, rf, 4), lexicographic in ACGT."""
    idx = (np.arange(4**rf)[:, None] // (4 ** np.arange(rf - 1, -1, -1))[None, :]) % 4
    return np.eye(4, dtype=np.float32)[idx]


def tilted_samples(w: np.ndarray, n: int, rng: np.random.Generator, n_temps: int = 10) -> np.ndarray:
    """``n`` one-hot sequences from exp(beta * w)-tilted per-position distributions over a temperature ladder."""
    spread = float(np.mean(w.max(axis=1) - w.min(axis=1))) or 1.0
    betas = np.linspace(0.0, 6.0 / spread, n_temps)
    per = np.diff(np.linspace(0, n, n_temps + 1).astype(int))
    out = []
    for beta, m in zip(betas, per, strict=True):
        logits = beta * w
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        u = rng.random((m, w.shape[0], 1))
        idx = (u > np.cumsum(p, axis=1)[None, :, :]).sum(axis=2)
        out.append(np.eye(4, dtype=np.float32)[np.minimum(idx, 3)])
    return np.concatenate(out)


def sample_layer1(w: np.ndarray, b: float, n_samples: int, rng: np.random.Generator,
                  enumerate_max: int = 4**8) -> tuple[np.ndarray, np.ndarray]:
    """Sequences (M, RF, 4) and their positive values (M,) for one first-layer CN with weights ``w`` (RF, 4)."""
    rf = w.shape[0]
    x = enumerate_all(rf) if 4**rf <= enumerate_max else tilted_samples(w, n_samples, rng)
    v = np.einsum("nwk,wk->n", x, w) + b
    keep = v > 0
    return x[keep], v[keep].astype(np.float32)
