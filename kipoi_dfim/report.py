"""One self-contained HTML report of a ``score-variants`` run: ranked table + figures of the top variants.

The file embeds its CSS and its figures (base64 PNG) and references no URL, so it opens offline, can be mailed
or attached to a paper's supplement, and still shows the same thing in ten years. Every TSV row is in the
table, including records that were not scored (with their status), because a silently shortened list reads
as "these variants have no effect".
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from kipoi_dfim.errors import InputError
from kipoi_dfim.output.tsv import MISSING as _MISSING
from kipoi_dfim.output.tsv import STRING_COLUMNS as _TEXT_COLUMNS
from kipoi_dfim.output.tsv import TSV_COLUMNS
from kipoi_dfim.output.tsv import read_tsv as read_scored_tsv

log = logging.getLogger(__name__)

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; } h3 { font-size: 1em; }
table { border-collapse: collapse; font-size: 0.78em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.t { text-align: left; }
tr.notok td { color: #888; background: #fafafa; }
td.status-notok { color: #a33; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; font-size: 0.9em; }
dl.meta dt { font-weight: bold; } dl.meta dd { margin: 0; }
section.fig { border-top: 1px solid #ddd; margin-top: 1em; padding-top: 0.5em; }
section.fig img { max-width: 100%; height: auto; }
p.note { font-size: 0.85em; color: #555; }
"""


# ----------------------------------------------------------------------------------------------- reading
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


# ----------------------------------------------------------------------------------------------- HTML
def figure_png_base64(fig: Any, dpi: int = 80) -> str:
    """PNG bytes of a figure, base64-encoded for an ``<img src="data:...">`` (no file next to the report)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _cell(value: Any, column: str) -> str:
    if column in _TEXT_COLUMNS:
        text = "" if column in ("max_fis_base", "flags") and str(value) in _MISSING else str(value)
        return f'<td class="t">{html.escape(text)}</td>'
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "<td></td>"
    if isinstance(value, float) and np.isinf(value):
        return f"<td>{'inf' if value > 0 else '-inf'}</td>"
    if column in ("pos", "max_fis_offset"):
        return f"<td>{int(value)}</td>"
    return f"<td>{float(value):.3g}</td>"


def _table(ranked: pd.DataFrame, anchors: dict[int, str]) -> str:
    cols = list(TSV_COLUMNS) + (["flags"] if "flags" in ranked.columns else [])
    head = "<tr><th>rank</th><th>figure</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
    rows = []
    for rank, rec in enumerate(ranked.to_dict("records"), start=1):
        ok = str(rec["status"]) == "ok"
        link = anchors.get(int(rec["tsv_row"]))
        fig = f'<td class="t"><a href="#{link}">figure</a></td>' if link else "<td></td>"
        cells = []
        for c in cols:
            cell = _cell(rec[c], c)
            if c == "status" and not ok:
                cell = cell.replace('class="t"', 'class="t status-notok"')
            cells.append(cell)
        cls = "" if ok else ' class="notok"'
        rows.append(f"<tr{cls}><td>{rank}</td>{fig}{''.join(cells)}</tr>")
    return f'<table id="variants">\n<thead>{head}</thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody></table>"


def _meta(tsv: str, maps: str, attrs: dict[str, Any], ranked: pd.DataFrame) -> str:
    items: list[tuple[str, str]] = [("TSV", os.path.basename(tsv)), ("maps", os.path.basename(maps))]
    for k in ("model", "method", "window", "seed", "version"):
        if k in attrs:
            items.append((k, str(attrs[k])))
    counts = ranked["status"].astype(str).value_counts()
    items.append(("rows", f"{len(ranked)} (" + ", ".join(f"{s}: {n}" for s, n in counts.items()) + ")"))
    has_null = bool(np.isfinite(ranked["qval"].to_numpy(dtype=float)).any())
    items.append(("ranking", "q-value, then p-value, then maxAbsFIS" if has_null
                  else "maxAbsFIS (no shuffled null: no p/q-values)"))  # fmt: skip
    body = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items)
    return f'<dl class="meta">{body}</dl>'


def render_html(
    tsv: str,
    maps: str,
    ranked: pd.DataFrame,
    figures: Sequence[tuple[str, str, str]],
    attrs: dict[str, Any],
    title: str = "kipoi-dfim report",
) -> str:
    """The report page: metadata, ranked table, then one section per (anchor, heading, base64 PNG) figure."""
    anchors = {}
    for anchor, _, _ in figures:
        anchors[int(anchor.rsplit("-", 1)[1])] = anchor
    secs = [
        f'<section class="fig" id="{a}"><h3>{html.escape(h)}</h3>'
        f'<img alt="{html.escape(h)}" src="data:image/png;base64,{png}"></section>'
        for a, h, png in figures
    ]
    note = (
        "Tracks: importance of the reference (C_X) and alternate (C_X') sequence, FIS = C_X - C_X' per base, "
        "FIS at positions significant under the shuffled null; shaded column = the variant. Last row, when "
        "present: FIS for each of the three mutant bases at the variant."
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{_meta(tsv, maps, attrs, ranked)}\n"
        f"<h2>Variants ({len(ranked)} rows, ranked)</h2>\n{_table(ranked, anchors)}\n"
        f"<h2>Figures of the top {len(figures)} variants</h2>\n<p class=\"note\">{html.escape(note)}</p>\n"
        + "\n".join(secs)
        + "\n</body>\n</html>\n"
    )


def _write_atomic(text: str, out: str) -> None:
    from kipoi_dfim.output.base import atomic_path

    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


def _heading(rec: dict[str, Any]) -> str:
    return f"{rec['variant_id']}  {rec['chrom']}:{int(rec['pos'])} {rec['ref']}>{rec['alt']}  target {rec['target']}"


def _maps_row_of(maps: Any) -> dict[int, int]:
    """TSV data row -> maps row (the ``tsv_row`` dataset)."""
    return {int(r): i for i, r in enumerate(maps.index["tsv_row"].to_numpy())}


def write_report(
    tsv: str | os.PathLike,
    maps: str | os.PathLike,
    out: str | os.PathLike,
    top: int = 50,
    dpi: int = 80,
    progress: bool = True,
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
        tqdm bar on stderr while the figures are drawn.

    Returns
    -------
    str
        ``out``.
    """
    from tqdm.auto import tqdm

    from kipoi_dfim.plot import MapsFile, plot_maps_row

    tsv, maps, out = os.fspath(tsv), os.fspath(maps), os.fspath(out)
    ranked = rank_rows(read_scored_tsv(tsv))
    figures: list[tuple[str, str, str]] = []
    with MapsFile(maps) as mf:
        row_of = _maps_row_of(mf)
        n_ok = int((ranked["status"].astype(str) == "ok").sum())
        if n_ok != len(mf):
            log.warning("%s has %d rows with status ok but %s has %d maps", tsv, n_ok, maps, len(mf))
        chosen = top_variants(ranked, top)
        for rec in tqdm(chosen.to_dict("records"), desc="report figures", disable=None if progress else True):
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
            fig = plot_maps_row(mf, i, model=mf.attrs.get("model"))
            heading = _heading(rec)
            figures.append((f"fig-{int(rec['tsv_row'])}", heading, figure_png_base64(fig, dpi=dpi)))
        attrs = dict(mf.attrs)
    _write_atomic(render_html(tsv, maps, ranked, figures, attrs), out)
    return out


def run(args: Any) -> None:
    """``kipoi-dfim report SCORED.tsv --maps H5 -o report.html [--top N]``."""
    write_report(args.tsv, args.maps, args.out, top=args.top)
