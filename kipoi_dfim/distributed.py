"""Scale-out on Dask: one VCF scored by the workers of a ``dask.distributed`` cluster, with the same output.

``score-variants ... --dask local:N`` (a ``LocalCluster`` of N single-threaded worker processes),
``--dask tcp://HOST:PORT`` (an existing scheduler, e.g. one started by dask-jobqueue on Slurm), or in Python
``score_variants(..., client=dask_client)``. This is the only module that imports Dask, and
:mod:`kipoi_dfim.scoring` imports it only when a client is asked for, so a run without ``--dask`` never loads
Dask.

How a run goes:

* The client streams the VCF in chunks of records (``--chunk-size``), exactly as the single-process run does
  (:func:`kipoi_dfim.scoring.file_chunks`), and submits groups of chunks as tasks, with a bounded number of
  tasks in flight (a few per worker): the client never holds the whole file, whatever its size.
* Each worker process loads the model once (:data:`_MODELS`, keyed by everything that decides how it is
  loaded) and scores a task's chunks with :func:`kipoi_dfim.scoring.score_chunk` - the same function as the
  single-process run - returning the TSV rows, the maps rows and the null values (a
  :class:`~kipoi_dfim.null.NullRecord`).
* The client takes the results in input order and gives them to :class:`kipoi_dfim.scoring.FilePass`, which
  feeds the writers and the null accumulator as in one process. A pooled null is scored on the cluster too,
  in the batches of :func:`kipoi_dfim.null.pooled_batches`; the file-wide p/q-values are computed once on the
  client. Hence the same bytes for any number of workers.
* Faults: a task whose worker dies is rerun by the scheduler on another worker (and ``retries`` covers
  errors raised in a task); since results are taken by sequence number, a chunk is written exactly once. A
  chunk that fails for a data reason (:class:`~kipoi_dfim.errors.InputError`) is not retried: it is sent
  back as a value and the run fails with that error and the VCF lines of the chunk.

Workers must see the model, the FASTA and any ``--references`` file at the same paths as the client (a
shared filesystem, as on a cluster); relative paths are made absolute before they are sent.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dask
from dask.distributed import Client, Future, LocalCluster
from tqdm.auto import tqdm

from kipoi_dfim import null as N
from kipoi_dfim.backend import load_model
from kipoi_dfim.errors import InputError
from kipoi_dfim.scoring import load_options, score_chunk
from kipoi_dfim.settings import REFERENCE_KINDS, Settings
from kipoi_dfim.variants import Fasta

# how often a task is rerun after an error raised in it (a dead worker's tasks are rerun by the scheduler)
RETRIES = 2
# tasks in flight per worker thread: enough to keep every worker busy while the client writes, few enough to
# bound memory
IN_FLIGHT_PER_WORKER = 3

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

# per worker process: loaded models and opened FASTAs (a task runs on a worker, which keeps them between tasks)
_MODELS: dict[ModelRef, Any] = {}
_FASTAS: dict[str, Fasta] = {}


@dataclass(frozen=True)
class ModelRef:
    """How a worker loads the model: the model, its Kipoi source and the keywords of
    :func:`kipoi_dfim.backend.load_model` (``scoring.load_options``), hashable so that it keys the cache."""

    model: str
    source: str | None
    options: tuple[tuple[str, Any], ...]

    def load(self) -> Any:
        """The model, loaded once per worker process (later tasks reuse it)."""
        m = _MODELS.get(self)
        if m is None:
            if not _MODELS:
                _undo_malloc_trim()
            m = _MODELS[self] = load_model(self.model, source=self.source, **dict(self.options))
        return m


def _undo_malloc_trim() -> None:
    """Give a worker glibc's default allocation thresholds back (once per worker process).

    Why: Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's mmap
    threshold at 128 kB, so every large NumPy/PyTorch array is a fresh mmap and its pages are faulted in anew;
    measured here, that doubles the CPU time of scoring a chunk (0.59 s instead of 0.27 s of CPU for the 40
    records of the sim example). Setting the thresholds to glibc's dynamic maxima (32 MiB mmap, twice that for
    trimming) restores the single-process speed. Linux/glibc only; elsewhere nothing is done.
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)
    except (OSError, AttributeError):  # not glibc
        pass


def model_ref(model: Any, source: str | None, settings: Settings) -> ModelRef:
    """A :class:`ModelRef` for a model given by path or Kipoi name (a model object cannot be shipped)."""
    if not isinstance(model, str | os.PathLike):
        raise InputError("with --dask / client=, give the model as a directory, file or Kipoi name (each worker "
                         f"loads it), not a model object ({type(model).__name__})")
    path = os.fspath(model)
    if source is None and os.path.exists(path):
        path = os.path.abspath(path)
    return ModelRef(path, source, tuple(sorted(load_options(settings).items())))


def _fasta(path: str) -> Fasta:
    fa = _FASTAS.get(path)
    if fa is None:
        fa = _FASTAS[path] = Fasta(path)
    return fa


@dataclass
class DataError:
    """An :class:`InputError` raised in a task, sent back as a value so that Dask does not retry it."""

    message: str


def _lines(chunks: Sequence[tuple[list, list]]) -> str:
    recs = [r for records, _ in chunks for r in records]
    return f"VCF lines {recs[0].line}-{recs[-1].line}" if recs else "a chunk without records"


# ------------------------------------------------------------------------------------------------ tasks
def score_task(ref: ModelRef, fasta: str, chunks: list[list], targets: list[int], tnames: list[str],
               settings: Settings) -> list[tuple] | DataError:
    """On a worker: score the variants of several VCF chunks with :func:`kipoi_dfim.scoring.score_chunk`."""
    try:
        model, fa = ref.load(), _fasta(fasta)
        return [score_chunk(model, variants, fa, targets, tnames, settings) for variants in chunks]
    except InputError as e:
        return DataError(str(e))


def null_task(ref: ModelRef, fasta: str, batches: list[tuple[int, list]], targets: list[int],
              settings: Settings) -> list[N.NullRecord] | DataError:
    """On a worker: score batches of the pooled null (:func:`kipoi_dfim.null.background_null`)."""
    try:
        model, fa = ref.load(), _fasta(fasta)
        out = []
        for k, batch in batches:
            rec = N.NullRecord()
            N.background_null(model, fa, batch, k, targets, settings, rec)
            out.append(rec)
        return out
    except InputError as e:
        return DataError(str(e))


# ------------------------------------------------------------------------------------------------ client
def _groups(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    group: list[Any] = []
    for it in items:
        group.append(it)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def in_order(client: Client, tasks: Iterable[tuple[Any, tuple]], what: str) -> Iterator[tuple]:
    """Submit ``(context, (function, *args))`` tasks with a bounded number in flight; yield (context, result)
    in submission order.

    Why submission order with a bounded window: the writers need input order, and a window of a few tasks per
    worker thread (:data:`IN_FLIGHT_PER_WORKER`, counted again when the window is full, so workers that join
    during the run are used) bounds both the chunks held by the client and the results waiting for an
    earlier one. On any error the tasks still in flight are cancelled, so a failed run leaves no work behind.
    """
    token = uuid.uuid4().hex[:8]
    pending: deque[tuple[Any, Future]] = deque()
    limit = _limit(client)
    try:
        for seq, (ctx, (fn, *args)) in enumerate(tasks):
            pending.append((ctx, client.submit(fn, *args, key=f"kipoi-dfim-{what}-{token}-{seq}", retries=RETRIES)))
            if len(pending) >= limit:
                limit = _limit(client)
            if len(pending) >= limit:
                yield _result(*pending.popleft(), what)
        while pending:
            yield _result(*pending.popleft(), what)
    finally:
        if pending:
            client.cancel([f for _, f in pending])


def _result(ctx: Any, fut: Future, what: str) -> tuple[Any, Any]:
    try:
        res = fut.result()
    except Exception as e:
        e.add_note(f"kipoi-dfim: raised by a Dask task scoring {_lines(ctx) if what == 'chunks' else what}")
        raise
    finally:
        fut.release()
    if isinstance(res, DataError):
        raise InputError(res.message + (f" (while scoring {_lines(ctx)})" if what == "chunks" else ""))
    return ctx, res


def _limit(client: Client) -> int:
    return IN_FLIGHT_PER_WORKER * max(1, sum(client.nthreads().values()))


def score_file(client: Client, ref: ModelRef, fasta: str, chunks: Iterable[tuple[list, list]], fp: Any,
               targets: list[int], tnames: list[str], settings: Settings, chunks_per_task: int = 1) -> None:
    """Score a streamed VCF on the cluster and hand each chunk to ``fp`` (a :class:`~kipoi_dfim.scoring.FilePass`)
    in input order; then the pooled null, if selected.

    ``chunks_per_task`` reader chunks go into one task (fewer, larger tasks amortise Dask's per-task overhead,
    about a millisecond, and the transfer of the settings; more tasks balance the workers better).
    """
    if chunks_per_task < 1:
        raise InputError(f"chunks_per_task must be >= 1, got {chunks_per_task}")
    fasta = os.path.abspath(fasta)
    refs = settings.references
    if isinstance(refs, str) and refs not in REFERENCE_KINDS and os.path.isfile(refs):
        settings = settings.replace(references=os.path.abspath(refs))  # a worker may have another cwd
    tasks = ((group, (score_task, ref, fasta, [v for _, v in group], targets, tnames, settings))
             for group in _groups(chunks, chunks_per_task))
    for group, results in in_order(client, tasks, "chunks"):
        for (records, variants), res in zip(group, results, strict=True):
            fp.take(records, variants, *res)
    if fp.sampler is not None:
        batches = N.pooled_batches(fp.sampler, max(64, settings.chunk_size))
        tasks = ((group, (null_task, ref, fasta, group, targets, settings)) for group in _groups(batches,
                                                                                               chunks_per_task))
        total = sum(len(b) * k for k, b in batches)
        with tqdm(total=total, unit="background", desc="pooled null", disable=fp.bar.disable,
                  file=sys.stderr) as bar:
            for group, records in in_order(client, tasks, "pooled null"):
                for (k, batch), rec in zip(group, records, strict=True):
                    rec.replay(fp.acc)
                    bar.update(len(batch) * k)


def _quiet_dask() -> None:
    """Dask's INFO messages (scheduler and worker start/stop) only with ``--verbose``: a run shows its bar."""
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger("distributed").setLevel(logging.WARNING)


@contextlib.contextmanager
def connect(spec: Any) -> Iterator[Client]:
    """A Dask client from ``--dask``: ``local:N`` starts a LocalCluster of N single-threaded worker processes
    (closed at the end), ``tcp://HOST:PORT`` (or any scheduler address) connects to a running scheduler, and a
    :class:`dask.distributed.Client` is used as given (and left open)."""
    if isinstance(spec, Client):
        yield spec
        return
    spec = str(spec)
    if spec.startswith("local:"):
        n = spec[len("local:"):]
        if not n.isdigit() or int(n) < 1:
            raise InputError(f"--dask local:N needs a number of workers N >= 1, got {spec!r}")
        _quiet_dask()
        # the statistical profiler of the dashboard costs workers ~10% CPU here; nobody watches it on local:N
        with dask.config.set({"distributed.worker.profile.enabled": False}), \
                LocalCluster(n_workers=int(n), threads_per_worker=1, processes=True, dashboard_address=":0") as cl, \
                Client(cl) as client:
            yield client
    elif "://" in spec:
        _quiet_dask()
        try:
            client = Client(spec, timeout="30s")
        except OSError as e:
            raise InputError(f"--dask: cannot connect to the Dask scheduler at {spec} ({e})") from e
        with client:
            yield client
    else:
        raise InputError(f"--dask must be local:N or a scheduler address such as tcp://HOST:PORT, got {spec!r}")


__all__ = ["ModelRef", "model_ref", "score_task", "null_task", "in_order", "score_file", "connect"]
