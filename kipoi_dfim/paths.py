"""Checks of input and output paths, made before any work so that a run never fails after hours of scoring.

An output must never overwrite an input (or another output), and its folder must exist and be writable; a
bgzipped VCF output also writes ``OUT.tbi``, which counts as an output path too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from kipoi_dfim.errors import InputError

PathLike = str | os.PathLike | None


def _same(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _companions(flag: str, path: str) -> list[tuple[str, str]]:
    """Files an output writes besides itself (the tabix index of a .vcf.gz)."""
    out = [(flag, path)]
    if flag == "-o" and path.endswith(".gz"):
        out.append((f"{flag} (its index)", path + ".tbi"))
    return out


def check_paths(inputs: Mapping[str, PathLike], outputs: Mapping[str, PathLike]) -> None:
    """Refuse outputs that equal an input or each other, or that cannot be written; name both paths.

    Parameters
    ----------
    inputs, outputs : mapping of option name -> path (None entries are ignored)
    """
    ins = [(k, os.fspath(v)) for k, v in inputs.items() if v is not None]
    outs = [c for k, v in outputs.items() if v is not None for c in _companions(k, os.fspath(v))]
    for i, (ko, po) in enumerate(outs):
        for ki, pi in ins:
            if _same(po, pi):
                raise InputError(f"the output {ko} {po} is the input {ki} {pi}; choose another output path")
        for kb, pb in outs[:i]:
            if _same(po, pb):
                raise InputError(f"the outputs {kb} and {ko} are the same file {po}; give each its own path")
        check_writable(po, ko)


def check_writable(path: str, flag: str) -> None:
    """The path is not a folder, and its folder is writable (or can be created in a writable folder)."""
    if os.path.isdir(path):
        raise InputError(f"{flag} {path} is a directory; give a file path")
    d = os.path.dirname(os.path.abspath(path)) or "."
    while not os.path.exists(d):
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        raise InputError(f"{flag} {path}: {d} is a file, not a directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: the folder {d} is not writable")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise InputError(f"{flag} {path} exists and is not writable")
