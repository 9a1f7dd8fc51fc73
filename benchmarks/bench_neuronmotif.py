"""Time NeuronMotif on one layer-2 CN of a Basset-sized network, against the bare model calls it makes.

Usage::

    python benchmarks/bench_neuronmotif.py [--neuron 0] [--population 1000] [--seed 0] [--threads 2]

Builds a Basset-shaped PyTorch network with random (seeded) weights (600 bp input; conv 300x19 / maxpool 3,
conv 200x11 / maxpool 4, conv 200x7 / maxpool 4, dense 164), so layer 2 is 200 CNs seeing 51 bp through 300
layer-1 CNs. ``interpret_neurons(model, 2, [neuron])`` runs the whole method: affine read-out and tilted
sampling of the 300 layer-1 CNs (their CRMs seed layer 2), seeding, the island genetic algorithm, backward
demixing with P raised up to 4, CRM PPMs, segments. Reported: wall and CPU time, GA generations, sequences,
CRMs, and the *bare* time of the model calls of the GA alone (one gradient + one forward pass per generation
of the same population on random sequences), so the ratio says what the method adds around the model.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

import kipoi_dfim
from kipoi_dfim.backend.introspect import probe
from kipoi_dfim.neuronmotif import interpret_neurons


def basset(seed: int) -> nn.Module:
    """Basset's conv stack (Kelley et al. 2016) with random weights and a 164-task head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(4, 300, 19), nn.ReLU(), nn.MaxPool1d(3),
        nn.Conv1d(300, 200, 11), nn.ReLU(), nn.MaxPool1d(4),
        nn.Conv1d(200, 200, 7), nn.ReLU(), nn.MaxPool1d(4),
        nn.Flatten(), nn.LazyLinear(164),
    )


def main() -> None:
    """Run the benchmark and print its numbers."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neuron", type=int, default=0)
    ap.add_argument("--population", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    net = basset(a.seed)
    net(torch.zeros(1, 4, 600))  # materialise the lazy head
    model = kipoi_dfim.load_model(net, seq_len=600, layout="(4,L)")
    w0, c0 = time.perf_counter(), time.process_time()
    res = interpret_neurons(model, 2, [a.neuron], population=a.population, seed=a.seed)[0]
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    p = probe(model, 2)
    rng = np.random.default_rng(a.seed)
    size = a.population // max(res.islands, 1)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (size, p.receptive_field))]
    bw, bc = time.perf_counter(), time.process_time()
    for _ in range(res.generations):
        p.gradient(x, a.neuron)
        p.values(x, [a.neuron])
    bare_wall, bare_cpu = time.perf_counter() - bw, time.process_time() - bc
    print(f"Basset-sized layer 2, CN {a.neuron}: RF {res.substructure.receptive_field} bp; "
          f"{res.generations} GA generations over {res.islands} islands of {size}")
    print(f"  NeuronMotif: wall {wall:.1f} s, CPU {cpu:.1f} s (torch threads {a.threads})")
    print(f"  sequences {res.n_sequences}, max value {res.max_value:.3g}, P = {res.groups}, CRMs {len(res.crms)}, "
          f"median quality {np.median([c.quality for c in res.crms]):.3f}")
    print(f"  bare GA model calls (gradient + forward per generation, same shapes): wall {bare_wall:.1f} s, "
          f"CPU {bare_cpu:.1f} s; NeuronMotif / bare CPU = {cpu / max(bare_cpu, 1e-9):.2f}")


if __name__ == "__main__":
    main()
