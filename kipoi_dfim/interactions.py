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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kipoi_dfim.errors import InputError
from kipoi_dfim.sequence import one_hot

log = logging.getLogger(__name__)

COLUMNS = ["seq", "source", "target", "source_start", "target_start", "fis", "abs_fis", "pval", "qval", "status"]


@dataclass(frozen=True)
class Feature:
    """One BED feature: 0-based half-open ``[start, end)`` on FASTA record ``chrom``; ``line`` is 1-based."""

    chrom: str
    start: int
    end: int
    name: str
    line: int


# --------------------------------------------------------------------------------------------- inputs
def read_bed(path: str) -> list[Feature]:
    """Read BED features (>= 3 columns; the name is column 4, else ``chrom:start-end``).

    Header lines (``#``, ``track``, ``browser``) and blank lines are skipped. Any other malformed line raises
    :class:`InputError` naming the file and line.
    """
    feats = []
    try:
        fh = open(path)
    except OSError as e:
        raise InputError(f"cannot read features: {e.strerror}", path=path) from e
    with fh:
        for n, raw in enumerate(fh, start=1):
            line = raw.rstrip("\n\r")
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
    try:
        fh = open(path)
    except OSError as e:
        raise InputError(f"cannot read FASTA: {e.strerror}", path=path) from e
    with fh:
        for n, raw in enumerate(fh, start=1):
            line = raw.rstrip("\n\r")
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
    import pyfaidx

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


def _targets(model: Any, target: Any) -> list[int]:
    if target is None:
        return list(range(len(model.targets)))
    if isinstance(target, str | int | np.integer):
        target = [target]
    return [model.target_index(t) for t in target]


def feature_interactions(
    model: Any,
    fasta: str,
    features: str,
    *,
    target: int | str | list | None = None,
    method: str = "deeplift",
    null_shuffles: int = 0,
    seed: int = 0,
    gc: float = 0.46,
    fill: str = "background",
    batch_size: int = 64,
    n_refs: int = 10,
    null_pool: str = "per_task",
    progress: bool = True,
) -> pd.DataFrame:
    """FIS between every ordered pair of BED features on the same FASTA record.

    Parameters
    ----------
    model : SequenceModel or anything :func:`kipoi_dfim.load_model` accepts
    fasta : str
        FASTA file; each record is one model input (centre-cropped / N-padded to the model length).
    features : str
        BED file; column 1 names the FASTA record, column 4 the feature.
    target : int, str, list or None
        Model output(s) to score; None = all. With more than one a ``target_task`` column is added.
    method : str
        Importance method (``grad_input``, ``deeplift``, ``integrated_gradients``, ``ism``).
    null_shuffles : int
        K > 0: recompute each record's element map on K dinucleotide shuffles of its input (same feature
        coordinates) and give Gaussian p-values (two-sided) against the null pooled per ``null_pool``
        (``"per_task"``: all records of a task, default; ``"per_map"``; ``"global"``), then BH q-values
        over all rows.
    seed : int
        Record ``i`` uses the seed ``SeedSequence([seed, i])`` for its references and shuffles.
    gc, fill : float, str
        Background used to destroy a source feature (``fill="zero"``: all-zero columns, as the original code).
    batch_size, n_refs : int
        Passed to the importance method (``n_refs`` DeepLIFT references).
    progress : bool
        tqdm progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns ``seq, source, target, source_start, target_start, [target_task,] fis, abs_fis, pval, qval,
        status``. Starts are the BED (record) coordinates. ``status`` is ``ok``, ``clipped`` (a feature partly
        outside the model input: its inside part was used) or ``source/target outside_model_input`` (no score).
    """
    from tqdm.auto import tqdm

    from kipoi_dfim import fis as F

    if not hasattr(model, "seq_len"):
        from kipoi_dfim import load_model

        model = load_model(model)
    if null_shuffles < 0:
        raise InputError(f"null_shuffles must be >= 0, got {null_shuffles}")
    records = read_fasta(fasta)
    feats = read_bed(features)
    by_rec: dict[str, list[Feature]] = {}
    for f in feats:
        if f.chrom not in records:
            raise InputError(f"feature {f.name!r} is on {f.chrom!r}, which is not a record of {fasta}",
                             path=features, line=f.line)
        if f.end > len(records[f.chrom]):
            raise InputError(f"feature {f.name!r} ends at {f.end}, past the end of record {f.chrom!r} "
                             f"(length {len(records[f.chrom])})", path=features, line=f.line)
        by_rec.setdefault(f.chrom, []).append(f)
    tasks = _targets(model, target)
    L = model.seq_len
    kw: dict[str, Any] = {"n_refs": n_refs} if method == "deeplift" else {}

    rows: list[dict[str, Any]] = []
    maps: dict[tuple, np.ndarray] = {}
    nulls: dict[tuple, np.ndarray] = {}
    work = [(i, name) for i, name in enumerate(records) if name in by_rec]
    for name in records:
        if name not in by_rec:
            log.info("record %s has no features: skipped", name)
    bar = tqdm(total=len(work) * len(tasks), desc="interactions", disable=not progress, unit="map")
    for i, name in work:
        w = fit_window(records[name], L)
        if w.status != "ok":
            log.warning("%s: record %s has length %d, the model takes %d: %s (window starts at %d)",
                        fasta, name, len(records[name]), L, "centre-cropped" if w.status == "cropped"
                        else "N-padded", w.offset)
        spans_status = [_feature_span(f, w, L) for f in by_rec[name]]
        for f, (sp, st) in zip(by_rec[name], spans_status, strict=True):
            if st != "ok":
                log.warning("%s line %d: feature %s is %s of the %d bp model input of record %s",
                            features, f.line, f.name, "outside" if sp is None else "partly outside", L, name)
        inside = [k for k, (sp, _) in enumerate(spans_status) if sp is not None]
        spans = [spans_status[k][0] for k in inside]
        x = one_hot(w.seq)
        rseed = _record_seed(seed, i)
        for t in tasks:
            m = np.full((len(by_rec[name]),) * 2, np.nan)
            if spans:
                sub = F.element_map(model, x, t, spans, fill, gc=gc, method=method, batch_size=batch_size,
                                    seed=rseed, **kw)
                m[np.ix_(inside, inside)] = sub
                if null_shuffles:
                    nm = F.fis_null(model, x, t, elements=spans, n_shuffles=null_shuffles, seed=rseed,
                                    method=method, fill=fill, gc=gc, batch_size=batch_size, **kw)
                    nulls[(t, name)] = nm
                    maps[(t, name)] = sub
            rows.extend(_pair_rows(name, by_rec[name], spans_status, m, t, inside))
            bar.update(1)
    bar.close()

    df = pd.DataFrame(rows, columns=["seq", "source", "target", "source_start", "target_start", "task",
                                     "fis", "status", "_i", "_j"])
    df["abs_fis"] = df["fis"].abs()
    df["pval"] = np.nan
    df["qval"] = np.nan
    if null_shuffles and maps:
        pv = F.fis_pvalues(maps, nulls, pool=null_pool, kind="gaussian", two_sided=True)
        inside_idx = {}
        for name in by_rec:
            inside_idx[name] = [k for k, f in enumerate(by_rec[name])
                                if _feature_span(f, fit_window(records[name], L), L)[0] is not None]
        full = {}
        for (t, name), p in pv.items():
            n = len(by_rec[name])
            pm = np.full((n, n), np.nan)
            pm[np.ix_(inside_idx[name], inside_idx[name])] = p
            full[(t, name)] = pm
        df["pval"] = [full[(t, s)][i, j] if (t, s) in full else np.nan
                      for t, s, i, j in zip(df["task"], df["seq"], df["_i"], df["_j"], strict=True)]
        ok = df["pval"].notna().to_numpy()
        if ok.any():
            from kipoi_dfim.null import bh_qvalues

            q = np.full(len(df), np.nan)
            q[ok] = bh_qvalues(df.loc[ok, "pval"].to_numpy())
            df["qval"] = q
    cols = ["seq", "source", "target", "source_start", "target_start"]
    if len(tasks) > 1:
        df["target_task"] = [model.targets[t] for t in df["task"]]
        cols.append("target_task")
    cols += ["fis", "abs_fis", "pval", "qval", "status"]
    return df[cols].reset_index(drop=True)


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


# --------------------------------------------------------------------------------------------- output
def write_tsv_atomic(df: pd.DataFrame, path: str) -> None:
    """Write ``df`` as a TSV (NaN as empty) through :func:`kipoi_dfim.io.atomic_path`, so that a crash never
    leaves a half-written file under the final name."""
    from kipoi_dfim.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        df.to_csv(fh, sep="\t", index=False, na_rep="", float_format="%.6g")


def run(args: Any) -> None:
    """Entry point of ``kipoi-dfim interactions`` (arguments declared in :mod:`kipoi_dfim.cli`)."""
    from kipoi_dfim import load_model

    model = load_model(args.model, source=args.source, output=args.output)
    df = feature_interactions(
        model, args.fasta, args.features, target=args.target, method=args.method,
        null_shuffles=args.null_shuffles, seed=args.seed, gc=args.gc, fill=args.fill,
        batch_size=args.batch_size, n_refs=args.n_refs, progress=not args.quiet,
    )
    write_tsv_atomic(df, args.out)
    log.info("wrote %d rows to %s", len(df), args.out)
