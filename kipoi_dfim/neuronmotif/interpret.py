"""NeuronMotif for one conv layer of any model the adapter serves: sample, demix, summarise each CN.

``interpret_neurons(model, layer, neurons)`` runs the whole method for the chosen CNs of conv layer ``layer``
(1-based): layer-1 sampling or seeded genetic optimisation (deeper layers, which first interpret the previous
layer's contributing CNs), backward recursive demixing, CRM PPMs with Laplace smoothing, quality indicators and
motif segments. Matching to JASPAR, syntax trees and files are added by :mod:`kipoi_dfim.neuronmotif.match`,
:mod:`~kipoi_dfim.neuronmotif.syntax` and :mod:`~kipoi_dfim.neuronmotif.output`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from kipoi_dfim.backend import check_seq_len, load_model
from kipoi_dfim.backend.introspect import Substructure, probe
from kipoi_dfim.errors import InputError
from kipoi_dfim.neuronmotif import genetic, layer1
from kipoi_dfim.neuronmotif.demix import demix_auto, quality
from kipoi_dfim.neuronmotif.ppm import binned_ppm, consensus, laplace
from kipoi_dfim.neuronmotif.segment import Segment, segment


@dataclass
class Settings:
    """Knobs of the method (defaults: the paper's, scaled for a CPU)."""

    n_bins: int = 10  # activation bins per PPM
    layer1_samples: int = 20000  # sampled sequences per layer-1 CN (when 4^RF > enumerate_max)
    enumerate_max: int = 4**8
    population: int = 1000  # GA population per CN (deeper layers), split over the islands
    islands: int = 8  # GA sub-populations anchored on the largest contributions
    max_generations: int = 200
    patience: int = 10
    max_sequences: int = 20000  # kept for demixing, subsampled per activation bin
    min_cluster: int = 50
    max_groups: int = 4  # largest P tried
    pseudocount: float = 1.0  # Laplace smoothing
    ic_min: float = 1.0  # segmentation threshold (bits, 3 bp smoothed)
    min_segment: int = 4
    seed: int = 0
    batch_size: int = 256
    seq_len: int | None = None  # input length to load a model whose length is not fixed (the CNs see RF windows)


@dataclass
class CRM:
    """One demixed CRM of a CN."""

    index: int
    n: int
    ppm: np.ndarray  # Laplace-smoothed (RF, 4)
    quality: float
    consensus_value: float
    max_value: float
    segments: list[Segment] = field(default_factory=list)
    matches: list[list[dict]] = field(default_factory=list)  # per segment: JASPAR hits (filled by match)

    @property
    def consensus(self) -> str:
        """Most probable sequence of the CRM."""
        return consensus(self.ppm)


@dataclass
class NeuronResult:
    """Everything NeuronMotif found for one CN."""

    layer: int
    neuron: int
    substructure: Substructure
    n_sequences: int
    max_value: float
    groups: int
    crms: list[CRM]
    stacked_ppm: np.ndarray  # all sequences stacked into one PPM (what demixing improves on)
    seconds: float = 0.0
    tree: dict | None = None
    generations: int = 0  # GA generations run, summed over the islands (0 for layer 1)
    islands: int = 0


class _Context:
    """Probes and finished CNs shared by the CNs of one run (deeper layers reuse the previous layer's CRMs)."""

    def __init__(self, model, settings: Settings):
        self.model = model
        self.settings = settings
        self.probes: dict[int, object] = {}
        self.done: dict[tuple[int, int], NeuronResult] = {}
        self.affine: tuple[np.ndarray, np.ndarray] | None = None

    def probe(self, layer: int):
        """The (cached) NeuronProbe of conv layer ``layer``."""
        if layer not in self.probes:
            self.probes[layer] = probe(self.model, layer, self.settings.batch_size)
        return self.probes[layer]

    def layer1_affine(self):
        """(weights, biases) of all layer-1 CNs, read once per run."""
        if self.affine is None:
            p = self.probe(1)
            self.affine = layer1.affine_weights(p, list(range(p.n_neurons)), self.settings.seed)
        return self.affine


def _rng(settings: Settings, layer: int, neuron: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([settings.seed, layer, neuron]))


def _sample(ctx: _Context, layer: int, neuron: int, stats: dict) -> tuple[np.ndarray, np.ndarray]:
    s = ctx.settings
    rng = _rng(s, layer, neuron)
    if layer == 1:
        w, b = ctx.layer1_affine()
        return layer1.sample_layer1(w[neuron], b[neuron], s.layer1_samples, rng, s.enumerate_max)
    p = ctx.probe(layer)
    prev = ctx.probe(layer - 1)
    weight = p.conv_weight()[:, :, neuron]
    if layer - 1 == 1:
        w1, b1 = ctx.layer1_affine()
        max_act = np.clip(w1.max(axis=2).sum(axis=1) + b1, 0.0, None)
    else:
        max_act = np.array([_interpret(ctx, layer - 1, c).max_value for c in range(prev.n_neurons)])
    contrib = genetic.contribution_table(weight, max_act)
    needed = np.flatnonzero(contrib.sum(axis=0) > 0)
    source = genetic.SeedSource({int(c): [m.ppm for m in _interpret(ctx, layer - 1, int(c)).crms] for c in needed},
                                max_act)
    conv = p.substructure.chain[-1]
    pools_below = [c for c in p.substructure.chain[:-1]]
    pool = pools_below[-1] if pools_below and pools_below[-1].kind == "pool" else None
    islands = genetic.seed_islands(
        s.population, p.receptive_field, contrib, source, conv.jump_in,
        pool.jump_in if pool else conv.jump_in, pool.size if pool else 1, rng, s.islands)
    xs, vs = [], []
    stats["islands"] = len(islands)
    for seeds in islands:
        x, v = genetic.optimise(p, neuron, seeds, rng, shift_max=conv.jump_in, max_generations=s.max_generations,
                                patience=s.patience, stats=stats)
        xs.append(x)
        vs.append(v)
    return genetic.unique(np.concatenate(xs), np.concatenate(vs))


def _interpret(ctx: _Context, layer: int, neuron: int) -> NeuronResult:
    key = (layer, neuron)
    if key in ctx.done:
        return ctx.done[key]
    s = ctx.settings
    t0 = time.perf_counter()
    p = ctx.probe(layer)
    stats = {"generations": 0, "islands": 0}
    x, v = _sample(ctx, layer, neuron, stats)
    x, v = genetic.subsample_by_bin(x, v, s.max_sequences, _rng(s, layer, neuron))
    if len(x) == 0:
        res = NeuronResult(layer, neuron, p.substructure, 0, 0.0, 0, [], np.full((p.receptive_field, 4), 0.25),
                           time.perf_counter() - t0)
        ctx.done[key] = res
        return res
    clusters, ppms, _, groups = demix_auto(p, neuron, x, v, s.n_bins, s.min_cluster, s.max_groups, seed=s.seed)
    crms = []
    for i, (c, raw) in enumerate(zip(clusters, ppms, strict=True)):
        ppm = laplace(raw, len(c), s.pseudocount)
        q, con = quality(p, neuron, raw, v[c])
        crms.append(CRM(i, len(c), ppm, q, con, float(v[c].max()), segment(ppm, s.ic_min, 3, s.min_segment)))
    crms.sort(key=lambda m: -m.n)
    for i, m in enumerate(crms):
        m.index = i
    res = NeuronResult(layer, neuron, p.substructure, len(x), float(v.max()), groups, crms,
                       laplace(binned_ppm(x, v, s.n_bins), len(x), s.pseudocount), time.perf_counter() - t0,
                       generations=stats["generations"], islands=stats["islands"])
    ctx.done[key] = res
    return res


def interpret_neurons(model, layer: int, neurons: list[int] | None = None, settings: Settings | None = None,
                      progress: bool = True, **kw) -> list[NeuronResult]:
    """Run NeuronMotif on CNs of conv layer ``layer`` (1-based) of ``model``.

    Parameters
    ----------
    model
        Anything :func:`kipoi_dfim.load_model` accepts, or its result.
    layer
        Conv layer index, 1 = first convolution.
    neurons
        CN (output channel) indices; default all CNs of the layer.
    settings
        :class:`Settings`; keyword arguments override single fields (e.g. ``population=500``, or ``seq_len=100``
        to load a model whose input length is not fixed).
    progress
        Show a tqdm bar (one step per CN) on stderr.

    Returns
    -------
    list of NeuronResult
        In the order of ``neurons``.
    """
    settings = settings or Settings()
    for k, val in kw.items():
        if not hasattr(settings, k):
            raise InputError(f"unknown NeuronMotif setting {k!r}")
        setattr(settings, k, val)
    n = settings.seq_len
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise InputError(f"--seq-len must be an integer >= 1, got {n!r}")
    if hasattr(model, "framework"):
        m = model
    else:
        m = load_model(model, **({"seq_len": n} if n is not None else {}))
    check_seq_len(m, n)
    ctx = _Context(m, settings)
    p = ctx.probe(layer)
    neurons = list(range(p.n_neurons)) if neurons is None else [int(n) for n in neurons]
    bad = [n for n in neurons if not 0 <= n < p.n_neurons]
    if bad:
        raise InputError(f"--neurons {bad}: layer {layer} has CNs 0..{p.n_neurons - 1}")
    out = []
    for n in tqdm(neurons, desc=f"NeuronMotif layer {layer}", unit="CN", disable=not progress):
        out.append(_interpret(ctx, layer, n))
    return out
