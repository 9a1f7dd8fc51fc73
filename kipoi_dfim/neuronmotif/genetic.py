"""Deeper layers: seed sequences from the previous layer's CRMs, then optimise them with a genetic algorithm.

NeuronMotif's sampler for a CN of layer K >= 2 (paper, Methods):

- seeds: on a random background, paste samples of previous-layer CRMs at the positions where conv K reads them;
  the (position, previous CN) pairs are drawn in proportion to their maximum contribution, weight x maximum
  activation of the previous CN, and each pair's CRM lands at one of the ``pool`` shifts of the max-pool below
  (here the seeds form islands anchored on the largest contributions, evolved separately: see
  :func:`seed_islands`);
- each generation: gradient-guided resampling (x + alpha * dv/dx, negatives clipped, renormalised, one base drawn
  per position), then a new population of elite 10 % kept, 20 % circular shifts of the elite (10 % each way, by
  1 .. pooled stride - 1 bp) and 70 % single-point crossovers of roulette-wheel parents;
- stop when the population's mean activation has not risen for ``patience`` (10) generations or after
  ``max_generations`` (200); every sequence met with a positive activation is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm


@dataclass
class SeedSource:
    """What seeding needs from layer K-1: CRM PPMs per previous CN and each previous CN's maximum activation."""

    ppms: dict[int, list[np.ndarray]]  # previous CN -> its CRM PPMs (RF_{K-1}, 4)
    max_activation: np.ndarray  # (C_in,)


def contribution_table(weight: np.ndarray, max_activation: np.ndarray) -> np.ndarray:
    """(kernel, C_in) positive contributions weight[t, c] * max_activation[c] (negatives set to 0)."""
    return np.clip(weight * max_activation[None, :], 0.0, None)


def seed_islands(n: int, rf: int, contrib: np.ndarray, source: SeedSource, jump_conv: int, jump_pool: int,
                 pool: int, rng: np.random.Generator, n_islands: int = 8) -> list[np.ndarray]:
    """Seed sequences for up to ``n_islands`` sub-populations, about ``n`` in all.

    Island i is anchored on the i-th largest (position, previous CN) contribution: every seed of it carries a
    sample of that CN's CRMs at that position (at a random one of the ``pool`` shifts), plus ``pool - 1`` more
    pastes drawn in proportion to the contributions, on a uniform random background. Evolving the islands
    separately keeps every mode of a multifaceted CN (a roulette wheel over one population drifts to one mode).

    Parameters
    ----------
    contrib
        :func:`contribution_table` of the target CN, (kernel, C_in).
    jump_conv, jump_pool
        Bases between adjacent input positions of conv K and of the max-pool below it.
    pool
        Size of that max-pool (1 when there is none).
    """
    flat = contrib.ravel()
    if flat.sum() <= 0:
        return [np.eye(4, dtype=np.float32)[rng.integers(0, 4, (n, rf))]]
    prob = flat / flat.sum()
    order = np.argsort(-flat, kind="stable")
    anchors = [int(a) for a in order[:n_islands] if flat[a] > 0]
    sizes = np.diff(np.linspace(0, n, len(anchors) + 1).astype(int))
    out = []
    for anchor, size in zip(anchors, sizes, strict=True):
        x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (size, rf))]
        for i in range(size):
            placed = np.zeros(rf, dtype=bool)
            extra = rng.choice(flat.size, size=pool - 1, p=prob) if pool > 1 else []
            for pick in [anchor, *extra]:
                t, c = divmod(int(pick), contrib.shape[1])
                crms = source.ppms.get(c) or []
                if crms:
                    start = t * jump_conv + int(rng.integers(pool)) * jump_pool
                    _paste(x[i], placed, crms[rng.integers(len(crms))], start, rng)
        out.append(x)
    return out


def _paste(seq: np.ndarray, placed: np.ndarray, ppm: np.ndarray, start: int, rng: np.random.Generator) -> None:
    """Write one sample of ``ppm`` at ``start``, only at its informative positions not already pasted."""
    w = ppm.shape[0]
    ic = 2.0 + (np.clip(ppm, 1e-12, 1) * np.log2(np.clip(ppm, 1e-12, 1))).sum(axis=1)
    inform = ic > 0.5 if (ic > 0.5).any() else np.ones(w, dtype=bool)
    for j in range(w):
        pos = start + j
        if pos >= seq.shape[0] or placed[pos] or not inform[j]:
            continue
        seq[pos] = 0.0
        seq[pos, rng.choice(4, p=ppm[j] / ppm[j].sum())] = 1.0
        placed[pos] = True


def gradient_resample(x: np.ndarray, grad: np.ndarray, rng: np.random.Generator, alpha: float = 1.0) -> np.ndarray:
    """Draw one base per position from max(x + alpha * grad, 0), renormalised (uniform where all are 0)."""
    p = np.clip(x + alpha * grad, 0.0, None).astype(np.float64)
    s = p.sum(axis=2, keepdims=True)
    p = np.where(s > 0, p / np.where(s > 0, s, 1.0), 0.25)
    u = rng.random(p.shape[:2] + (1,))
    idx = np.minimum((u > np.cumsum(p, axis=2)).sum(axis=2), 3)
    return np.eye(4, dtype=np.float32)[idx]


def next_generation(x: np.ndarray, v: np.ndarray, shift_max: int, rng: np.random.Generator) -> np.ndarray:
    """Elite 10 %, circular shifts of the elite 20 % (when ``shift_max`` > 1), roulette-wheel crossovers the rest."""
    n, rf = x.shape[:2]
    n_elite = max(1, n // 10)
    elite = x[np.argsort(-v, kind="stable")[:n_elite]]
    parts = [elite]
    if shift_max > 1:
        for sign in (-1, 1):
            s = rng.integers(1, shift_max, size=n_elite)
            parts.append(np.stack([np.roll(e, sign * int(k), axis=0) for e, k in zip(elite, s, strict=True)]))
    n_cross = n - sum(len(p) for p in parts)
    fit = np.where(v >= 0, v + 1.0, np.exp(np.minimum(v, 0.0)))
    fit = fit / fit.sum()
    pairs = rng.choice(n, size=(n_cross + 1) // 2 * 2, p=fit).reshape(-1, 2)
    cut = rng.integers(1, rf, size=len(pairs))
    kids = np.empty((2 * len(pairs), rf, 4), dtype=np.float32)
    for i, ((a, b), c) in enumerate(zip(pairs, cut, strict=True)):
        kids[2 * i] = np.concatenate([x[a, :c], x[b, c:]])
        kids[2 * i + 1] = np.concatenate([x[b, :c], x[a, c:]])
    parts.append(kids[:n_cross])
    return np.concatenate(parts)


def optimise(probe, neuron: int, seeds: np.ndarray, rng: np.random.Generator, shift_max: int = 1,
             max_generations: int = 200, patience: int = 10, alpha: float = 1.0,
             progress: bool = False, stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run the genetic algorithm from ``seeds``; all distinct sequences met with a positive value and their values.

    ``stats["generations"]`` (when a dict is given) is increased by the number of generations run.
    """
    x = seeds.astype(np.float32)
    v0 = probe.values(x, [neuron])[:, 0]
    archive_x, archive_v = [x[v0 > 0]], [v0[v0 > 0]]
    best_mean, stale = -np.inf, 0
    bar = tqdm(total=max_generations, desc=f"CN {neuron} GA", disable=not progress, leave=False)
    for _ in range(max_generations):
        x = gradient_resample(x, probe.gradient(x, neuron), rng, alpha)
        v = probe.values(x, [neuron])[:, 0]
        archive_x.append(x[v > 0])
        archive_v.append(v[v > 0])
        bar.update(1)
        if stats is not None:
            stats["generations"] = stats.get("generations", 0) + 1
        if v.mean() > best_mean:
            best_mean, stale = float(v.mean()), 0
        else:
            stale += 1
            if stale >= patience:
                break
        x = next_generation(x, v, shift_max, rng)
    bar.close()
    return unique(np.concatenate(archive_x), np.concatenate(archive_v))


def unique(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct sequences (first occurrence kept, order preserved)."""
    if len(x) == 0:
        return x, v
    codes = x.argmax(axis=2).astype(np.uint8)
    _, first = np.unique(codes, axis=0, return_index=True)
    first = np.sort(first)
    return x[first], v[first]


def subsample_by_bin(x: np.ndarray, v: np.ndarray, max_n: int, rng: np.random.Generator,
                     n_bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_n`` sequences, at most max_n / n_bins from each activation bin (keeps the rare top bins)."""
    if len(x) <= max_n:
        return x, v
    edges = np.linspace(0.0, v.max(), n_bins + 1)
    b = np.clip(np.searchsorted(edges, v) - 1, 0, n_bins - 1)
    per = max_n // n_bins
    keep = []
    for i in range(n_bins):
        idx = np.flatnonzero(b == i)
        keep.append(idx if len(idx) <= per else rng.choice(idx, per, replace=False))
    keep = np.sort(np.concatenate(keep))
    return x[keep], v[keep]
