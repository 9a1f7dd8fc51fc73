"""Backward recursive demixing of a CN's sequences into CRMs through the max-pools of its substructure.

A max-pool lets a CN fire for the same pattern at ``pool`` shifts, and a CN may combine several patterns (P motif
groups): its sequences are a mixture. NeuronMotif separates them from the deepest max-pool to the shallowest: the
feature maps entering that max-pool are flattened, scaled to unit length, and clustered by activation-weighted
k-means with
k = pool size x P; each cluster is split again at the next shallower max-pool, until no max-pool is left or a
cluster has at most ``min_cluster`` (50) sequences. P starts at 1 and is raised while the CRMs' quality indicator
(value of the CRM's most probable sequence / maximum value in the cluster) is not significantly above 0.95
(one-sided t test, p < 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from kipoi_dfim.neuronmotif.ppm import binned_ppm, consensus_onehot


@dataclass
class Cluster:
    """Indices of one demixed group of sequences (a CRM before its PPM is built)."""

    index: np.ndarray


def pool_features(probe, x: np.ndarray, j: int, max_dim: int = 64, seed: int = 0, chunk: int = 2048) -> np.ndarray:
    """Flattened maps entering max-pool ``j``, rows scaled to unit length, reduced by PCA above ``max_dim`` columns.

    Unit rows: a CRM is *which* pooled positions and channels fire, not how strongly (k-means on raw maps splits
    one pattern into weak and strong copies before it separates two patterns). The PCA (e.g. 33 positions x 300
    channels in Basset's layer 2) is fitted once on at most 5,000 rows and applied in chunks, so memory stays
    bounded; all sequences are featurised once and reused for every P and every recursion level.
    """
    def feats(rows):
        f = probe.pool_inputs(x[rows], j).reshape(len(rows), -1).astype(np.float32)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    n = len(x)
    first = feats(np.arange(min(n, chunk)))
    if first.shape[1] <= max_dim:
        return np.concatenate([first] + [feats(np.arange(i, min(n, i + chunk))) for i in range(chunk, n, chunk)])
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, size=min(n, 5000), replace=False))
    pca = PCA(n_components=max_dim, svd_solver="randomized", random_state=seed).fit(feats(fit_rows))
    return np.concatenate([pca.transform(feats(np.arange(i, min(n, i + chunk)))) for i in range(0, n, chunk)])


def demix(probe, x: np.ndarray, v: np.ndarray, n_groups: int = 1, min_cluster: int = 50,
          seed: int = 0, features: dict | None = None) -> list[np.ndarray]:
    """Index arrays of the demixed clusters of sequences ``x`` (N, RF, 4) with values ``v`` (N,).

    ``features`` caches :func:`pool_features` per max-pool index across calls (pass the same dict for every P).
    """
    pools = probe.substructure.pools
    features = {} if features is None else features
    out: list[np.ndarray] = []
    _split(probe, x, v, np.arange(len(x)), len(pools) - 1, n_groups, min_cluster, seed, out, features)
    return out


def _split(probe, x, v, idx, j, n_groups, min_cluster, seed, out, features) -> None:
    pools = probe.substructure.pools
    k = pools[j].size * n_groups if j >= 0 else 1
    if j < 0 or len(idx) <= min_cluster or len(idx) < 2 * k:
        out.append(idx)
        return
    if j not in features:
        features[j] = pool_features(probe, x, j, seed=seed)
    km = KMeans(n_clusters=k, n_init=3, random_state=seed)
    labels = km.fit_predict(features[j][idx], sample_weight=np.clip(v[idx], 1e-6, None))
    for c in range(k):
        sub = idx[labels == c]
        if len(sub):
            _split(probe, x, v, sub, j - 1, n_groups, min_cluster, seed, out, features)


def quality(probe, neuron: int, ppm: np.ndarray, v_cluster: np.ndarray) -> tuple[float, float]:
    """(quality indicator, value of the CRM's most probable sequence)."""
    con = probe.values(consensus_onehot(ppm)[None], [neuron])[0, 0]
    return float(con / max(float(v_cluster.max()), 1e-12)), float(con)


def quality_ok(qualities: list[float], target: float = 0.95, alpha: float = 0.1) -> bool:
    """True when the qualities are significantly above ``target`` (one-sided t test; mean > target if n < 3)."""
    q = np.asarray(qualities, dtype=float)
    if len(q) == 0:
        return True
    if len(q) < 3 or np.allclose(q, q[0]):
        return bool(q.mean() > target)
    return bool(stats.ttest_1samp(q, target, alternative="greater").pvalue < alpha)


def demix_auto(probe, neuron: int, x: np.ndarray, v: np.ndarray, n_bins: int = 10, min_cluster: int = 50,
               max_groups: int = 4, n_top: int = 10, min_size: int = 5,
               seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], list[float], int]:
    """Demix with P = 1, 2, ... until the top CRMs' quality passes :func:`quality_ok` (or P = ``max_groups``).

    Returns the cluster indices, their PPMs, their qualities and the P used. The "top" CRMs are the ``n_top``
    largest with at least ``min_size`` sequences.
    """
    if not probe.substructure.pools:
        max_groups = 1
    features: dict = {}
    for p in range(1, max_groups + 1):
        clusters = [c for c in demix(probe, x, v, p, min_cluster, seed, features) if len(c) >= min_size]
        clusters = clusters or [np.arange(len(x))]
        ppms = [binned_ppm(x[c], v[c], n_bins) for c in clusters]
        quals = [quality(probe, neuron, ppm, v[c])[0] for ppm, c in zip(ppms, clusters, strict=True)]
        top = np.argsort([-len(c) for c in clusters], kind="stable")[:n_top]
        if quality_ok([quals[i] for i in top]):
            break
    return clusters, ppms, quals, p
