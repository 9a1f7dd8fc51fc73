"""One settings object for every command: everything that decides the numbers, validated once.

:class:`Settings` is built once -- from Python keywords (``Settings(method="grad_input", ...)``) or from the
command line (:func:`add_options` declares a command's flags, :meth:`Settings.from_args` reads them) -- and
passed whole to the scoring, FIS and null code. Nothing downstream re-reads ``argparse`` results or copies
option lists, so an option a command lists always reaches the code that uses it.

Why validation lives here: a bad number (``--batch-size 0``, ``--null-shuffles -1``) must fail before a model
is loaded or an output is touched, with a message naming the option the user typed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kipoi_dfim.attribution import METHODS
from kipoi_dfim.errors import InputError

NULL_KINDS = ("none", "per-variant", "pooled")
REFERENCE_KINDS = ("shuffle", "gc", "uniform", "zeros")
OUTPUTS = ("logit", "raw")
FILLS = ("background", "zero")
PVALUES = ("tail", "empirical", "gaussian")


@dataclass(frozen=True)
class Settings:
    """What decides the numbers of a run (written into every output for provenance).

    Parameters
    ----------
    method : str
        Importance method, a key of :data:`kipoi_dfim.attribution.METHODS`.
    references : str or None
        References (DeepLIFT) / baselines (integrated gradients): ``shuffle`` (``n_refs`` dinucleotide shuffles
        of the reference window), ``gc`` (expected one-hot of a GC-``gc`` background), ``uniform`` (0.25),
        ``zeros``, or a FASTA / ``.npy`` file of references. None: the method's default (registry).
    gc : float
        GC fraction of the ``gc`` references and of the background fill of motifs (0.46 in the paper).
    n_refs, steps : int
        Shuffled references per window; integrated-gradients steps.
    window : int
        Targets are the bases within +-``window`` bp of the variant (15 in the paper).
    null : str or None
        ``none``, ``per-variant`` (``null_shuffles`` shuffled backgrounds per variant, as in the paper) or
        ``pooled`` (``null_size`` backgrounds for the whole file). None: ``per-variant`` when
        ``null_shuffles > 0``, else ``none``.
    null_shuffles, null_size : int
        K backgrounds per variant; M backgrounds per file (None: a sixth of the file's scored variants,
        within [100, 1000]).
    null_max_effect : float or None
        TAU: keep only null backgrounds on which the substitution changes every scored output by less than TAU
        (|f(ALT) - f(REF)|, in the scored units, logit by default); the others are replaced by further shuffles
        (:func:`kipoi_dfim.null.effect_bounded_backgrounds`; docs/statistics.md section 3). None: every shuffle.
    pvalue : str
        The test of a score against its null: ``tail`` (empirical p where the null resolves it, a generalized
        Pareto tail fitted to the null beyond; docs/statistics.md), ``empirical`` or ``gaussian`` (the paper's
        normal fit).
    seed : int
        Seed of every random draw; a variant's draws depend only on (seed, record, ALT).
    batch_size, chunk_size : int
        Sequences per model call; VCF records per chunk. Neither changes the numbers.
    rc, all_alts : bool
        Average ISM scores with the reverse complement; add maxFIS over the three alternative bases (SNVs only:
        indels and MNVs have no three alternative bases and get NaN).
    output : str
        ``logit`` (scores the pre-sigmoid/softmax value, as the paper prescribes) or ``raw``.
    fill : str
        How a source motif is destroyed (``background`` frequencies or ``zero``), motif-level FIS.
    targets : tuple or None
        Model outputs scored (index or label); None: all.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (PyTorch models).
    motifs : str
        Motifs that name each variant's own motif and its interaction partner: ``jaspar`` (JASPAR CORE
        vertebrates, offline), a MEME / JASPAR file, or ``none``.
    seq_len : int or None
        Window length (bp) the model is run on, for a model whose input length is not fixed (e.g. a Keras
        input ``(None, 4)``). A model with a fixed length refuses a different one (no resizing). None: the
        model's own length (or its dataloader's ``auto_resize_len``).
    """

    method: str = "deeplift"
    references: str | None = None
    gc: float = 0.46
    n_refs: int = 10
    steps: int = 50
    window: int = 15
    null: str | None = None
    null_shuffles: int = 0
    null_size: int | None = None
    null_max_effect: float | None = None
    pvalue: str = "tail"
    seed: int = 0
    batch_size: int = 64
    chunk_size: int = 16
    rc: bool = False
    all_alts: bool = False
    output: str = "logit"
    fill: str = "background"
    targets: tuple | None = None
    device: str = "auto"
    motifs: str = "jaspar"
    seq_len: int | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.targets, str | int):
            object.__setattr__(self, "targets", (self.targets,))
        elif self.targets is not None:
            object.__setattr__(self, "targets", tuple(self.targets))
        if self.null is None:
            object.__setattr__(self, "null", "per-variant" if self.null_shuffles > 0 else "none")
        self.validate()

    # -- validation -----------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`InputError` naming the option of the first bad value."""
        if self.method not in METHODS:
            raise InputError(f"--method: unknown method {self.method!r}; available: {', '.join(METHODS)}")
        _at_least("--n-refs", self.n_refs, 1)
        _at_least("--steps", self.steps, 1)
        _at_least("--window", self.window, 1)
        _at_least("--null-shuffles", self.null_shuffles, 0)
        if self.null_size is not None:
            _at_least("--null-size", self.null_size, 1)
        if self.null_max_effect is not None and not (
                isinstance(self.null_max_effect, int | float) and not isinstance(self.null_max_effect, bool)
                and 0 < self.null_max_effect < float("inf")):
            raise InputError(f"--null-max-effect must be a number > 0, got {self.null_max_effect!r}")
        _at_least("--batch-size", self.batch_size, 1)
        _at_least("--chunk-size", self.chunk_size, 1)
        if self.seq_len is not None:
            _at_least("--seq-len", self.seq_len, 1)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise InputError(f"--seed must be a non-negative integer, got {self.seed!r}")
        if not 0.0 <= float(self.gc) <= 1.0:
            raise InputError(f"--gc must lie in [0, 1], got {self.gc}")
        _choice("--null", self.null, NULL_KINDS)
        if self.null == "per-variant" and self.null_shuffles < 1:
            raise InputError("--null per-variant needs --null-shuffles >= 1")
        _choice("--output", self.output, OUTPUTS)
        _choice("--pvalue", self.pvalue, PVALUES)
        _choice("--fill", self.fill, FILLS)
        if self.motifs not in ("jaspar", "none") and not os.path.isfile(str(self.motifs)):
            raise InputError(f"--motifs must be jaspar, none or an existing MEME/JASPAR file, got {self.motifs!r}")
        refs = self.references
        if refs is not None and refs not in REFERENCE_KINDS and not os.path.isfile(str(refs)):
            raise InputError(f"--references must be one of {', '.join(REFERENCE_KINDS)} or an existing FASTA/.npy "
                             f"file, got {refs!r}")

    # -- derived --------------------------------------------------------------------------------------------
    @property
    def with_null(self) -> bool:
        """Whether p/q-values are computed."""
        return self.null != "none"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def provenance(self) -> dict[str, Any]:
        """The fields as plain values, for output headers and attributes."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d["references"] = d["references"] if d["references"] is not None else ""
        d["targets"] = list(d["targets"]) if d["targets"] is not None else []
        return d

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """Settings from a parsed command line: every field the command declared, defaults for the rest."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kw = {k: v for k, v in vars(args).items() if k in names and v is not None}
        if "targets" in kw:
            kw["targets"] = tuple(kw["targets"])
        return cls(**kw)


def _at_least(flag: str, value: Any, lo: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise InputError(f"{flag} must be an integer >= {lo}, got {value!r}")


def _choice(flag: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InputError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")


# -- command-line options --------------------------------------------------------------------------------------
_D = Settings.__dataclass_fields__


def _default(name: str) -> Any:
    return _D[name].default


# field -> (flags, argparse keywords); help strings say what the option does, the defaults come from Settings
OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "method": (("--method",), {"help": "importance method (from the registry)"}),
    "references": (("--references", "--baseline"), {
        "metavar": "shuffle|gc|uniform|zeros|FILE",
        "help": "DeepLIFT references / integrated-gradients baseline (default: the method's own: DeepLIFT "
                "shuffle, integrated gradients zeros); FILE: FASTA or .npy of references"}),
    "gc": (("--gc",), {"type": float, "help": "GC fraction of gc references and of the motif fill"}),
    "n_refs": (("--n-refs",), {"type": int, "help": "dinucleotide-shuffled references per window"}),
    "steps": (("--steps",), {"type": int, "help": "integrated-gradients steps"}),
    "window": (("--window",), {"type": int, "help": "targets are the bases within +-WINDOW bp"}),
    "null": (("--null",), {"choices": NULL_KINDS, "help": "null of maxAbsFIS: per-variant shuffles "
                           "(--null-shuffles K), pooled (--null-size M per file) or none "
                           "(default: per-variant when --null-shuffles > 0)"}),
    "null_shuffles": (("--null-shuffles",), {"type": int, "help": "shuffled backgrounds per variant/record"}),
    "null_size": (("--null-size",), {"type": int, "help": "backgrounds of the pooled null, M, for the whole file "
                                      "(default: a sixth of the scored variants, within [100, 1000])"}),
    "null_max_effect": (("--null-max-effect",), {
        "type": float, "metavar": "TAU",
        "help": "null backgrounds only where the substitution changes each scored output by less than TAU "
                "(logit units by default); other shuffles are replaced (default: every shuffle)"}),
    "pvalue": (("--pvalue",), {"choices": PVALUES, "help": "test of a score against the null: tail (empirical, "
                               "with a generalized Pareto tail beyond the null), empirical, or gaussian (the "
                               "paper's normal fit)"}),
    "seed": (("--seed",), {"type": int, "help": "random seed (same seed, same output)"}),
    "batch_size": (("--batch-size",), {"type": int, "help": "sequences per model call"}),
    "chunk_size": (("--chunk-size",), {"type": int, "help": "VCF records read and scored per chunk"}),
    "rc": (("--rc",), {"action": "store_true", "help": "average ISM scores with the reverse complement"}),
    "all_alts": (("--all-alts",), {"action": "store_true",
                                   "help": "add maxFIS over all three alternative bases (SNVs only)"}),
    "output": (("--output",), {"choices": OUTPUTS, "help": "score the pre-sigmoid/softmax logit (the paper's "
                               "choice) or the raw output"}),
    "fill": (("--fill",), {"choices": FILLS, "help": "how a source feature is mutated"}),
    "targets": (("--target",), {"action": "append", "dest": "targets",
                                "help": "model output to score, by index or label; repeat for several (default all)"}),
    "device": (("--device",), {"help": "auto, cpu, cuda, cuda:N or mps (PyTorch models)"}),
    "seq_len": (("--seq-len",), {
        "type": int, "metavar": "N",
        "help": "window length (bp) to run a model whose input length is not fixed (e.g. Keras input "
                "(None, 4)); a fixed-length model refuses a different N (default: the model's length)"}),
    "motifs": (("--motifs",), {"metavar": "jaspar|none|FILE", "help": "motifs naming each variant's own motif "
                               "and its interaction partner: JASPAR CORE vertebrates (offline), a MEME/JASPAR "
                               "file, or none"}),
}

# which settings each command exposes
COMMAND_FIELDS: dict[str, tuple[str, ...]] = {
    "score-variants": ("targets", "output", "method", "references", "gc", "n_refs", "steps", "window", "null",
                       "null_shuffles", "null_size", "null_max_effect", "pvalue", "seed", "batch_size",
                       "chunk_size", "rc", "all_alts", "device", "motifs", "seq_len"),
    "interactions": ("targets", "output", "method", "references", "gc", "n_refs", "steps", "null_shuffles",
                     "pvalue", "seed", "batch_size", "fill", "device", "seq_len"),
    "plot": ("targets", "output", "method", "references", "gc", "n_refs", "steps", "window", "seed", "batch_size",
             "device", "seq_len"),
    "kipoi-spec": ("targets", "output", "method", "references", "gc", "n_refs", "steps", "window", "seed",
                   "batch_size", "seq_len"),
}


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Declare the settings flags of ``command`` on its parser (defaults shown from :class:`Settings`)."""
    for name in COMMAND_FIELDS[command]:
        flags, kw = OPTIONS[name]
        kw = dict(kw)
        kw.setdefault("dest", name)
        if name == "method":
            kw["choices"] = list(METHODS)
        default = _default(name)
        if kw.get("action") not in ("store_true", "append"):
            kw["default"] = None  # None = not given: Settings' default applies
            if default is not None and default is not dataclasses.MISSING:
                kw["help"] += f" (default {default})"
        parser.add_argument(*flags, **kw)
