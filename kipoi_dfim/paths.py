"""Checks of input and output paths, made before any work so that a run never fails after hours of scoring.

An output must never overwrite an input (or another output), and its folder must exist and be writable; a
bgzipped VCF output also writes ``OUT.tbi`` (or ``OUT.csi``), which count as output paths too. The files an
input brings with it (the FASTA's ``.fai``/``.gzi``, the VCF's ``.tbi``/``.csi``) count as inputs: a TSV written
over the FASTA index would corrupt the reference for every later run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

from kipoi_dfim.errors import InputError

PathLike = str | os.PathLike | None

# files an option's path implies, beside the path itself
_INPUT_COMPANIONS = {"--fasta": (".fai", ".gzi"), "--vcf": (".tbi", ".csi")}


def _same(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str, folder: str) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, top]) == top


def _companions(flag: str, path: str) -> list[tuple[str, str]]:
    """Files an output writes besides itself (the tabix/CSI index of a .vcf.gz)."""
    out = [(flag, path)]
    if flag == "-o" and path.endswith(".gz"):
        out += [(f"{flag} (its index)", path + ".tbi"), (f"{flag} (its index)", path + ".csi")]
    return out


def _input_files(flag: str, path: str) -> list[tuple[str, str]]:
    """An input and the index files that go with it."""
    return [(flag, path)] + [(f"{flag} (its index)", path + ext) for ext in _INPUT_COMPANIONS.get(flag, ())]


def check_paths(inputs: Mapping[str, PathLike], outputs: Mapping[str, PathLike]) -> None:
    """Refuse outputs that equal an input or each other, or that cannot be written; name both paths.

    Parameters
    ----------
    inputs, outputs : mapping of option name -> path (None entries are ignored)
    """
    ins = [c for k, v in inputs.items() if v is not None for c in _input_files(k, os.fspath(v))]
    outs = [c for k, v in outputs.items() if v is not None for c in _companions(k, os.fspath(v))]
    dirs = [(k, p) for k, p in ins if os.path.isdir(p)]  # a model directory: none of its files may be replaced
    for i, (ko, po) in enumerate(outs):
        for ki, pi in ins:
            if _same(po, pi):
                raise InputError(f"the output {ko} {po} is the input {ki} {pi}; choose another output path")
        for ki, pi in dirs:
            if os.path.exists(po) and _inside(po, pi):
                raise InputError(f"the output {ko} {po} is a file of the input {ki} {pi}; choose another output path")
        for kb, pb in outs[:i]:
            if _same(po, pb):
                raise InputError(f"the outputs {kb} and {ko} are the same file {po}; give each its own path")
        check_writable(po, ko)


def check_writable(path: str, flag: str) -> None:
    """The path is not a folder, and a file can be created in its folder (or the folder can be created).

    Writability is tried (a probe file is created and removed), not read from permission bits: root, ACLs,
    read-only mounts and immutable folders make ``os.access`` answers wrong.
    """
    if os.path.isdir(path):
        raise InputError(f"{flag} {path} is a directory; give a file path")
    d = os.path.dirname(os.path.abspath(path)) or "."
    while not os.path.exists(d):
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        raise InputError(f"{flag} {path}: {d} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".kipoi-dfim-probe.", dir=d)
    except OSError as e:
        raise InputError(f"{flag} {path}: cannot create files in the folder {d} ({e.strerror})") from None
    os.close(fd)
    os.remove(probe)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise InputError(f"{flag} {path} exists and is not writable")
