"""``kipoi-dfim neuron-motifs MODEL --layer K [--neurons i,j,...] -o DIR``."""

from __future__ import annotations

import argparse
import sys

from kipoi_dfim.errors import InputError
from kipoi_dfim.motifs import load_motifs
from kipoi_dfim.neuronmotif.interpret import Settings, interpret_neurons
from kipoi_dfim.neuronmotif.match import match_segments
from kipoi_dfim.neuronmotif.output import write_outputs


def parse_neurons(text: str | None) -> list[int] | None:
    """``"0,3,5"`` -> [0, 3, 5]; ``"0-3"`` ranges allowed."""
    if text is None:
        return None
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise InputError(f"--neurons: {part!r} is not an index or a range like 0-3") from None
    return out


def run(args: argparse.Namespace) -> None:
    """Interpret the CNs, match their segments, write the outputs."""
    settings = Settings(population=args.population, max_generations=args.max_generations,
                        layer1_samples=args.layer1_samples, n_bins=args.bins, max_groups=args.max_groups,
                        seed=args.seed, seq_len=getattr(args, "seq_len", None))
    motifs = None if (args.motifs or "").lower() == "none" else load_motifs(args.motifs)
    results = interpret_neurons(args.model, args.layer, parse_neurons(args.neurons), settings,
                                progress=not args.quiet)
    if motifs is not None:
        match_segments(results, motifs)
    paths = write_outputs(results, args.out, model_name=str(args.model))
    print(f"wrote {paths['tsv']} and {paths['html']} ({len(results)} CNs)", file=sys.stderr)
