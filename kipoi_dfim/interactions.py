"""``kipoi-dfim interactions``: FIS between BED features (motifs, elements) on FASTA sequences.

Each FASTA record is one model input. Every BED feature on a record is mutated in turn (filled with
background frequencies, section 2.2 of the paper) and the importance change summed over every other feature
of the record is its FIS (eq. 2), one output row per ordered (source, target) pair and scored target.

A record whose length differs from the model's input length is centre-cropped or N-padded (with a warning);
feature coordinates are shifted to the window, a feature partly outside it is clipped and one wholly
outside it gets a row with an empty score and a status saying why -- nothing is dropped silently.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyfaidx
from tqdm.auto import tqdm

from kipoi_dfim import fis as F
from kipoi_dfim import null as N
from kipoi_dfim.attribution import METHODS
from kipoi_dfim.backend import check_seq_len, load_model
from kipoi_dfim.errors import InputError
from kipoi_dfim.output.interactions_tsv import write_interactions
from kipoi_dfim.paths import check_paths
from kipoi_dfim.scoring import load_options, make_settings
from kipoi_dfim.sequence import one_hot
from kipoi_dfim.settings import Settings

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Feature:
    """One BED feature: 0-based half-open ``[start, end)`` on FASTA record ``chrom``; ``line`` is 1-based."""

    chrom: str
    start: int
    end: int
    name: str
    line: int


# --------------------------------------------------------------------------------------------- inputs
def _numbered_lines(path: str, what: str):
    """(1-based line number, line without its terminator) of a text file; unreadable -> InputError."""
    try:
        fh = open(path)  # noqa: SIM115 - closed by the with below
    except OSError as e:
        raise InputError(f"cannot read {what}: {e.strerror}", path=path) from e
    with fh:
        for n, raw in enumerate(fh, start=1):
            yield n, raw.rstrip("\n\r")


def read_bed(path: str) -> list[Feature]:
    """Read BED features (>= 3 columns; the name is column 4, else ``chrom:start-end``).

    Header lines (``#``, ``track``, ``browser``) and blank lines are skipped. Any other malformed line raises
    :class:`InputError` naming the file and line.
    """
    feats = []
    for n, line in _numbered_lines(path, "features"):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        if len(cols) < 3:
            raise InputError(f"a BED line needs at least 3 columns (chrom, start, end), got {len(cols)}",
                             path=path, line=n)
        try:
            start, end = int(cols[1]), int(cols[2])
        except ValueError as e:
            raise InputError(f"start/end must be integers, got {cols[1]!r}, {cols[2]!r}", path=path,
                             line=n) from e
        if start < 0 or end <= start:
            raise InputError(f"need 0 <= start < end, got start={start}, end={end}", path=path, line=n)
        name = cols[3].strip() if len(cols) > 3 and cols[3].strip() else f"{cols[0]}:{start}-{end}"
        feats.append(Feature(cols[0], start, end, name, n))
    return feats


def _validate_fasta(path: str) -> None:
    """Cheap line-level check so that a broken FASTA gets a message with its line number."""
    allowed = set("ACGTNacgtnRYSWKMBDHVryswkmbdhv-.*")
    seen: dict[str, int] = {}
    header_seen = False
    for n, line in _numbered_lines(path, "FASTA"):
        if line.startswith(">"):
            name = line[1:].split()[0] if line[1:].split() else ""
            if not name:
                raise InputError("FASTA header without a name", path=path, line=n)
            if name in seen:
                raise InputError(f"duplicate FASTA record {name!r} (first on line {seen[name]})", path=path,
                                 line=n)
            seen[name] = n
            header_seen = True
        elif line.strip():
            if not header_seen:
                raise InputError("sequence before the first '>' header: not a FASTA file", path=path, line=n)
            bad = set(line.strip()) - allowed
            if bad:
                raise InputError(f"invalid sequence character(s) {''.join(sorted(bad))!r}", path=path, line=n)
    if not header_seen:
        raise InputError("no FASTA records found", path=path)


def read_fasta(path: str) -> dict[str, str]:
    """All records of a FASTA file (pyfaidx), in file order."""
    _validate_fasta(path)
    try:
        fa = pyfaidx.Fasta(path, as_raw=True, sequence_always_upper=True, rebuild=True)
    except Exception as e:  # noqa: BLE001 - pyfaidx raises several types; all are bad input here
        raise InputError(f"cannot index FASTA: {e}", path=path) from e
    with fa:
        return {name: str(fa[name][:]) for name in fa.keys()}


@dataclass(frozen=True)
class Window:
    """The model input cut from a record: window position ``p`` is record coordinate ``p + offset``."""

    seq: str
    offset: int
    status: str  # "ok", "cropped", "padded"


def fit_window(seq: str, length: int) -> Window:
    """Centre-crop (longer) or N-pad (shorter) ``seq`` to ``length``.

    Cropping keeps the centre because that is where peak-centred inputs put the signal; the extra base of an
    odd difference goes to the right end in both cases.
    """
    L = len(seq)
    if L == length:
        return Window(seq, 0, "ok")
    if L > length:
        a = (L - length) // 2
        return Window(seq[a:a + length], a, "cropped")
    left = (length - L) // 2
    return Window("N" * left + seq + "N" * (length - L - left), -left, "padded")


def _feature_span(f: Feature, w: Window, length: int) -> tuple[tuple[int, int] | None, str]:
    a, b = f.start - w.offset, f.end - w.offset
    if b <= 0 or a >= length:
        return None, "outside_model_input"
    if a < 0 or b > length:
        return (max(a, 0), min(b, length)), "clipped"
    return (a, b), "ok"


# --------------------------------------------------------------------------------------------- scoring
def _record_seed(seed: int, i: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(i)]).generate_state(1)[0])


def _targets(model: Any, targets: Any) -> list[int]:
    if targets is None:
        return list(range(len(model.targets)))
    if isinstance(targets, str | int | np.integer):
        targets = [targets]
    return [model.target_index(t) for t in targets]


def _features_by_record(records: dict[str, str], feats: list[Feature], fasta: str, features: str) -> dict:
    by_rec: dict[str, list[Feature]] = {}
    for f in feats:
        if f.chrom not in records:
            raise InputError(f"feature {f.name!r} is on {f.chrom!r}, which is not a record of {fasta}",
                             path=features, line=f.line)
        if f.end > len(records[f.chrom]):
            raise InputError(f"feature {f.name!r} ends at {f.end}, past the end of record {f.chrom!r} "
                             f"(length {len(records[f.chrom])})", path=features, line=f.line)
        by_rec.setdefault(f.chrom, []).append(f)
    for name in records:
        if name not in by_rec:
            log.info("record %s has no features: skipped", name)
    return by_rec


def _record_window(records, name, feats, L, fasta, features):
    """The record's model input and its features' spans in it (with a warning for each adjustment)."""
    w = fit_window(records[name], L)
    if w.status != "ok":
        log.warning("%s: record %s has length %d, the model takes %d: %s (window starts at %d)", fasta, name,
                    len(records[name]), L, "centre-cropped" if w.status == "cropped" else "N-padded", w.offset)
    spans_status = [_feature_span(f, w, L) for f in feats]
    for f, (sp, st) in zip(feats, spans_status, strict=True):
        if st != "ok":
            log.warning("%s line %d: feature %s is %s of the %d bp model input of record %s",
                        features, f.line, f.name, "outside" if sp is None else "partly outside", L, name)
    return one_hot(w.seq), spans_status


def feature_interactions(
    model: Any,
    fasta: str,
    features: str,
    *,
    settings: Settings | None = None,
    null_pool: str = "per_task",
    progress: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """FIS between every ordered pair of BED features on the same FASTA record.

    Parameters
    ----------
    model : SequenceModel or anything :func:`kipoi_dfim.load_model` accepts
    fasta : str
        FASTA file; each record is one model input (centre-cropped / N-padded to the model length).
    features : str
        BED file; column 1 names the FASTA record, column 4 the feature.
    settings : Settings, optional
        Or its fields as keywords: ``targets`` (or ``target``; None = all; with more than one a
        ``target_task`` column is added), ``method`` and its ``references``/``n_refs``/``steps``, ``gc`` and
        ``fill`` (how a source feature is destroyed: background frequencies or ``zero``, as the original
        code), ``null_shuffles`` (K > 0: each record's element map on K dinucleotide shuffles of its input,
        two-sided p-values of FIS by the test ``pvalue`` -- ``tail`` (default: empirical on |FIS|, a
        generalized Pareto tail beyond), ``empirical`` or ``gaussian`` (the paper's) -- against the null pooled
        per ``null_pool`` -- ``per_task`` (default),
        ``per_map`` or ``global`` -- then BH q-values over all rows), ``seed`` (record ``i`` uses
        ``SeedSequence([seed, i])``), ``batch_size``, ``seq_len`` (the input length of a model whose length is
        not fixed, e.g. Keras ``(None, 4)``).
    progress : bool
        tqdm progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns ``seq, source, target, source_start, target_start, [target_task,] fis, abs_fis, pval, qval,
        status``. Starts are the BED (record) coordinates. ``status`` is ``ok``, ``clipped`` (a feature partly
        outside the model input: its inside part was used) or ``source/target outside_model_input`` (no score).
    """
    settings = make_settings(settings, **options)
    if not hasattr(model, "seq_len"):
        model = load_model(model, **load_options(settings))
    check_seq_len(model, settings.seq_len)
    records = read_fasta(fasta)
    by_rec = _features_by_record(records, read_bed(features), fasta, features)
    tasks = _targets(model, settings.targets)
    rows, maps, nulls, insides = _score_records(model, records, by_rec, tasks, settings, fasta, features, progress)
    df = pd.DataFrame(rows, columns=["seq", "source", "target", "source_start", "target_start", "task",
                                     "fis", "status", "_i", "_j"])
    df["abs_fis"] = df["fis"].abs()
    df["pval"], df["qval"] = _pvalues(df, maps, nulls, insides, null_pool, settings.pvalue)
    cols = ["seq", "source", "target", "source_start", "target_start"]
    if len(tasks) > 1:
        df["target_task"] = [model.targets[t] for t in df["task"]]
        cols.append("target_task")
    cols += ["fis", "abs_fis", "pval", "qval", "status"]
    return df[cols].reset_index(drop=True)


def _score_records(model, records, by_rec, tasks, settings, fasta, features, progress):
    """Element maps (and their nulls) of every record and task, as pair rows."""
    kw = METHODS[settings.method].options(settings)
    common = {"method": settings.method, "fill": settings.fill, "gc": settings.gc,
              "batch_size": settings.batch_size, **kw}
    rows: list[dict[str, Any]] = []
    maps: dict[tuple, np.ndarray] = {}
    nulls: dict[tuple, np.ndarray] = {}
    insides: dict[str, list[int]] = {}
    work = [(i, name) for i, name in enumerate(records) if name in by_rec]
    bar = tqdm(total=len(work) * len(tasks), desc="interactions", disable=not progress, unit="map", file=sys.stderr)
    for i, name in work:
        x, spans_status = _record_window(records, name, by_rec[name], model.seq_len, fasta, features)
        inside = insides[name] = [k for k, (sp, _) in enumerate(spans_status) if sp is not None]
        spans = [spans_status[k][0] for k in inside]
        rseed = _record_seed(settings.seed, i)
        for t in tasks:
            m = np.full((len(by_rec[name]),) * 2, np.nan)
            if spans:
                m[np.ix_(inside, inside)] = maps[(t, name)] = F.element_map(model, x, t, spans, seed=rseed, **common)
                if settings.null_shuffles:
                    nulls[(t, name)] = N.map_null(model, x, t, elements=spans, n_shuffles=settings.null_shuffles,
                                                  seed=rseed, **common)
            rows.extend(_pair_rows(name, by_rec[name], spans_status, m, t, inside))
            bar.update(1)
    bar.close()
    return rows, maps, nulls, insides


def _pvalues(df: pd.DataFrame, maps: dict, nulls: dict, insides: dict, null_pool: str,
             kind: str) -> tuple[np.ndarray, ...]:
    """Per-row p-values of the element maps against their shuffled null; BH q-values over all rows."""
    pval, qval = np.full(len(df), np.nan), np.full(len(df), np.nan)
    if not nulls:
        return pval, qval
    pv = N.pooled_pvalues({k: maps[k] for k in nulls}, nulls, pool=null_pool, kind=kind, two_sided=True)
    where = {name: {k: j for j, k in enumerate(inside)} for name, inside in insides.items()}
    for r, (t, s, i, j) in enumerate(zip(df["task"], df["seq"], df["_i"], df["_j"], strict=True)):
        pos = where.get(s, {})
        if (t, s) in pv and i in pos and j in pos:
            pval[r] = pv[(t, s)][pos[i], pos[j]]
    ok = np.isfinite(pval)
    if ok.any():
        qval[ok] = N.bh_qvalues(pval[ok])
    return pval, qval


def _pair_rows(name, feats, spans_status, m, task, inside) -> list[dict[str, Any]]:
    rows = []
    for i, fi in enumerate(feats):
        for j, fj in enumerate(feats):
            if i == j:
                continue
            si, sj = spans_status[i][1], spans_status[j][1]
            if spans_status[i][0] is None:
                status = "source outside_model_input"
            elif spans_status[j][0] is None:
                status = "target outside_model_input"
            elif "clipped" in (si, sj):
                status = "clipped"
            else:
                status = "ok"
            rows.append({"seq": name, "source": fi.name, "target": fj.name, "source_start": fi.start,
                         "target_start": fj.start, "task": task, "fis": m[i, j], "status": status,
                         "_i": i, "_j": j})
    return rows


# --------------------------------------------------------------------------------------------- CLI
def run(args: Any) -> None:
    """Entry point of ``kipoi-dfim interactions`` (arguments declared in :mod:`kipoi_dfim.cli`)."""
    settings = Settings.from_args(args)
    check_paths(inputs={"--fasta": args.fasta, "--features": args.features}, outputs={"-o": args.out})
    model = load_model(args.model, source=args.source, **load_options(settings))
    df = feature_interactions(model, args.fasta, args.features, settings=settings, progress=not args.quiet)
    write_interactions(df, args.out)
    log.info("wrote %d rows to %s", len(df), args.out)
