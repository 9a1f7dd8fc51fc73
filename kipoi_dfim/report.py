"""One self-contained HTML report of a ``score-variants`` run: summary, figures of the top hits, full table.

What a reader needs first comes first: how many records were scored and how many are significant per target,
then the top hits with the motifs they touch (own motif on REF and ALT, interaction partner), then their
figures, then every TSV row in a sortable, filterable table (including records that were not scored, with
their status: a silently shortened list reads as "these variants have no effect").

The page is rendered from jinja2 templates (``kipoi_dfim/templates/``) with auto-escaping, so a variant ID or
a motif name cannot inject markup. It embeds its CSS, a small script (sorting, filtering) and its figures
(base64 PNG with their pixel size, so jumping to a figure lands on it before the images above have decoded)
and references no URL: it opens offline and still shows the same thing in ten years.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import struct
from collections.abc import Sequence
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kipoi_dfim.errors import InputError
from kipoi_dfim.motifs import ANNOTATION_COLUMNS, annotate_maps_rows, resolve_motifs
from kipoi_dfim.output.base import atomic_path
from kipoi_dfim.output.maps import MapsFile
from kipoi_dfim.output.tsv import MISSING as _MISSING
from kipoi_dfim.output.tsv import NUMERIC_COLUMNS as _NUMERIC_COLUMNS
from kipoi_dfim.output.tsv import TSV_COLUMNS, TSV_EXTRA
from kipoi_dfim.output.tsv import read_tsv as read_scored_tsv
from kipoi_dfim.plot import plot_maps_row

log = logging.getLogger(__name__)

ALPHA = 0.05
_MOTIF_TEXT = ("own_motif_ref", "own_motif_alt", "partner_motif")
_INT_COLUMNS = ("pos", "max_fis_offset", "maxfis_offset", "vcf_record", "vcf_line", "alt_index", "own_offset",
                "own_end", "partner_offset", "partner_end")  # fmt: skip
_FIGURE_NOTE = (
    "Tracks: importance of the reference (C_X) and alternate (C_X') sequence, FIS = C_X - C_X' per base, FIS at "
    "positions significant under the shuffled null; shaded yellow column = the variant; blue band = the own "
    "motif span, red band = the partner span, named in each track's right-hand title. Last row, when present: "
    "FIS for each of the three mutant bases at the variant."
)
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("kipoi_dfim", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def rank_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows ranked: scored ("ok") first, then q-value, p-value (ascending), maxAbsFIS (descending); NaN last.

    Why this order: q-values control the false discovery rate across the run, so they rank first; without a
    shuffled null (no p/q-values) the effect size maxAbsFIS is all there is. Ties keep the TSV order.
    """
    key = pd.DataFrame(
        {
            "notok": (df["status"].astype(str) != "ok").astype(int),
            "qval": df["qval"].astype(float),
            "pval": df["pval"].astype(float),
            "neg_fis": -df["max_abs_fis"].astype(float).abs(),
            "row": np.arange(len(df)),
        },
        index=df.index,
    )
    order = key.sort_values(["notok", "qval", "pval", "neg_fis", "row"], na_position="last", kind="mergesort")
    return df.loc[order.index].reset_index(drop=True)


def top_variants(ranked: pd.DataFrame, top: int) -> pd.DataFrame:
    """The best-ranked scored row of each of the ``top`` best variant alleles (one figure per variant allele).

    Why one per allele: a model with hundreds of targets would otherwise fill the figure list with one
    variant seen through many targets; its other targets stay in the table.
    """
    ok = ranked[ranked["status"].astype(str) == "ok"]
    first = ok.drop_duplicates(subset=["variant_id", "chrom", "pos", "ref", "alt"], keep="first")
    return first.head(max(int(top), 0))


# ----------------------------------------------------------------------------------------------- pieces
def figure_png_base64(fig: Any, dpi: int = 80) -> str:
    """PNG bytes of a figure, base64-encoded for an ``<img src="data:...">`` (no file next to the report)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def png_size(png_base64: str) -> tuple[int, int]:
    """(width, height) in pixels from a base64 PNG's IHDR chunk (the first 24 bytes)."""
    head = base64.b64decode(png_base64[:32])
    return struct.unpack(">II", head[16:24])


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and v in _MISSING)


def _num(v: Any, spec: str = ".3g") -> str:
    if _missing(v):
        return ""
    f = float(v)
    if np.isinf(f):
        return "inf" if f > 0 else "-inf"
    return format(f, spec)


def _cell(value: Any, column: str) -> tuple[str, str, str | None]:
    """(text, css class, sort value) of one table cell; numeric cells sort by their full-precision value."""
    if column not in _NUMERIC_COLUMNS:
        return ("" if _missing(value) and column != "variant_id" else str(value)), "t", None
    if _missing(value):
        return "", "", ""
    f = float(value)
    text = str(int(f)) if column in _INT_COLUMNS and np.isfinite(f) else _num(f)
    return text, "", repr(f)


def _table_columns(df: pd.DataFrame) -> list[str]:
    known = [c for c in (*TSV_COLUMNS, *TSV_EXTRA) if c in df.columns]
    motif = [c for c in ANNOTATION_COLUMNS if c in df.columns]
    other = [c for c in df.columns if c not in known and c not in motif and c != "tsv_row"]
    return known + motif + other


def _table(ranked: pd.DataFrame, anchors: dict[int, str]) -> dict[str, Any]:
    cols = _table_columns(ranked)
    rows = []
    for rank, rec in enumerate(ranked.to_dict("records"), start=1):
        ok = str(rec["status"]) == "ok"
        cells = []
        for c in cols:
            text, cls, v = _cell(rec.get(c), c)
            if c == "status" and not ok:
                cls = "t status-notok"
            cells.append((text, cls, v))
        row = int(rec["tsv_row"])
        rows.append({"rank": rank, "row": row, "ok": ok, "anchor": anchors.get(row), "cells": cells})
    qcol = 2 + cols.index("qval") if "qval" in cols else -1
    return {"columns": cols, "text_columns": [c for c in cols if c not in _NUMERIC_COLUMNS], "rows": rows,
            "qcol": qcol}


def _summary(ranked: pd.DataFrame) -> dict[str, Any]:
    status = ranked["status"].astype(str)
    ok = ranked[status == "ok"]
    q = ok["qval"].to_numpy(dtype=float)
    has_null = bool(np.isfinite(q).any())
    if "vcf_record" in ranked.columns and ranked["vcf_record"].notna().all():
        n_records = int(ranked["vcf_record"].nunique())
    else:
        n_records = int(ranked[["chrom", "pos", "variant_id"]].astype(str).drop_duplicates().shape[0])
    targets = []
    for t, g in ok.groupby(ok["target"].astype(str), sort=False):
        fis = g["max_abs_fis"].to_numpy(dtype=float)
        targets.append({"target": t, "scored": len(g), "sig": int((g["qval"].to_numpy(dtype=float) < ALPHA).sum()),
                        "max_fis": _num(np.nanmax(fis) if np.isfinite(fis).any() else np.nan)})
    not_ok = status[status != "ok"].value_counts()
    return {
        "n_records": n_records, "n_rows": len(ranked), "n_scored": len(ok), "has_null": has_null,
        "n_sig": int((q < ALPHA).sum()), "alpha": ALPHA, "targets": targets,
        "statuses": list(not_ok.items()),
        "ranking": "q-value, then p-value, then maxAbsFIS" if has_null
        else "maxAbsFIS (no shuffled null: no p/q-values)",
    }  # fmt: skip


def _motif_phrases(ann: dict[str, Any] | None) -> dict[str, str]:
    if not ann:
        return {"own": "", "own_delta": "", "partner": "", "partner_at": "", "line": ""}
    ref = str(ann.get("own_motif_ref") or "") if not _missing(ann.get("own_motif_ref")) else ""
    alt = str(ann.get("own_motif_alt") or "") if not _missing(ann.get("own_motif_alt")) else ""
    partner = str(ann.get("partner_motif") or "") if not _missing(ann.get("partner_motif")) else ""
    at = ""
    if not _missing(ann.get("partner_offset")) and not _missing(ann.get("partner_end")):
        at = f"{int(float(ann['partner_offset'])):+d}..{int(float(ann['partner_end'])):+d}"
    own = f"{ref or '-'} \u2192 {alt or '-'}"
    line = (f"own motif REF {ref or 'none'} ({_num(ann.get('own_score_ref'))} bits), ALT {alt or 'none'} "
            f"({_num(ann.get('own_score_alt'))} bits), REF motif on ALT {_num(ann.get('own_delta'), '+.3g')} bits; "
            f"partner {partner or 'none'}" + (f" at {at} bp, FIS sum {_num(ann.get('partner_fis'))}" if at else ""))
    return {"own": own, "own_delta": _num(ann.get("own_delta"), "+.3g"), "partner": partner or "-",
            "partner_at": at, "line": line}


def render_html(
    tsv: str,
    maps: str,
    ranked: pd.DataFrame,
    figures: Sequence[dict[str, Any]],
    attrs: dict[str, Any],
    annotations: dict[int, dict[str, Any]] | None = None,
    motif_note: str = "",
    summary_top: int = 10,
    title: str = "kipoi-dfim report",
) -> str:
    """The report page from ``templates/report.html.j2``.

    ``figures``: dicts with ``anchor``, ``row`` (TSV data row), ``heading``, ``png`` (base64);
    ``annotations``: TSV data row -> motif columns (from the TSV or computed from the maps).
    """
    annotations = annotations or {}
    anchors = {int(f["row"]): f["anchor"] for f in figures}
    rank_of = {int(r): i + 1 for i, r in enumerate(ranked["tsv_row"])}
    figs = []
    for n, f in enumerate(figures, start=1):
        w, h = png_size(f["png"])
        figs.append(dict(f, width=w, height=h, n=n, rank=rank_of.get(int(f["row"]), ""),
                         motifs=_motif_phrases(annotations.get(int(f["row"])))["line"]))
    hits = []
    for n, rec in enumerate(top_variants(ranked, summary_top).to_dict("records"), start=1):
        row = int(rec["tsv_row"])
        m = _motif_phrases(annotations.get(row))
        hits.append({"n": n, "rank": rank_of[row], "row": row, "anchor": anchors.get(row, f"row-{row}"),
                     "variant_id": rec["variant_id"],
                     "locus": f"{rec['chrom']}:{int(rec['pos'])} {rec['ref']}>{rec['alt']}", "target": rec["target"],
                     "qval": _num(rec["qval"], ".2g"), "max_abs_fis": _num(rec["max_abs_fis"]),
                     "logit": _num(rec.get("logit")), **m})  # fmt: skip
    provenance = [("TSV", os.path.basename(tsv)), ("maps", os.path.basename(maps))]
    provenance += [(k, str(attrs[k])) for k in ("model", "method", "window", "seed", "version") if k in attrs]
    return _ENV.get_template("report.html.j2").render(
        title=title, provenance=provenance, summary=_summary(ranked), top_hits=hits, figures=figs,
        figure_note=_FIGURE_NOTE, motif_note=motif_note, table=_table(ranked, anchors), has_motifs=bool(annotations),
    )  # fmt: skip


def _write_atomic(text: str, out: str) -> None:
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


def _heading(rec: dict[str, Any]) -> str:
    return f"{rec['variant_id']}  {rec['chrom']}:{int(rec['pos'])} {rec['ref']}>{rec['alt']}  target {rec['target']}"


def _maps_row_of(maps: Any) -> dict[int, int]:
    """TSV data row -> maps row (the ``tsv_row`` dataset)."""
    return {int(r): i for i, r in enumerate(maps.index["tsv_row"].to_numpy())}


# ----------------------------------------------------------------------------------------------- motifs
def _tsv_annotations(ranked: pd.DataFrame) -> dict[int, dict[str, Any]] | None:
    if not all(c in ranked.columns for c in _MOTIF_TEXT):
        return None
    cols = [c for c in ANNOTATION_COLUMNS if c in ranked.columns]
    return {int(r["tsv_row"]): {c: r[c] for c in cols} for r in ranked[["tsv_row", *cols]].to_dict("records")}


# ----------------------------------------------------------------------------------------------- main
def write_report(
    tsv: str | os.PathLike,
    maps: str | os.PathLike,
    out: str | os.PathLike,
    top: int = 50,
    dpi: int = 80,
    progress: bool = True,
    motifs: Any = "jaspar",
    summary_top: int = 10,
) -> str:
    """Write the self-contained HTML report of a ``score-variants`` run.

    Parameters
    ----------
    tsv : path
        TSV written by ``score-variants --tsv`` (every row goes in the table, whatever its status).
    maps : path
        HDF5 written by the same run's ``--maps`` (its ``tsv_row`` links each map to its TSV row).
    out : path
        The .html file, written atomically.
    top : int
        Number of variant alleles that get a figure (their best-ranked target).
    dpi : int
        Resolution of the embedded PNGs (80 keeps 50 figures to a few MB).
    progress : bool
        tqdm bar (one step per figure, with rate and ETA) on stderr.
    motifs : "jaspar", path, MotifSet or None
        Motifs to name the own/partner motifs of the top variants when the TSV has no motif columns:
        JASPAR CORE vertebrates (offline), a MEME/JASPAR file, or None for none.
    summary_top : int
        Rows of the summary's top-hits table.

    Returns
    -------
    str
        ``out``.
    """
    tsv, maps, out = os.fspath(tsv), os.fspath(maps), os.fspath(out)
    ranked = rank_rows(read_scored_tsv(tsv))
    annotations = _tsv_annotations(ranked)
    motif_note = "Motif columns from the TSV." if annotations is not None else ""
    figures: list[dict[str, Any]] = []
    with MapsFile(maps) as mf:
        row_of = _maps_row_of(mf)
        n_ok = int((ranked["status"].astype(str) == "ok").sum())
        if n_ok != len(mf):
            log.warning("%s has %d rows with status ok but %s has %d maps", tsv, n_ok, maps, len(mf))
        chosen = top_variants(ranked, max(top, summary_top)).to_dict("records")
        pairs = _check_rows(chosen, row_of, mf, tsv, maps)
        mset = resolve_motifs(motifs) if annotations is None and pairs else None
        if mset is not None:
            found = _annotate_with_progress(mf, [i for _, i in pairs], mset, progress)
            annotations = {int(rec["tsv_row"]): a for (rec, _), a in zip(pairs, found, strict=True)}
            motif_note = (f"Own and partner motifs of these {len(pairs)} variants: {mset.source} ({len(mset)} "
                          "motifs), the FIS spans named by Tomtom (kipoi_dfim.motifs).")  # fmt: skip
        annotations = annotations or {}
        for rec, i in tqdm(pairs[:top], desc="report figures", unit="variant", disable=not progress):
            fig = plot_maps_row(mf, i, model=mf.attrs.get("model"), motifs=annotations.get(int(rec["tsv_row"])))
            figures.append({"anchor": f"fig-{int(rec['tsv_row'])}", "row": int(rec["tsv_row"]),
                            "heading": _heading(rec), "png": figure_png_base64(fig, dpi=dpi)})  # fmt: skip
        attrs = dict(mf.attrs)
    html = render_html(tsv, maps, ranked, figures, attrs, annotations, motif_note, summary_top)
    _write_atomic(html, out)
    return out


def _annotate_with_progress(mf: Any, rows: list[int], mset: Any, progress: bool, step: int = 25) -> list[dict]:
    """Motif columns of maps ``rows`` in steps, with a bar: the first step also compiles memelite's Tomtom
    (numba; about a minute on a fresh install, cached afterwards), which would otherwise look like a hang."""
    found: list[dict] = []
    with tqdm(total=len(rows), desc="report motifs", unit="variant", disable=not progress) as bar:
        for k in range(0, len(rows), step):
            found += annotate_maps_rows(mf, rows[k : k + step], mset)
            bar.update(len(rows[k : k + step]))
    return found


def _check_rows(chosen: list[dict], row_of: dict[int, int], mf: Any, tsv: str, maps: str) -> list[tuple[dict, int]]:
    """(TSV record, maps row) of the chosen records that have a map; a map of another variant is an error."""
    pairs = []
    for rec in chosen:
        i = row_of.get(int(rec["tsv_row"]))
        if i is None:
            log.warning("no map for TSV row %d (%s); no figure", rec["tsv_row"], rec["variant_id"])
            continue
        if str(mf.index["variant_id"].iloc[i]) != str(rec["variant_id"]):
            raise InputError(
                f"maps row {i} is variant {mf.index['variant_id'].iloc[i]!r} but TSV row {rec['tsv_row']} is "
                f"{rec['variant_id']!r}: the maps file does not belong to {tsv}",
                path=maps,
            )
        pairs.append((rec, i))
    return pairs


def run(args: Any) -> None:
    """``kipoi-dfim report SCORED.tsv --maps H5 -o report.html [--top N] [--motifs FILE|jaspar|none] [--quiet]``."""
    write_report(args.tsv, args.maps, args.out, top=args.top, progress=not getattr(args, "quiet", False),
                 motifs=getattr(args, "motifs", "jaspar"))  # fmt: skip
