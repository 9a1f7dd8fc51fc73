"""Variant scoring: VCF in, annotated VCF / TSV / maps out (``kipoi-dfim score-variants``).

For each ALT of each VCF record the variant is the source mutation of DFIM: importance is computed on the
reference window X and the alternate window X' with the same references (:mod:`kipoi_dfim.fis`), FIS at each
target base within +-N bp is ``sum_b (C_X - C_X')[t, b]``, and the summary is max |FIS| (maxAbsFIS) with where it
is reached. kipoi-veff's ISM scores come from the same windows (:mod:`kipoi_dfim.ism`), the null and the
p/q-values from :mod:`kipoi_dfim.null`, the files from the writers of :mod:`kipoi_dfim.output`.

The VCF is read once, streamed in chunks of records; each chunk's variants are batched together into model
calls, and each scored chunk goes straight to the writers. The only per-row state kept to the end is what the
file-wide statistics need (one maxAbsFIS and one target slot per row, and the null values).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import tempfile
import warnings
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from kipoi_dfim import __version__, indels
from kipoi_dfim import fis as F
from kipoi_dfim import null as N
from kipoi_dfim.attribution import METHODS, maps_flank, predict_fixed
from kipoi_dfim.backend import check_seq_len, load_model
from kipoi_dfim.errors import InputError
from kipoi_dfim.ism import ISM_COLUMNS, ism_scores
from kipoi_dfim.motifs import MotifSet, annotate_variants, resolve_motifs
from kipoi_dfim.output.base import ScoredChunk, Writer, commit_together
from kipoi_dfim.output.maps import MapsWriter
from kipoi_dfim.output.tsv import ALL_COLUMNS, MOTIF_COLUMNS, TsvWriter, read_table
from kipoi_dfim.output.vcf import VcfWriter
from kipoi_dfim.paths import check_paths
from kipoi_dfim.progress import Progress, split
from kipoi_dfim.sequence import ALPHABET, reverse_complement
from kipoi_dfim.settings import Settings
from kipoi_dfim.shuffle import variant_seeds
from kipoi_dfim.variants import Fasta, Variant, iter_chunks, read_records, windows

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# keyword names of earlier versions -> Settings fields
_ALIASES = {"target": "targets", "baseline": "references"}


def make_settings(settings: Settings | None = None, **options: Any) -> Settings:
    """The run's :class:`Settings`: given whole, or built from keywords (``target=``/``baseline=`` accepted)."""
    opts = {_ALIASES.get(k, k): v for k, v in options.items()}
    if settings is None:
        return Settings(**opts)
    return settings.replace(**opts) if opts else settings


def load_options(settings: Settings) -> dict[str, Any]:
    """The keywords of :func:`kipoi_dfim.backend.load_model` that come from the settings (one place, so that a
    Dask worker loads the model exactly as the client does). ``seq_len`` only when given, so that a model's own
    length applies otherwise."""
    opts = {"output": settings.output, "batch_size": settings.batch_size, "device": settings.device}
    if settings.seq_len is not None:
        opts["seq_len"] = settings.seq_len
    return opts


# ------------------------------------------------------------------------------------------------ one chunk
@dataclass
class ChunkScores:
    """The numbers of one chunk's scorable variants, per target slot (arrays over the ok variants)."""

    X: np.ndarray
    Xalt: np.ndarray  # alternate windows in reference coordinates (indels aligned: kipoi_dfim.indels)
    C: np.ndarray  # (T, 2, n, L, 4) importance of the reference and alternate windows (the same alignment)
    fis: np.ndarray  # (T, n, L)
    summary: list[dict[str, np.ndarray]]  # per target: max_abs_summary arrays
    ism: dict[str, np.ndarray]  # (n, n_outputs) each
    all_alts: list[dict] | None = None  # per target: maxFIS over the three alternative bases


def _ism(model: Any, X: np.ndarray, Xalt: np.ndarray, rc: bool,
         progress: Progress | None = None) -> dict[str, np.ndarray]:
    """kipoi-veff's ISM scores from the raw outputs of the same windows (and their reverse complements)."""
    n, bs = len(X), getattr(model, "batch_size", 64)
    fwd, rev = split(progress, [1, 1]) if rc else (progress, None)
    P = predict_fixed(model, np.concatenate([X, Xalt]), bs, output="raw", progress=fwd).astype(np.float64)
    if not rc:
        return ism_scores(P[:n], P[n:])
    Prc = predict_fixed(model, reverse_complement(np.concatenate([X, Xalt])), bs, output="raw",
                        progress=rev).astype(np.float64)
    return ism_scores(P[:n], P[n:], Prc[:n], Prc[n:])


def chunk_costs(model: Any, ok: Sequence[Variant], settings: Settings, null: bool) -> list[float]:
    """The expected model work of scoring variants ``ok``, in forward passes of one sequence, by part: importance
    of the reference and alternate windows, the three alternative bases (``--all-alts``), the ISM predictions,
    and the per-variant null (``null``). What the progress bar weighs the parts by (:mod:`kipoi_dfim.progress`).
    """
    n, bs = len(ok), getattr(model, "batch_size", 64)
    c = METHODS[settings.method].window_cost(settings)
    snvs = sum(len(v.ref) == len(v.alt) == 1 for v in ok) if settings.all_alts else 0
    preds = -(-2 * n // bs) * bs * (2 if settings.rc else 1)  # predict_fixed pads every call to the batch size
    return [2 * n * c, 3 * snvs * c, preds, 2 * n * settings.null_shuffles * c if null else 0.0]


def _snv_mutants(X: np.ndarray, variants: Sequence[Variant]) -> tuple[np.ndarray, list[list[str]]]:
    """For SNVs: the three alternative bases at the variant, (3n, L, 4) in variant-major order."""
    muts, bases = [], []
    for i, v in enumerate(variants):
        alts = [b for b in ALPHABET if b != v.ref.upper()] if len(v.ref) == len(v.alt) == 1 else []  # SNVs only
        bases.append(alts)
        for b in alts:
            m = X[i].copy()
            m[v.offset] = 0
            m[v.offset, ALPHABET.index(b)] = 1
            muts.append(m)
    return (np.stack(muts) if muts else np.zeros((0,) + X.shape[1:], np.float32)), bases


def _all_alts(model, X, Cref, refs, ok, targets, settings, mask, progress=None) -> list[dict]:
    """The paper's maxFIS(t) = max over the three mutants g of FIS_g(t), per target; summary max |maxFIS|."""
    Xm, bases = _snv_mutants(X, ok)
    counts = [len(b) for b in bases]
    refs_m = np.repeat(refs, counts, axis=0) if isinstance(refs, np.ndarray) else refs
    Cm = F.windows_importance(model, Xm[None], refs_m, targets, settings, positions=np.repeat(mask, counts, 0),
                              progress=progress)[:, 0]
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = []
    for slot in range(len(targets)):
        fis_m = (np.repeat(Cref[slot], counts, axis=0) - Cm[slot]).sum(-1)
        res: dict[str, Any] = {"fis": fis_m, "bases": bases, "starts": starts, "summ": {}}
        for i, v in enumerate(ok):
            if counts[i] and mask[i].any():
                maxfis = fis_m[starts[i] : starts[i + 1]].max(0)
                pos = np.nonzero(mask[i])[0]
                k = int(np.argmax(np.abs(maxfis[pos])))
                res["summ"][i] = {"max_abs_maxfis": float(abs(maxfis[pos][k])), "maxfis_offset": int(pos[k]) - v.offset}
        out.append(res)
    return out


def score_ok(model: Any, X: np.ndarray, Xalt: np.ndarray, ok: Sequence[Variant], targets: Sequence[int],
             settings: Settings, progress: Progress | None = None) -> ChunkScores:
    """FIS, summaries and ISM scores of variants whose windows ``X``/``Xalt`` are extracted (status ok).

    ``progress`` is told the fraction done as model batches complete (:mod:`kipoi_dfim.progress`).
    """
    p_imp, p_alts, p_ism = split(progress, chunk_costs(model, ok, settings, null=False)[:3])
    refs = F.window_references(X, settings, variant_seeds(settings.seed, ok, 0))  # once, for every target
    offsets = np.array([v.offset for v in ok])
    mask = F.target_mask(X.shape[1], offsets, np.array([len(v.ref) for v in ok]), settings.window)
    C = F.windows_importance(model, np.stack([X, Xalt]), refs, targets, settings,
                             positions=F.read_positions(mask, ok), progress=p_imp)
    C, Xal, aligned = indels.align_to_reference(C, Xalt, ok)  # indels: C_X[t] - C_X'[align(t)]
    fis = F.fis_tracks(C)[:, 0]
    mask &= aligned
    summary = [F.max_abs_summary(f, X, mask, offsets) for f in fis]
    alts = _all_alts(model, X, C[:, 0], refs, ok, targets, settings, mask, p_alts) if settings.all_alts else None
    return ChunkScores(X, Xal, C, fis, summary, _ism(model, X, Xalt, settings.rc, p_ism), alts)


# ------------------------------------------------------------------------------------------------ rows
def _display(a: np.ndarray, v: Variant, flank: int) -> np.ndarray:
    """Slice (L, ...) to offsets -flank..+flank around the variant, NaN/zero padded at window edges."""
    L = a.shape[0]
    out = np.zeros((2 * flank + 1,) + a.shape[1:], np.float32)
    if a.dtype.kind == "f" and a.ndim == 1:
        out[:] = np.nan
    src = np.arange(v.offset - flank, v.offset + flank + 1)
    inside = (src >= 0) & (src < L)
    out[inside] = a[src[inside]]
    return out


def _base_row(v: Variant, tname: str) -> dict[str, Any]:
    return {
        "variant_id": v.variant_id, "chrom": v.chrom, "pos": v.pos, "ref": v.ref, "alt": v.alt, "target": tname,
        "status": v.status, "flags": ";".join(v.flags), "vcf_record": v.record_index, "vcf_line": v.line,
        "alt_index": v.alt_index,
    }


def _scored_row(r: dict, s: ChunkScores, i: int, slot: int, col: int) -> None:
    summ = s.summary[slot]
    r["max_abs_fis"] = float(summ["max_abs_fis"][i])
    if summ["has"][i]:
        r["max_fis_offset"] = int(summ["max_fis_offset"][i])
        r["max_fis_base"] = str(summ["max_fis_base"][i])
        r["fis_at_max"] = float(summ["fis_at_max"][i])
    for c in ISM_COLUMNS:
        r[c] = float(s.ism[c][i, col])
    if s.all_alts is not None:
        r.update(s.all_alts[slot]["summ"].get(i, {}))


def _maps_row(r: dict, s: ChunkScores, i: int, slot: int, v: Variant, flank: int) -> dict[str, Any]:
    fis = _display(s.fis[slot, i], v, flank)
    fis[flank : flank + len(v.ref)] = np.nan
    alt_offset = indels.display_alt_offsets(v, flank, len(s.X[i]))  # identity for substitutions
    fis[alt_offset == indels.NO_ALT] = np.nan
    mr = {k: r[k] for k in ("variant_id", "chrom", "ref", "alt", "target", "pos")}
    mr.update(tsv_row=-1, seq_ref=_display(s.X[i], v, flank), seq_alt=_display(s.Xalt[i], v, flank),
              imp_ref=_display(s.C[slot, 0, i], v, flank), imp_alt=_display(s.C[slot, 1, i], v, flank),
              fis=fis, max_abs_fis=r["max_abs_fis"], alt_offset=alt_offset)
    if s.all_alts is not None:
        res = s.all_alts[slot]
        fa3 = np.full((3, 2 * flank + 1), np.nan, np.float32)
        b3 = ["", "", ""]
        for g, b in enumerate(res["bases"][i]):
            fa3[g] = _display(res["fis"][res["starts"][i] + g], v, flank)
            fa3[g, flank] = np.nan
            b3[g] = b
        mr["fis_all_alts"], mr["all_alts_bases"] = fa3, b3
    return mr


def chunk_rows(variants: Sequence[Variant], s: ChunkScores | None, targets: Sequence[int], tnames: Sequence[str],
               flank: int) -> tuple[list[dict], list[dict | None]]:
    """TSV rows (variant-major, then target) and maps rows (None where not scored) of a chunk."""
    ok_index = {id(v): i for i, v in enumerate(v for v in variants if v.ok)}
    rows, maps_rows = [], []
    for v in variants:
        i = ok_index.get(id(v))
        for slot, tname in enumerate(tnames):
            r = _base_row(v, tname)
            mr = None
            if i is not None and s is not None:
                _scored_row(r, s, i, slot, targets[slot])
                mr = _maps_row(r, s, i, slot, v, flank)
            rows.append(r)
            maps_rows.append(mr)
    return rows, maps_rows


def score_windows(model: Any, variants: Sequence[Variant], X: np.ndarray, Xalt: np.ndarray,
                  targets: Sequence[int], tnames: Sequence[str], settings: Settings,
                  acc: N.NullAccumulator | None = None,
                  progress: Progress | None = None) -> tuple[list[dict], list[dict | None]]:
    """Score variants whose windows are extracted: ``X``/``Xalt`` hold the windows of the ok ones, in order.

    Returns (TSV rows, maps rows). Used by :func:`score_variants` and by the Kipoi model that
    ``kipoi-dfim kipoi-spec`` writes. With ``acc`` the per-variant null of these variants is added to it.
    ``progress`` is told the fraction of the work done as model batches complete, the scores and the null
    weighted by their expected cost (:func:`chunk_costs`), so that a bar moves with every model call, not per chunk.
    """
    ok = [v for v in variants if v.ok]
    with_null = bool(ok) and acc is not None and settings.null == "per-variant"
    costs = chunk_costs(model, ok, settings, with_null)
    p_scores, p_null = split(progress, [sum(costs[:3]), costs[3]])
    s = score_ok(model, X, Xalt, ok, targets, settings, p_scores) if ok else None
    if with_null:
        max_abs, per_base = N.variant_null(model, X, Xalt, ok, targets, settings, progress=p_null)
        for slot in range(len(targets)):
            acc.add(slot, max_abs[slot], per_base[slot])
    flank = maps_flank(settings.window, model.seq_len)
    rows, maps_rows = chunk_rows(variants, s, targets, tnames, flank)
    motifs = resolve_motifs(settings.motifs)
    if motifs is not None:
        annotate_rows(rows, maps_rows, motifs, flank, settings.window)
    return rows, maps_rows


def annotate_rows(rows: list[dict], maps_rows: list[dict | None], motifs: MotifSet, flank: int, window: int) -> None:
    """Add each scored row's own motif (REF, ALT) and interaction partner (:mod:`kipoi_dfim.motifs`)."""
    scored = [(r, mr) for r, mr in zip(rows, maps_rows, strict=True) if mr is not None]
    if not scored:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # memelite warns about small target sets; the motif source is named
        ann = annotate_variants(np.stack([mr["seq_ref"] for _, mr in scored]),
                                np.stack([mr["seq_alt"] for _, mr in scored]),
                                np.stack([mr["fis"] for _, mr in scored]), flank, motifs, window=window)
    for (r, _), rec in zip(scored, ann.to_dict("records"), strict=True):
        r.update(rec)


def score_chunk(model: Any, variants: Sequence[Variant], fasta: Fasta, targets: Sequence[int],
                tnames: Sequence[str], settings: Settings,
                progress: Progress | None = None) -> tuple[list[dict], list[dict | None], N.NullRecord | None]:
    """Score one chunk of a VCF's variants: (TSV rows, maps rows, the chunk's per-variant null values or None).

    Why one function: the single-process run and every Dask worker (:mod:`kipoi_dfim.distributed`) score a
    chunk with this same code, and the null values come back as a :class:`~kipoi_dfim.null.NullRecord` that
    the caller adds to the file's accumulator in input order, so both runs give the same numbers.
    ``progress``: see :func:`score_windows`.
    """
    ok = [v for v in variants if v.ok]
    X, Xalt = windows(ok, fasta, model.seq_len)
    part = N.NullRecord() if settings.null == "per-variant" else None
    rows, maps_rows = score_windows(model, variants, X, Xalt, targets, tnames, settings, part, progress)
    return rows, maps_rows, part


# ------------------------------------------------------------------------------------------------ the run
def _resolve_targets(model: Any, settings: Settings) -> tuple[list[int], list[str]]:
    idx = list(range(len(model.targets))) if settings.targets is None else [
        model.target_index(t) for t in settings.targets]
    return idx, [model.targets[t] for t in idx]


def open_writers(out: str | None, tsv: str | None, maps: str | None, header: Any, tnames: list[str],
                 settings: Settings, model_label: str, seq_len: int, command: str | None) -> list[Writer]:
    """One writer per requested output (the only place that knows which formats exist)."""
    writers: list[Writer] = []
    try:
        if tsv:
            with_motifs = settings.motifs != "none"
            writers.append(TsvWriter(tsv, ALL_COLUMNS + (MOTIF_COLUMNS if with_motifs else ())))
        if out:
            writers.append(VcfWriter(out, header, tnames, settings, command))
        if maps:
            attrs = {k: v for k, v in settings.provenance().items() if v is not None}
            attrs.update(flank=maps_flank(settings.window, seq_len), model=model_label, targets=tnames,
                         version=__version__)
            writers.append(MapsWriter(maps, attrs["flank"], attrs, settings.all_alts))
    except BaseException:
        for w in writers:
            w.abort()
        raise
    return writers


def _selected(variants: list[Variant], records: list, wanted: set[str] | None) -> tuple[list, list[Variant]]:
    """Only the records with a wanted variant ID; their other ALTs are reported as ``not_selected``."""
    if wanted is None:
        return records, variants
    keep = {v.record_index for v in variants if v.variant_id in wanted}
    variants = [v for v in variants if v.record_index in keep]
    for v in variants:
        if v.variant_id not in wanted and v.ok:
            v.status = "not_selected"
    return [r for r in records if r.index in keep], variants


class _RowStats:
    """What the file-wide statistics need of each row: its maxAbsFIS and target slot (12 bytes a row)."""

    def __init__(self) -> None:
        self.max_abs = array("d")
        self.tslot = array("i")

    def add(self, rows: list[dict], n_targets: int) -> None:
        for k, r in enumerate(rows):
            self.max_abs.append(r.get("max_abs_fis", np.nan))
            self.tslot.append(k % n_targets)

    def stats(self, acc: N.NullAccumulator | None, n_targets: int, kind: str) -> N.FileStats:
        return N.file_stats(np.array(self.max_abs, np.float64), np.array(self.tslot, np.int64), acc, n_targets,
                            kind)


class RecordBar(tqdm):
    """The score-variants bars: count records (backgrounds), fractions of one while it is scored, show whole ones."""

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

    @classmethod
    def records(cls, quiet: bool) -> RecordBar:
        """The bar of a score-variants run on stderr (its total is set as the VCF is read)."""
        return cls(total=None, unit="record", desc="score-variants", disable=quiet, file=sys.stderr,
                   bar_format=cls.BAR_FORMAT)

    def advance(self, increment: float) -> None:
        """Move by ``increment`` >= 0, never past the total; ending exactly on it."""
        position = self.n + max(0.0, increment)
        position = min(position, self.total) if self.total is not None else position
        if position > self.n:
            self.update(position - self.n)
        if self.total is not None and position >= self.total:
            self.n = self.total

    @property
    def format_dict(self) -> dict:
        d = super().format_dict
        d["n_fmt"] = str(int(d["n"] or 0))  # records finished, not 12.3333
        return d


def _estimate_total(bar: tqdm, done: int, records: list, file_bytes: int, header_bytes: int = 0) -> None:
    """The bar's total, estimated from the bytes read up to the ``done``-th record (no counting pass)."""
    read = records[-1].read_bytes - header_bytes if records else 0
    if read > 0 and file_bytes > header_bytes:
        bar.total = max(done, round(done * (file_bytes - header_bytes) / read))


class FilePass:
    """The client's side of one pass over a VCF: takes scored chunks in input order and feeds the writers.

    It keeps what the file-wide statistics need (row maxAbsFIS, the null accumulator, the pooled-null sampler)
    and moves the progress bar: by a chunk's records when it is taken and, when the chunk was announced with
    :meth:`begin` (the single-process loop), by fractions of them while it is scored. Why a class: the
    single-process loop and the Dask client (:mod:`kipoi_dfim.distributed`) hand it the same chunks in the same
    order, so the outputs are the same.
    """

    def __init__(self, writers: list[Writer], n_targets: int, settings: Settings, bar: tqdm, file_bytes: int,
                 header_bytes: int = 0):
        self.writers, self.n_targets, self.bar, self.file_bytes = writers, n_targets, bar, file_bytes
        self.header_bytes = header_bytes
        self.settings = settings
        self.acc = N.NullAccumulator(n_targets) if settings.with_null else None
        self.sampler = N.PooledNullSampler(settings.null_size, settings.seed) if settings.null == "pooled" else None
        self.rowstats, self.n_rows, self.seen = _RowStats(), 0, False
        self.done, self.size, self.frac = 0, 0, 0.0  # records taken; the chunk being scored, its fraction done

    def begin(self, records: list) -> Progress | None:
        """Announce the next chunk before it is scored: the bar's total counts its records from now on, and the
        returned hook (:mod:`kipoi_dfim.progress`) moves the bar across its records as its work is done, never
        past them (None when the bar is off)."""
        self.size, self.frac = len(records), 0.0
        _estimate_total(self.bar, self.done + len(records), records, self.file_bytes, self.header_bytes)
        return None if self.bar.disable else self._within

    def _within(self, increment: float) -> None:
        self.frac = min(1.0, self.frac + max(0.0, increment))
        self._move_to(self.done + self.frac * self.size)

    def _move_to(self, position: float) -> None:
        if position > self.bar.n:
            self.bar.update(position - self.bar.n)

    def take(self, records: list, variants: list[Variant], rows: list[dict], maps_rows: list[dict | None],
             part: N.NullRecord | None) -> None:
        """Write the next chunk (in input order) and add its null values."""
        self.seen = self.seen or bool(records)
        if part is not None and self.acc is not None:
            part.replay(self.acc)
        if self.sampler is not None:
            self.sampler.offer([v for v in variants if v.ok])
        chunk = ScoredChunk(records, variants, rows, maps_rows, self.n_rows, self.n_targets)
        for w in self.writers:
            w.write_chunk(chunk)
        self.rowstats.add(rows, self.n_targets)
        self.n_rows += len(rows)
        end = self.done + len(records)
        _estimate_total(self.bar, end, records, self.file_bytes, self.header_bytes)
        self._move_to(end)
        self.bar.n = self.done = end  # whole records again (no float residue), also when the bar is off
        self.size, self.frac = 0, 0.0

    def stats(self) -> N.FileStats:
        """The file-wide statistics (null, p, q), computed once after the last chunk."""
        return self.rowstats.stats(self.acc, self.n_targets, self.settings.pvalue)


def file_chunks(vcf, fa: Fasta, seq_len: int, settings: Settings,
                wanted: set[str] | None) -> Iterator[tuple[list, list[Variant]]]:
    """The VCF streamed in chunks of ``settings.chunk_size`` records (only the wanted records, if selected)."""
    for records, variants in iter_chunks(vcf, fa, seq_len, chunk_size=settings.chunk_size):
        yield _selected(variants, records, wanted)


def _score_file(model, vcf, fa, fp: FilePass, tidx, tnames, settings, wanted) -> None:
    for records, variants in file_chunks(vcf, fa, model.seq_len, settings, wanted):
        hook = fp.begin(records)
        fp.take(records, variants, *score_chunk(model, variants, fa, tidx, tnames, settings, hook))
    if fp.sampler is not None:
        _pooled_null(model, fa, fp.sampler, tidx, settings, fp.acc, fp.bar.disable)


def _pooled_null(model, fa, sampler: N.PooledNullSampler, tidx, settings, acc, quiet: bool) -> None:
    total = sum(k for _, k in sampler.draws())
    with RecordBar(total=total, unit="background", desc="pooled null", disable=quiet, file=sys.stderr,
                   bar_format=RecordBar.BAR_FORMAT) as bar:
        N.pooled_null(model, fa, sampler, tidx, settings, acc, progress=lambda f: bar.advance(f * total))
        bar.advance(total)  # the float residue of the fractions


def score_variants(
    model: Any,
    vcf: str | os.PathLike,
    fasta: str | os.PathLike,
    *,
    out: str | None = None,
    tsv: str | None = None,
    maps: str | None = None,
    settings: Settings | None = None,
    variant_ids: Sequence[str] | None = None,
    source: str | None = None,
    quiet: bool = False,
    return_table: bool = True,
    command: str | None = None,
    client: Any = None,
    chunks_per_task: int = 1,
    **options: Any,
) -> pd.DataFrame | None:
    """Score the interactions of every VCF variant with the bases around it, plus ISM effect scores.

    Parameters
    ----------
    model
        Anything :func:`kipoi_dfim.load_model` accepts (a Kipoi model dir, a model object, ...).
    vcf, fasta
        Input VCF (plain or bgzipped) and reference FASTA (the .fai is built if missing).
    out, tsv, maps
        Optional outputs: annotated VCF (.vcf / .vcf.gz), the TSV table, the HDF5 of FIS tracks.
    settings : Settings, optional
        Everything that decides the numbers; or give its fields as keywords (``method="grad_input"``,
        ``window=15``, ``target="GATA1"``, ``seq_len=100`` (variable-length models), ...). See :class:`Settings`.
    variant_ids
        Only score the records with these variant IDs (as in the ``variant_id`` column).
    source
        Kipoi source of a model given by name.
    quiet
        No progress bar.
    client
        Score on a Dask cluster (:mod:`kipoi_dfim.distributed`): a ``dask.distributed.Client``, ``"local:N"``
        (a LocalCluster of N worker processes) or a scheduler address ``"tcp://HOST:PORT"``. The output is the
        same as without it, byte for byte. The model must then be given by path or Kipoi name.
    chunks_per_task
        With ``client``: VCF chunks (of ``chunk_size`` records) scored per Dask task.

    Returns
    -------
    pandas.DataFrame or None
        The TSV's table (one row per variant x ALT x target), unless ``return_table=False``.
    """
    settings = make_settings(settings, **options)
    fa = Fasta(fasta)  # cheap input checks first, so a typo in a path fails before a model is loaded
    header, _ = read_records(vcf)
    model_path = model if isinstance(model, str | os.PathLike) else None
    check_paths(inputs={"--vcf": vcf, "--fasta": fasta, "model": model_path},
                outputs={"-o": out, "--tsv": tsv, "--maps": maps})
    m = _load(model, source, settings, with_motifs=client is None)
    tidx, tnames = _resolve_targets(m, settings)
    wanted = set(variant_ids) if variant_ids is not None else None
    with _table_path(tsv, return_table) as tsv_path:
        writers = open_writers(out, tsv_path, maps, header, tnames, settings, str(model), m.seq_len, command)
        try:
            with RecordBar.records(quiet) as bar:
                fp = FilePass(writers, len(tidx), settings, bar, header.file_bytes, header.header_bytes)
                if client is None:
                    _score_file(m, vcf, fa, fp, tidx, tnames, settings, wanted)
                else:
                    _score_file_dask(client, model, source, m, vcf, fa, fp, tidx, tnames, settings, wanted,
                                     chunks_per_task)
            if wanted is not None and not fp.seen:
                raise InputError(f"none of the variant IDs {sorted(wanted)[:5]} is in the VCF", path=str(vcf))
            stats = fp.stats()
            with commit_together():  # all outputs appear at once, or none
                for w in writers:
                    w.finish(stats)
        except BaseException:
            for w in writers:
                w.abort()
            raise
        return read_table(tsv_path) if return_table else None


def _load(model: Any, source: str | None, settings: Settings, with_motifs: bool = False) -> Any:
    """The model as the settings need it (a model object loaded otherwise is refused, not silently used).

    ``with_motifs``: also load the motif set (cached), so that loading it is not a stall of the bar in chunk 1.
    """
    if with_motifs:
        resolve_motifs(settings.motifs)
    m = load_model(model, source=source, **load_options(settings))
    check_seq_len(m, settings.seq_len)
    if getattr(m, "output", settings.output) != settings.output and getattr(m, "activation", None):
        raise InputError(f"the model object was loaded with output={m.output!r} but the settings ask for "
                         f"{settings.output!r}; load it with load_model(..., output={settings.output!r})")
    if m.seq_len < 2 * settings.window + 1:
        raise InputError(f"--window {settings.window}: the model input ({m.seq_len} bp) is shorter than the window")
    return m


def _score_file_dask(client, model, source, m, vcf, fa, fp, tidx, tnames, settings, wanted, per_task) -> None:
    """The same pass on a Dask cluster. Dask is imported here only, so a run without a client never loads it."""
    from kipoi_dfim import distributed

    ref = distributed.model_ref(model, source, settings)
    with distributed.connect(client) as c:
        distributed.score_file(c, ref, fa.path, file_chunks(vcf, fa, m.seq_len, settings, wanted), fp, tidx, tnames,
                               settings, per_task)


@contextlib.contextmanager
def _table_path(tsv: str | None, return_table: bool) -> Iterator[str | None]:
    """The TSV path, or a temporary one when only the returned table is wanted."""
    if tsv or not return_table:
        yield tsv
        return
    with tempfile.TemporaryDirectory(prefix="kipoi-dfim-") as d:
        yield os.path.join(d, "table.tsv")


def run(args: Any) -> None:
    """``kipoi-dfim score-variants``."""
    score_variants(
        args.model, args.vcf, args.fasta, out=args.out, tsv=args.tsv, maps=args.maps,
        settings=Settings.from_args(args), source=args.source, quiet=args.quiet, return_table=False,
        command="kipoi-dfim " + " ".join(shlex.quote(a) for a in _without_dask(sys.argv[1:])),
        client=getattr(args, "dask", None),
    )


def _without_dask(argv: list[str]) -> list[str]:
    """The command line without ``--dask``: where a run was computed is not part of its result (same bytes)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--dask":
            skip = True
        elif not a.startswith("--dask="):
            out.append(a)
    return out


__all__ = ["score_variants", "score_windows", "score_chunk", "FilePass", "file_chunks", "make_settings", "run"]
