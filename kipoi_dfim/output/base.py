"""What every output format shares: atomic files, cell formatting, the chunk spool and the writer interface.

A writer receives the scored chunks as they are produced (:meth:`Writer.write_chunk`) and the file-wide
statistics once at the end (:meth:`Writer.finish`); :meth:`Writer.abort` removes everything it wrote. Outputs
appear under their final names only in ``finish`` (``os.replace`` of a finished temporary file), so an
interrupted or failed run leaves earlier outputs untouched and no partial ones.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # annotations only: kipoi_dfim.variants imports this module, and null imports variants
    from kipoi_dfim.null import FileStats

# every temporary file of a run, so that a signal handler can remove them (see kipoi_dfim.cli)
LIVE_TEMPS: set[str] = set()


def make_temp(path: str, suffix: str = ".tmp") -> str:
    """An empty temporary file next to ``path`` with the permissions a normal new file would get."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=d)
    os.close(fd)
    LIVE_TEMPS.add(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


# renames (tmp, path) -- or removals (None, path) -- waiting for the end of the outermost commit_together()
_PENDING: list[tuple[str | None, str]] | None = None
#: set once a run's outputs are all in place (a signal after that leaves them)
COMMITTED = {"done": False}


def remove_temp(tmp: str) -> None:
    """Remove a temporary file made by :func:`make_temp` (no error when it is gone; kept while pending commit)."""
    if _PENDING is not None and any(t == tmp for t, _ in _PENDING):
        return
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    LIVE_TEMPS.discard(tmp)


def commit_temp(tmp: str, path: str) -> None:
    """Move a finished temporary file to its final name (atomic on one filesystem; deferred in commit_together)."""
    if _PENDING is not None:
        _PENDING.append((tmp, path))
        return
    os.replace(tmp, path)
    LIVE_TEMPS.discard(tmp)


def remove_output(path: str) -> None:
    """Remove an earlier output that would be wrong next to the new ones (a stale index); deferred like commits."""
    if _PENDING is not None:
        _PENDING.append((None, path))
        return
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


@contextlib.contextmanager
def commit_together() -> Iterator[None]:
    """Every output finished inside appears at once, at the end, with SIGINT/SIGTERM held off meanwhile.

    Why: a run writes several files (VCF, its index, TSV, maps). Finishing them one by one and being interrupted
    between two would leave a new VCF with an old index or a new TSV beside an old VCF. Inside this block,
    :func:`commit_temp` only records the rename; the renames are made in one go when the outermost block ends
    without error (a signal arriving then is handled right after), and on error the finished temps are removed.
    """
    global _PENDING
    if _PENDING is not None:  # nested: the outermost block commits
        yield
        return
    _PENDING = []
    try:
        yield
        pending, _PENDING = _PENDING, None
        with _signals_held():
            for tmp, path in pending:
                if tmp is None:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)
                else:
                    os.replace(tmp, path)
                    LIVE_TEMPS.discard(tmp)
            COMMITTED["done"] = True
    finally:
        pending, _PENDING = _PENDING or [], None
        for tmp, _path in pending:
            if tmp is not None:
                remove_temp(tmp)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Block SIGINT/SIGTERM (main thread) for the duration; a pending one is delivered afterwards."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (ValueError, OSError, AttributeError):  # not available here: no holding
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def remove_live_temps() -> None:
    """Remove every temporary file still open (called on SIGTERM/SIGINT)."""
    global _PENDING
    _PENDING = None
    for tmp in list(LIVE_TEMPS):
        remove_temp(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    path = os.fspath(path)
    tmp = make_temp(path, suffix + ".tmp")
    try:
        yield tmp
        commit_temp(tmp, path)
    except BaseException:
        remove_temp(tmp)
        raise


def fmt(v: Any) -> str:
    """TSV cell: '' for missing/NaN, 6 significant digits for floats."""
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{float(v):.6g}"
    return str(v)


class Spool:
    """An append-only temporary file of pickled chunks, read back in order once: constant memory per chunk.

    Writers that need the file-wide statistics before they can write (the TSV and VCF carry p/q-values) keep
    their chunks here until :meth:`Writer.finish`.
    """

    def __init__(self, near: str):
        self.path = make_temp(near, ".spool")
        self.fh = open(self.path, "wb")  # noqa: SIM115 - closed in read()/close()

    def append(self, obj: Any) -> None:
        pickle.dump(obj, self.fh, protocol=pickle.HIGHEST_PROTOCOL)

    def read(self) -> Iterator[Any]:
        self.fh.close()
        with open(self.path, "rb") as fh:
            while True:
                try:
                    yield pickle.load(fh)
                except EOFError:
                    return

    def close(self) -> None:
        self.fh.close()
        remove_temp(self.path)


@dataclass
class ScoredChunk:
    """One chunk of scored records, as the writers receive it.

    ``rows`` are the TSV rows (dicts, one per record x ALT x target, in that order), ``maps`` the maps rows
    (None for rows not scored), ``first_row`` the file-wide index of ``rows[0]``.
    """

    records: list
    variants: list
    rows: list[dict]
    maps: list[dict | None]
    first_row: int
    n_targets: int


class Writer(Protocol):
    """One output format."""

    def write_chunk(self, chunk: ScoredChunk) -> None:
        """Take the next chunk of scored records (in input order)."""

    def finish(self, stats: FileStats) -> None:
        """Write the file-wide statistics and move the output to its final name."""

    def abort(self) -> None:
        """Remove everything written so far (the final path is left as it was)."""
