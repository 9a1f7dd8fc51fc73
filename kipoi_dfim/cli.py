"""Command-line front end: ``kipoi-dfim <command> ...``.

Each subcommand's arguments are declared here; the work is done by ``run(args)`` in the module named for it,
imported only when that command runs (so ``kipoi-dfim --help`` does not load TensorFlow or torch).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import warnings

from kipoi_dfim import __version__
from kipoi_dfim.errors import InputError
from kipoi_dfim.output.base import COMMITTED, remove_live_temps
from kipoi_dfim.settings import add_options


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="Kipoi model directory or name, or a .h5/.keras Keras model file")
    p.add_argument("--source", default=None, help="Kipoi source of a model given by name (default: a local dir)")
    p.add_argument("--quiet", action="store_true", help="no progress bar; only errors")


def _motifs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--motifs", default="jaspar", metavar="FILE",
                   help="motifs naming the own/partner motifs: a MEME or JASPAR file, 'jaspar' (default: JASPAR "
                        "CORE vertebrates, offline) or 'none'")  # fmt: skip


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
    p.add_argument("--dask", default=None, metavar="local:N|tcp://HOST:PORT",
                   help="score on Dask: a LocalCluster of N worker processes, or a running scheduler (same output)")
    add_options(p, "score-variants")
    p.set_defaults(module="scoring")

    p = sub.add_parser("interactions", help="FIS between BED features on FASTA sequences")
    _model_args(p)
    p.add_argument("--fasta", required=True, help="one model input per FASTA record")
    p.add_argument("--features", required=True, help="BED of features (name in column 4) on the FASTA records")
    p.add_argument("-o", "--out", required=True, help="output TSV")
    add_options(p, "interactions")
    p.set_defaults(module="interactions")

    p = sub.add_parser("plot", help="draw one variant's interaction figure")
    _model_args(p)
    p.add_argument("--vcf", default=None)
    p.add_argument("--fasta", default=None)
    p.add_argument("--variant", required=True, action="append",
                   help="variant ID (or chrom:pos:ref:alt); repeat for several figures (-o gets the ID added)")
    p.add_argument("--maps", default=None, help="draw from a saved score-variants --maps file")
    p.add_argument("-o", "--out", required=True, help="figure file (.png or .pdf)")
    _motifs_arg(p)
    add_options(p, "plot")
    p.set_defaults(module="plot")

    p = sub.add_parser("report", help="self-contained HTML report of a score-variants run")
    p.add_argument("tsv", help="TSV written by score-variants --tsv")
    p.add_argument("--maps", required=True, help="HDF5 written by score-variants --maps")
    p.add_argument("-o", "--out", required=True, help="report.html")
    p.add_argument("--top", type=int, default=50, help="variants with a figure (default 50)")
    _motifs_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar; print errors only")
    p.set_defaults(module="report")

    p = sub.add_parser("kipoi-spec", help="write a Kipoi model directory that runs DFIM under `kipoi predict`")
    _model_args(p)
    p.add_argument("-o", "--out", required=True, help="directory to create")
    p.add_argument("--example-vcf", default=None, help="example VCF for `kipoi test` (default: generated)")
    p.add_argument("--example-fasta", default=None, help="FASTA of the example VCF")
    add_options(p, "kipoi-spec")
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
    p.add_argument("--seq-len", type=int, default=None, metavar="N",
                   help="input length to load a model whose length is not fixed (e.g. Keras (None, 4)); a "
                        "fixed-length model refuses a different N")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(module="neuronmotif.cli")
    return parser


def _on_signal(signum: int, _frame: object) -> None:
    """SIGTERM/SIGINT: remove temporary files, leave earlier outputs untouched, exit 128 + signal."""
    done = COMMITTED["done"]
    remove_live_temps()
    what = "the outputs were complete and are kept" if done else "no output was written, earlier files are untouched"
    print(f"kipoi-dfim: interrupted by signal {signum}; {what}", file=sys.stderr)
    os._exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    # (OMP_WAIT_POLICY=PASSIVE unless the user set it: kipoi_dfim/__init__.py, before torch is imported)
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = bool(getattr(args, "quiet", False))
    logging.basicConfig(
        level=logging.ERROR if quiet else logging.INFO if args.verbose else logging.WARNING,
        format="kipoi-dfim: %(levelname)s: %(message)s",
    )
    if quiet:  # --quiet: errors only (library warnings included)
        warnings.simplefilter("ignore")
    previous = _install_signal_handlers()
    try:
        module = importlib.import_module(f"kipoi_dfim.{args.module}")
        module.run(args)
    except InputError as e:
        print(f"kipoi-dfim {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permission changed mid-run, ...: name the file, no traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"kipoi-dfim {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _install_signal_handlers() -> dict:
    """Handlers that clean up on SIGTERM/SIGINT (main thread only); returns the previous ones."""
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread (e.g. called from a worker): leave signals alone
            break
    return previous


if __name__ == "__main__":
    sys.exit(main())
