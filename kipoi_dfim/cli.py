"""Command-line front end: ``kipoi-dfim <command> ...``.

Each subcommand's arguments are declared here; the work is done by ``run(args)`` in the module named for it,
imported only when that command runs (so ``kipoi-dfim --help`` does not load TensorFlow or torch).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from kipoi_dfim import __version__


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="Kipoi model directory or name, or a .h5/.keras/.pt model file")
    p.add_argument("--source", default=None, help="Kipoi source of a model given by name (default: a local dir)")
    p.add_argument(
        "--target",
        action="append",
        default=None,
        help="model output to score, by index or label; repeat for several (default: all)",
    )
    p.add_argument(
        "--output",
        choices=["logit", "raw"],
        default="logit",
        help="score the pre-sigmoid/softmax logit (default, as the paper prescribes) or the raw output",
    )


def _method_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--method",
        default=default,
        choices=["grad_input", "deeplift", "integrated_gradients", "ism"],
        help=f"importance method (default: {default})",
    )
    p.add_argument("--n-refs", type=int, default=10, help="DeepLIFT references (dinucleotide shuffles) per sequence")
    p.add_argument("--baseline", default="zeros", choices=["zeros", "uniform", "gc", "shuffle"],
                   help="integrated gradients baseline (default zeros; shuffle uses --n-refs shuffles)")
    p.add_argument("--steps", type=int, default=50, help="integrated gradients steps (default 50)")
    p.add_argument("--null-shuffles", type=int, default=0, help="dinucleotide-shuffled backgrounds for the null")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per model call")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kipoi-dfim",
        description="Deep Feature Interaction Maps for variants in Kipoi sequence models.",
    )
    parser.add_argument("--version", action="version", version=f"kipoi-dfim {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("score-variants", help="score the interactions of each VCF variant (the main job)")
    _model_args(p)
    p.add_argument("--vcf", required=True, help="input VCF or bgzipped VCF")
    p.add_argument("--fasta", required=True, help="reference FASTA (the .fai is built if missing)")
    p.add_argument("-o", "--out", required=True, help="annotated VCF (.vcf or .vcf.gz, bgzipped + tabix)")
    p.add_argument("--tsv", default=None, help="also write one row per (variant, ALT, target)")
    p.add_argument("--maps", default=None, help="also write the FIS tracks to this HDF5 file")
    p.add_argument("--window", type=int, default=15, help="targets are the bases within +-WINDOW bp (default 15)")
    p.add_argument("--all-alts", action="store_true", help="add maxFIS over all three alternative bases")
    p.add_argument("--rc", action="store_true", help="average ISM scores with the reverse complement")
    p.add_argument("--chunk-size", type=int, default=256, help="variants read and scored per chunk")
    _method_args(p, "deeplift")
    p.set_defaults(module="scoring")

    p = sub.add_parser("interactions", help="FIS between BED features on FASTA sequences")
    _model_args(p)
    p.add_argument("--fasta", required=True, help="one model input per FASTA record")
    p.add_argument("--features", required=True, help="BED of features (name in column 4) on the FASTA records")
    p.add_argument("-o", "--out", required=True, help="output TSV")
    p.add_argument("--gc", type=float, default=0.46, help="GC fraction of the background fill")
    p.add_argument(
        "--fill", choices=["background", "zero"], default="background", help="how a source feature is mutated"
    )
    _method_args(p, "deeplift")
    p.set_defaults(module="interactions")

    p = sub.add_parser("plot", help="draw one variant's interaction figure")
    _model_args(p)
    p.add_argument("--vcf", default=None)
    p.add_argument("--fasta", default=None)
    p.add_argument("--variant", required=True, help="variant ID (or chrom:pos:ref:alt)")
    p.add_argument("--maps", default=None, help="draw from a saved score-variants --maps file")
    p.add_argument("-o", "--out", required=True, help="figure file (.png or .pdf)")
    p.add_argument("--window", type=int, default=15)
    _method_args(p, "deeplift")
    p.set_defaults(module="plot")

    p = sub.add_parser("report", help="self-contained HTML report of a score-variants run")
    p.add_argument("tsv", help="TSV written by score-variants --tsv")
    p.add_argument("--maps", required=True, help="HDF5 written by score-variants --maps")
    p.add_argument("-o", "--out", required=True, help="report.html")
    p.add_argument("--top", type=int, default=50, help="variants with a figure (default 50)")
    p.set_defaults(module="report")

    p = sub.add_parser("kipoi-spec", help="write a Kipoi model directory that runs DFIM under `kipoi predict`")
    _model_args(p)
    p.add_argument("-o", "--out", required=True, help="directory to create")
    p.add_argument("--window", type=int, default=15)
    p.add_argument("--method", default="deeplift", choices=["grad_input", "deeplift", "integrated_gradients"])
    p.add_argument("--n-refs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="sequences per model call")
    p.add_argument("--example-vcf", default=None, help="example VCF for `kipoi test` (default: generated)")
    p.add_argument("--example-fasta", default=None, help="FASTA of the example VCF")
    p.set_defaults(module="kipoi_spec")

    # NeuronMotif (issue 17): options only here; the work is in kipoi_dfim/neuronmotif/cli.py
    p = sub.add_parser("neuron-motifs", help="NeuronMotif: demix the CNs of a conv layer into motifs and grammars")
    p.add_argument("model", help="Kipoi model directory, or a .h5/.keras/.pt model file")
    p.add_argument("--layer", type=int, required=True, help="conv layer to interpret (1 = first convolution)")
    p.add_argument("--neurons", default=None, help="CN indices, e.g. 0,3,5 or 0-7 (default: all CNs of the layer)")
    p.add_argument("-o", "--out", required=True, help="output directory (MEME files, TSV, HTML)")
    p.add_argument("--motifs", default=None, help="MEME/JASPAR file to match segments against (default: JASPAR "
                   "CORE vertebrates bundled with pyjaspar; 'none' skips matching)")
    p.add_argument("--population", type=int, default=1000, help="GA population per CN (default 1000)")
    p.add_argument("--max-generations", type=int, default=200, help="GA generations at most (default 200)")
    p.add_argument("--layer1-samples", type=int, default=20000, help="sampled sequences per layer-1 CN")
    p.add_argument("--bins", type=int, default=10, help="activation bins per PPM (default 10)")
    p.add_argument("--max-groups", type=int, default=4, help="largest motif-group count P (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(module="neuronmotif.cli")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="kipoi-dfim: %(levelname)s: %(message)s"
    )
    from kipoi_dfim.errors import InputError

    try:
        module = importlib.import_module(f"kipoi_dfim.{args.module}")
        module.run(args)
    except InputError as e:
        print(f"kipoi-dfim {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
