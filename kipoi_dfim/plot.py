"""Figures of variant interactions: the paper's Figs. 4-5 (tracks + DFIM heatmap) and Fig. 8 (aggregated map).

Everything here takes numpy arrays and returns a :class:`matplotlib.figure.Figure` built without pyplot (the
Agg canvas), so drawing works headless, in a loop over thousands of variants without leaking pyplot state,
and inside the HTML report. ``kipoi-dfim plot`` (:func:`run`) draws one variant from a ``score-variants --maps``
HDF5 file (layout in docs/architecture.md) or scores that single variant first and then draws it.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from kipoi_dfim.errors import InputError
from kipoi_dfim.indels import allele_event
from kipoi_dfim.motifs import annotate_maps_rows, resolve_motifs
from kipoi_dfim.output.base import atomic_path
from kipoi_dfim.output.maps import MapsFile
from kipoi_dfim.scoring import score_variants
from kipoi_dfim.sequence import ALPHABET
from kipoi_dfim.settings import Settings
from kipoi_dfim.variants import Variant, read_records

log = logging.getLogger(__name__)

#: gid of the shaded column marking the variant on every track (tests and users can find it by gid)
VARIANT_GID = "variant"
_FIGURE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
_VARIANT_COLOR = "#f2c14e"

# ----------------------------------------------------------------------------------------------- labels
def position_base_labels(offsets: Sequence[int], bases: str = ALPHABET) -> list[str]:
    """Labels ``"A@-3"`` for every (position, base) pair, position-major, matching a (D, 4) array raveled.

    Why: DFIM rows/columns are (base, position) pairs; naming them base@offset keeps the heatmap readable
    and is the order ``array.reshape(D * 4)`` produces.
    """
    return [f"{b}@{int(o):+d}" if o else f"{b}@0" for o in offsets for b in bases]


def observed_base_labels(offsets: Sequence[int], seq: np.ndarray) -> list[str]:
    """``"A@-3"`` labels naming the observed base of a one-hot window (D, 4) at each offset ('N' if none)."""
    seq = np.asarray(seq)
    letters = np.array(list(ALPHABET + "N"))
    idx = np.where(seq.sum(-1) > 0, seq.argmax(-1), 4)
    return [f"{letters[i]}@{int(o):+d}" if o else f"{letters[i]}@0" for i, o in zip(idx, offsets, strict=True)]


# ----------------------------------------------------------------------------------------------- helpers
def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout=None)
    FigureCanvasAgg(fig)
    return fig


def _default_offsets(d: int) -> np.ndarray:
    return np.arange(d) - d // 2


def _as_track(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 4:
        raise InputError(f"{name} must be an array (D, 4) of per-base values in ACGT order, got shape {x.shape}")
    return x


def _letters(values: np.ndarray, offsets: np.ndarray) -> pd.DataFrame:
    """(D, 4) values -> the DataFrame logomaker draws (index = bp offsets, NaN drawn as nothing)."""
    return pd.DataFrame(np.nan_to_num(values, nan=0.0), columns=list(ALPHABET), index=np.asarray(offsets, int))


def _draw_logo(ax: Axes, values: np.ndarray, offsets: np.ndarray) -> Any:
    import logomaker  # imported here: it pulls pyplot, which `kipoi-dfim --help` should not pay for

    with warnings.catch_warnings():  # an all-zero track (no significant FIS) makes logomaker warn about ylim
        warnings.filterwarnings("ignore", message="Attempting to set identical low and high ylims")
        logo = logomaker.Logo(_letters(values, offsets), ax=ax, color_scheme="classic", baseline_width=0.6)
    logo.style_spines(visible=False)
    logo.style_spines(spines=["left", "bottom"], visible=True)
    return logo


def mark_variant(ax: Axes, variant_offset: float = 0, label: str | None = None, width: int = 1) -> None:
    """Shade the variant's column(s) (gid :data:`VARIANT_GID`) and optionally write ``ref>alt`` above it."""
    ax.axvspan(variant_offset - 0.5, variant_offset + width - 0.5, color=_VARIANT_COLOR, alpha=0.35, zorder=-5,
               lw=0, gid=VARIANT_GID)  # fmt: skip
    if label:
        ax.text(variant_offset + (width - 1) / 2, 1.02, label, transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=9, fontweight="bold", color="#8a5a00", gid="variant_label")  # fmt: skip


def mark_indel(ax: Axes, ref: str, alt: str) -> None:
    """On the alternate track (drawn in reference coordinates), mark what an indel changed (gid ``indel``).

    Deleted bases have no alternate base and are hatched; an insertion (the ALT bases of the event, which have
    no reference position) is a vertical bar between the two reference bases it went between, labelled with
    the inserted sequence.
    """
    ev = allele_event(ref, alt)
    if ev.ref_len:
        ax.axvspan(ev.start - 0.5, ev.start + ev.ref_len - 0.5, facecolor="none", edgecolor="0.35", hatch="///",
                   lw=0, zorder=-4, gid="indel")  # fmt: skip
    if ev.alt_len:
        ins = alt.upper()[ev.start : ev.start + ev.alt_len]
        x = ev.start - 0.5 + ev.ref_len
        ax.axvline(x, color="#b2182b", lw=1.6, zorder=3, gid="indel")
        label = ("+" if not ev.ref_len else "->") + (ins if len(ins) <= 12 else f"{ins[:10]}..({len(ins)} bp)")
        ax.text(x, 0.98, label, transform=ax.get_xaxis_transform(), ha="left", va="top", fontsize=8,
                color="#b2182b", gid="indel_label")  # fmt: skip


def _symmetric_ylim(axes: Sequence[Axes], tracks: Sequence[np.ndarray]) -> None:
    """Same y range on tracks that are compared by eye (ref vs alt; FIS vs significant FIS)."""
    lo = min(0.0, *(float(np.nanmin(np.nan_to_num(t, nan=0.0).clip(max=0).sum(1))) for t in tracks))
    hi = max(0.0, *(float(np.nanmax(np.nan_to_num(t, nan=0.0).clip(min=0).sum(1))) for t in tracks))
    if hi - lo <= 0:
        lo, hi = -1.0, 1.0
    pad = 0.08 * (hi - lo)
    for ax in axes:
        ax.set_ylim(lo - pad if lo < 0 else lo, hi + pad)


def fis_letters(
    fis: np.ndarray | None,
    imp_ref: np.ndarray,
    imp_alt: np.ndarray,
    seq: np.ndarray | None = None,
    variant_index: int | None = None,
) -> np.ndarray:
    """Per-base FIS letters (D, 4): imp_ref - imp_alt, or a per-position FIS placed on the observed base.

    Why: away from the variant both sequences carry the same base, so imp_ref - imp_alt is non-zero only at
    that base and its row sum is the per-position FIS; drawing it as a letter shows *which* base interacts.
    At the variant itself the two sequences differ and the difference is not an interaction: it is zeroed.
    """
    if fis is None:
        letters = imp_ref - imp_alt
    else:
        fis = np.asarray(fis, dtype=np.float64)
        if fis.ndim == 2:
            letters = _as_track(fis, "fis").copy()
        else:
            if seq is None:
                seq = np.eye(4)[np.argmax(np.abs(imp_ref) + np.abs(imp_alt), axis=1)]
            seq = _as_track(seq, "seq")
            if fis.shape != (seq.shape[0],):
                raise InputError(f"fis must have shape (D,) = ({seq.shape[0]},) or (D, 4), got {fis.shape}")
            letters = np.nan_to_num(fis, nan=0.0)[:, None] * (seq > 0)
    letters = np.nan_to_num(np.asarray(letters, dtype=np.float64), nan=0.0)
    if variant_index is not None:
        letters[variant_index] = 0.0
    return letters


def significant_mask(
    d: int, fis_significant: np.ndarray | None = None, pvalues: np.ndarray | None = None, alpha: float = 0.05
) -> np.ndarray | None:
    """Boolean (D,) of significant positions: the given mask, or p < alpha (NaN p-values are not significant).

    Returns None when neither is given (no shuffled null was run), so the caller can say so on the figure.
    """
    if fis_significant is not None:
        mask = np.asarray(fis_significant, dtype=bool)
    elif pvalues is not None:
        p = np.asarray(pvalues, dtype=np.float64)
        mask = np.zeros(p.shape, dtype=bool)
        np.less(p, alpha, out=mask, where=np.isfinite(p))
        if not np.isfinite(p).any():
            return None
    else:
        return None
    if mask.shape != (d,):
        raise InputError(f"significance mask/p-values must have shape ({d},), got {mask.shape}")
    return mask


# ----------------------------------------------------------------------------------------------- tracks
def plot_delta_tracks(
    imp_ref: np.ndarray,
    imp_alt: np.ndarray,
    fis: np.ndarray | None = None,
    offsets: Sequence[int] | None = None,
    fis_significant: np.ndarray | None = None,
    pvalues: np.ndarray | None = None,
    alpha: float = 0.05,
    variant_offset: int = 0,
    variant_width: int = 1,
    ref: str | None = None,
    alt: str | None = None,
    seq: np.ndarray | None = None,
    title: str | None = None,
    fig: Figure | None = None,
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """Draw the four tracks of the paper's Figs. 4-5: C_X, C_X', FIS and the significant FIS only.

    Parameters
    ----------
    imp_ref, imp_alt : array (D, 4)
        Importance of the observed bases of the reference and the alternate window (zero elsewhere).
    fis : array (D,) or (D, 4), optional
        FIS per position (placed on the observed base of ``seq``) or per base; default ``imp_ref - imp_alt``.
        Drawn as a letter logo: which base the variant talks to, and with which sign.
    offsets : sequence of int, optional
        bp relative to the variant for each of the D positions (default centred: ``arange(D) - D // 2``).
    fis_significant : bool array (D,), optional
        Positions to keep on the fourth track; else ``pvalues < alpha``; with neither the track says that
        no shuffled null was computed (an empty track would look like "nothing is significant").
    variant_offset : int
        Offset of the variant, shaded on every track and labelled ``ref>alt``.
    variant_width : int
        Bases substituted (len(REF) of an MNV); their FIS is not drawn (not an interaction).
    ref, alt : str, optional
        Alleles for the label.
    seq : array (D, 4), optional
        One-hot reference window; places a (D,) ``fis`` on the observed base.
    title : str, optional
        Figure title.
    fig, axes : optional
        Draw into 4 given axes, or into a (new, empty) figure; default a new 12 x 7 in figure.

    Returns
    -------
    matplotlib.figure.Figure
        Four axes sharing the x axis (bp relative to the variant).
    """
    imp_ref, imp_alt, offsets = _checked_tracks(imp_ref, imp_alt, offsets)
    d = imp_ref.shape[0]
    letters = fis_letters(fis, imp_ref, imp_alt, seq=seq)
    letters[(offsets >= variant_offset) & (offsets < variant_offset + variant_width)] = 0.0
    mask = significant_mask(d, fis_significant, pvalues, alpha)
    sig = letters * mask[:, None] if mask is not None else np.zeros_like(letters)
    axes = _four_axes(fig, axes, d)
    label = f"{ref}>{alt}" if ref is not None and alt is not None else None
    titles = [
        "importance, reference sequence (C_X)",
        "importance, alternate sequence (C_X')",
        "FIS = C_X - C_X'",
        f"significant FIS (p < {alpha:g})" if fis_significant is None else "significant FIS",
    ]
    ylabels = ["C_X", "C_X'", "FIS", "FIS"]
    for ax, values, t, yl in zip(axes, [imp_ref, imp_alt, letters, sig], titles, ylabels, strict=True):
        _draw_logo(ax, values, offsets)
        mark_variant(ax, variant_offset, label if ax is axes[0] else None, width=variant_width)
        ax.set_title(t, loc="left", fontsize=9)
        ax.set_ylabel(yl, fontsize=8)
        ax.tick_params(labelsize=7)
    if mask is None:
        axes[3].text(0.5, 0.5, "no shuffled null: run score-variants with --null-shuffles", ha="center",
                     va="center", transform=axes[3].transAxes, fontsize=8, color="0.4", gid="no_null")  # fmt: skip
    _symmetric_ylim(axes[:2], [imp_ref, imp_alt])
    _symmetric_ylim(axes[2:], [letters, sig])
    _offset_axis(axes, offsets)
    if title:
        axes[0].figure.suptitle(title, fontsize=10)
    return axes[0].figure


def _checked_tracks(imp_ref, imp_alt, offsets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    imp_ref = _as_track(imp_ref, "imp_ref")
    imp_alt = _as_track(imp_alt, "imp_alt")
    if imp_ref.shape != imp_alt.shape:
        raise InputError(f"imp_ref {imp_ref.shape} and imp_alt {imp_alt.shape} must have the same shape")
    d = imp_ref.shape[0]
    offsets = _default_offsets(d) if offsets is None else np.asarray(offsets, dtype=int)
    if offsets.shape != (d,):
        raise InputError(f"offsets must have shape ({d},), got {offsets.shape}")
    return imp_ref, imp_alt, offsets


def _four_axes(fig: Figure | None, axes: Sequence[Axes] | None, d: int) -> list[Axes]:
    """The 4 track axes: given, or made in ``fig`` (or a new figure sized for ``d`` positions)."""
    if axes is None:
        fig = fig if fig is not None else _new_figure((max(8.0, 0.32 * d + 2), 7.0))
        axes = fig.subplots(4, 1, sharex=True, gridspec_kw={"hspace": 0.45})
    axes = list(axes)
    if len(axes) != 4:
        raise InputError(f"plot_delta_tracks needs 4 axes, got {len(axes)}")
    return axes


def _offset_axis(axes: Sequence[Axes], offsets: np.ndarray) -> None:
    """Shared x axis in bp relative to the variant, labelled on the last track only."""
    axes[0].set_xlim(offsets.min() - 0.5, offsets.max() + 0.5)
    step = 5 if len(offsets) > 25 else 1
    axes[-1].set_xticks([o for o in offsets if o % step == 0])
    axes[-1].set_xlabel("bp relative to the variant", fontsize=8)
    for ax in axes:
        ax.tick_params(axis="x", labelbottom=ax is axes[-1])


# ----------------------------------------------------------------------------------------------- heatmaps
def _heatmap(
    ax: Axes,
    data: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    cmap: str,
    vmax: float | None,
    cbar_label: str,
    x: Sequence[float] | None = None,
) -> Any:
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        raise InputError(f"a heatmap needs a 2-D array, got shape {data.shape}")
    if len(row_labels) != data.shape[0] or len(col_labels) != data.shape[1]:
        raise InputError(
            f"labels ({len(row_labels)} rows, {len(col_labels)} columns) do not match the array {data.shape}"
        )
    finite = data[np.isfinite(data)]
    if vmax is None:
        vmax = float(np.abs(finite).max()) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    import matplotlib

    cm = matplotlib.colormaps[cmap].with_extremes(bad="0.85")
    if x is None:
        xs = np.arange(data.shape[1], dtype=float)
    else:
        xs = np.asarray(x, dtype=float)
    step = (xs[1] - xs[0]) if len(xs) > 1 else 1.0
    extent = (xs[0] - step / 2, xs[-1] + step / 2, data.shape[0] - 0.5, -0.5)
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cm, norm=TwoSlopeNorm(0.0, -vmax, vmax), aspect="auto",
                   interpolation="nearest", extent=extent)  # fmt: skip
    box = ax.get_position()
    fig_w, fig_h = ax.figure.get_size_inches()
    col_pt = 72 * box.width * fig_w / max(len(col_labels), 1)  # room per column, in points
    row_pt = 72 * box.height * fig_h / max(len(row_labels), 1)
    ax.set_xticks(xs, labels=list(col_labels), rotation=90, fontsize=float(np.clip(0.8 * col_pt, 4, 8)))
    ax.set_yticks(np.arange(data.shape[0]), labels=list(row_labels), fontsize=float(np.clip(0.8 * row_pt, 4, 8)))
    cax = ax.inset_axes([1.01, 0.0, 0.015, 1.0])
    cbar = ax.figure.colorbar(im, cax=cax)
    cbar.set_label(cbar_label, fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    return im


def plot_dfim(
    dfim: np.ndarray,
    source_labels: Sequence[str],
    target_labels: Sequence[str],
    ax: Axes | None = None,
    vmax: float | None = None,
    cmap: str = "RdBu_r",
    title: str | None = None,
    cbar_label: str = "FIS",
    x: Sequence[float] | None = None,
) -> Figure:
    """DFIM heatmap (row 5 of Figs. 4-5): FIS of each target (columns) given each source mutation (rows).

    Parameters
    ----------
    dfim : array (S, T)
        FIS, rows = source mutations, columns = targets (e.g. 4 * D columns labelled by
        :func:`position_base_labels`). NaN cells are grey.
    source_labels, target_labels : sequence of str
        Tick labels, e.g. ``"G>T@0"`` and ``"A@-3"``.
    ax : Axes, optional
        Draw here (a colourbar is inset to its right, so the axis keeps its width and stays aligned with
        tracks above it); default a new figure.
    vmax : float, optional
        Colour limit; default max |dfim|. The diverging colormap is centred at 0 because FIS is signed:
        red = the mutation lowers the target's importance, blue = raises it.
    x : sequence of float, optional
        Evenly spaced x coordinates of the columns (e.g. bp offsets) to share an x axis with tracks.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if ax is None:
        n_cols = len(target_labels)
        fig = _new_figure((max(6.0, 0.16 * n_cols + 2.5), max(3.0, 0.3 * len(source_labels) + 2.2)))
        ax = fig.add_subplot()
    _heatmap(ax, dfim, source_labels, target_labels, cmap, vmax, cbar_label, x=x)
    ax.set_xlabel("target (base@bp)", fontsize=8)
    ax.set_ylabel("source mutation", fontsize=8)
    if title:
        ax.set_title(title, loc="left", fontsize=9)
    return ax.figure


def plot_aggregated_map(
    matrix: np.ndarray | pd.DataFrame,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    counts: np.ndarray | None = None,
    ax: Axes | None = None,
    vmax: float | None = None,
    cmap: str = "RdBu_r",
    annotate: bool = True,
    title: str | None = None,
    cbar_label: str = "mean FIS",
    xlabel: str | None = None,
    ylabel: str | None = None,
    value: str = "mean_fis",
) -> Figure:
    """Aggregated interaction map in the style of the paper's Fig. 8: mean FIS between feature identities.

    Parameters
    ----------
    matrix : array (R, C) or DataFrame
        Mean FIS of target identity (columns) given source identity (rows), e.g. motif x motif or base x base
        (a wide DataFrame brings its index/columns as labels). A long table from
        :func:`kipoi_dfim.fis.aggregate_fis` / ``marginalise_offsets`` (a ``value`` column, default
        ``mean_fis``, with ``n``) is pivoted: columns = ``target`` (or ``offset``), rows = the other keys.
    row_labels, col_labels : sequence of str, optional
        Labels (required for an array).
    counts : int array (R, C), optional
        Number of pairs averaged in each cell, written under the value (a mean over 3 pairs is not a mean
        over 3000).
    annotate : bool
        Write the value in each cell (the paper's figure is read by its numbers as much as its colours).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(matrix, pd.DataFrame) and value in matrix.columns:
        matrix, rows, cols, n = _pivot_aggregate(matrix, value)
        row_labels = rows if row_labels is None else row_labels
        col_labels = cols if col_labels is None else col_labels
        counts = n if counts is None else counts
    if isinstance(matrix, pd.DataFrame):
        row_labels = [str(r) for r in matrix.index] if row_labels is None else row_labels
        col_labels = [str(c) for c in matrix.columns] if col_labels is None else col_labels
        matrix = matrix.to_numpy(dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    if row_labels is None or col_labels is None:
        raise InputError("plot_aggregated_map needs row_labels and col_labels for an array (or a DataFrame)")
    if counts is not None and np.shape(counts) != matrix.shape:
        raise InputError(f"counts {np.shape(counts)} must have the shape of the matrix {matrix.shape}")
    if ax is None:
        fig = _new_figure((max(4.0, 0.7 * matrix.shape[1] + 2.5), max(3.0, 0.55 * matrix.shape[0] + 1.5)))
        ax = fig.add_subplot()
    im = _heatmap(ax, matrix, row_labels, col_labels, cmap, vmax, cbar_label)
    long_labels = max((len(str(c)) for c in col_labels), default=0) > 3
    for lab in ax.get_xticklabels():
        lab.set_rotation(45 if long_labels else 0)
        lab.set_ha("right" if long_labels else "center")
    if annotate and matrix.size <= 400:
        norm = im.norm
        for (i, j), v in np.ndenumerate(matrix):
            if not np.isfinite(v):
                continue
            txt = f"{v:.2g}" if counts is None else f"{v:.2g}\nn={int(counts[i, j])}"
            dark = abs(norm(v) - 0.5) > 0.3
            ax.text(j, i, txt, ha="center", va="center", fontsize=7, color="white" if dark else "black",
                    gid="cell_value")  # fmt: skip
    ax.set_xlabel(xlabel if xlabel is not None else "target", fontsize=8)
    ax.set_ylabel(ylabel if ylabel is not None else "source", fontsize=8)
    if title:
        ax.set_title(title, loc="left", fontsize=9)
    return ax.figure


_AGG_STATS = ("n", "mean_fis", "mean_abs_fis")


def _pivot_aggregate(table: pd.DataFrame, value: str) -> tuple[np.ndarray, list[str], list[str], np.ndarray | None]:
    """Long aggregate table -> (matrix, row labels, column labels, counts)."""
    col = "offset" if "offset" in table.columns else "target"
    if col not in table.columns:
        raise InputError(f"an aggregate table needs a 'target' or 'offset' column; it has {list(table.columns)}")
    keys = [c for c in table.columns if c not in (col, value, *_AGG_STATS)]
    t = table.assign(_row="all") if not keys else table.assign(_row=table[keys].astype(str).agg(" | ".join, axis=1))
    wide = t.pivot_table(index="_row", columns=col, values=value, aggfunc="mean", sort=True)
    counts = None
    if "n" in t.columns:
        counts = t.pivot_table(index="_row", columns=col, values="n", aggfunc="sum", sort=True)
        counts = counts.reindex(index=wide.index, columns=wide.columns).fillna(0).to_numpy(dtype=int)
    return (wide.to_numpy(dtype=np.float64), [str(r) for r in wide.index], [str(c) for c in wide.columns], counts)


def _fmt(x: Any, spec: str = ".3g") -> str:
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "NA" if not np.isfinite(xf) else format(xf, spec)


def _crop(r: dict[str, Any], flank: int | None) -> dict[str, Any]:
    """Keep offsets -flank..+flank of every track of a row (the stored flank may be wider than the targets)."""
    if flank is None:
        return r
    keep = np.abs(r["offsets"]) <= int(flank)
    r = dict(r, offsets=r["offsets"][keep])
    for k in ("seq_ref", "seq_alt", "imp_ref", "imp_alt", "fis", "fis_pval", "alt_offset"):
        if k in r:
            r[k] = r[k][keep]
    if "fis_all_alts" in r:
        r["fis_all_alts"] = r["fis_all_alts"][:, keep]
    return r


#: gid of the shaded own-motif and partner spans (tests and users can find them by gid)
MOTIF_GID = "motif_span"
_OWN_COLOR, _PARTNER_COLOR = "#4c78a8", "#b8336a"


def _motif_text(label: Any, score: Any = None, unit: str = "bits") -> str:
    name = "" if label is None or (isinstance(label, float) and np.isnan(label)) else str(label)
    if not name:
        return "no motif match"
    return name + (f" ({_fmt(score)} {unit})" if score is not None and np.isfinite(float(score)) else "")


def label_motifs(axes: Sequence[Axes], ann: Mapping[str, Any]) -> None:
    """Name the motifs over the logo tracks: own motif on C_X (REF) and C_X' (ALT), partner on FIS.

    ``ann`` holds the columns of :func:`kipoi_dfim.motifs.annotate_variants` for the drawn row. The spans
    are shaded (gid :data:`MOTIF_GID`) and the names go in each track's right-hand title, where they do not
    cover letters.
    """

    def span(ax: Axes, a: Any, b: Any, color: str) -> None:
        if a is not None and b is not None and np.isfinite(float(a)) and np.isfinite(float(b)):
            ax.axvspan(float(a) - 0.5, float(b) + 0.5, color=color, alpha=0.12, zorder=-6, lw=0, gid=MOTIF_GID)

    own = (ann.get("own_offset"), ann.get("own_end"))
    part = (ann.get("partner_offset"), ann.get("partner_end"))
    axes[0].set_title("own motif (REF): " + _motif_text(ann.get("own_motif_ref"), ann.get("own_score_ref")),
                      loc="right", fontsize=9, color=_OWN_COLOR)
    axes[1].set_title("own motif (ALT): " + _motif_text(ann.get("own_motif_alt"), ann.get("own_score_alt")),
                      loc="right", fontsize=9, color=_OWN_COLOR)
    where = ""
    if part[0] is not None and np.isfinite(float(part[0])):
        where = f" at {int(part[0]):+d}..{int(part[1]):+d} bp"
    axes[2].set_title("partner: " + _motif_text(ann.get("partner_motif"), ann.get("partner_fis"), "FIS") + where,
                      loc="right", fontsize=9, color=_PARTNER_COLOR)
    for ax in axes[:2]:
        span(ax, *own, _OWN_COLOR)
    for ax in axes[2:4]:
        span(ax, *part, _PARTNER_COLOR)


def _mark_window(ax: Axes, window: int) -> None:
    for x in (-window - 0.5, window + 0.5):
        ax.axvline(x, color="0.5", lw=0.8, ls="--", zorder=-4, gid="target_window")


def plot_maps_row(
    maps: MapsFile, i: int, model: str | None = None, flank: int | None = None,
    motifs: Mapping[str, Any] | None = None,
) -> Figure:
    """Figure of row ``i`` of a maps file: the four tracks, plus a 3 x D DFIM heatmap with ``fis_all_alts``.

    ``flank`` (bp each side) defaults to the file's ``window`` attribute: the targets that were scored (the
    stored tracks may extend further, for context). Wider views mark the target window with dashed lines.
    ``motifs``: this row's :func:`kipoi_dfim.motifs.annotate_variants` columns, named over the tracks.
    """
    window = maps.attrs.get("window")
    if flank is None and window is not None:
        flank = int(window)
    r = _crop(maps.row(i), flank)
    offsets = r["offsets"]
    d = len(offsets)
    has_dfim = "fis_all_alts" in r and bool(np.isfinite(r["fis_all_alts"]).any())  # SNVs only
    n_rows = 5 if has_dfim else 4
    fig = _new_figure((max(9.0, 0.34 * d + 2.5), 8.8 if has_dfim else 7.0))
    ratios = [1, 1, 1, 1] + ([0.9] if has_dfim else [])
    axes = fig.subplots(n_rows, 1, sharex=True, gridspec_kw={"hspace": 0.55, "height_ratios": ratios})
    plot_delta_tracks(
        r["imp_ref"], r["imp_alt"], fis=r["fis"], offsets=offsets, pvalues=r["fis_pval"], ref=r["ref"],
        alt=r["alt"], seq=r["seq_ref"], axes=axes[:4], variant_width=max(len(str(r["ref"])), 1),
    )  # fmt: skip
    if len(str(r["ref"])) != len(str(r["alt"])):  # indel: the alternate track is aligned (maps' alt_offset)
        mark_indel(axes[1], str(r["ref"]), str(r["alt"]))
    if motifs is not None:
        label_motifs(axes[:4], motifs)
    if has_dfim:
        ax = axes[4]
        bases = r.get("all_alts_bases") or [b for b in ALPHABET if b != r["ref"]][:3]
        src = [f"{r['ref']}>{b}@0" for b in bases]
        plot_dfim(r["fis_all_alts"], src, observed_base_labels(offsets, r["seq_ref"]), ax=ax, x=offsets,
                  title="DFIM: FIS of each target for each mutant base at the variant")  # fmt: skip
        for a in axes[:4]:
            a.tick_params(axis="x", labelbottom=False)
        axes[3].set_xlabel("")
        ax.set_xlabel("target (observed base@bp relative to the variant)", fontsize=8)
        mark_variant(ax, 0)
    if window is not None and d and int(window) < int(np.abs(offsets).max()):
        for a in axes:
            _mark_window(a, int(window))
    method = maps.attrs.get("method")
    head = f"{r['variant_id']}  {r['chrom']}:{r['pos']} {r['ref']}>{r['alt']}  target {r['target']}"
    sub = (f"maxAbsFIS {_fmt(r['max_abs_fis'])}   p {_fmt(r['pval'], '.2g')}   q {_fmt(r['qval'], '.2g')}"
           + (f"   method {method}" if method else "") + (f"   model {model}" if model else ""))  # fmt: skip
    fig.suptitle(f"{head}\n{sub}", fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.93, top=0.9 if has_dfim else 0.88, bottom=0.1)
    return fig


def plot_variant(
    maps: str | os.PathLike | Mapping[str, Any] | MapsFile,
    variant_id: str,
    target: str | int | None = None,
    alt: str | None = None,
    model: str | None = None,
    flank: int | None = None,
) -> Figure:
    """One variant's figure from a ``score-variants --maps`` file, without recomputing anything.

    Parameters
    ----------
    maps : path, dict or MapsFile
        The HDF5 written by ``score-variants --maps`` (layout in docs/architecture.md), or a dict with the
        same datasets.
    variant_id : str
        The VCF ID (as in the TSV) or ``chrom:pos:ref:alt``.
    target : str or int, optional
        Model output (label, or index into the file's ``targets`` attribute). Default: the row of this variant
        with the largest maxAbsFIS, i.e. the most interacting target / ALT.
    alt : str, optional
        ALT allele of a multi-allelic record.
    model : str, optional
        Only written in the title.
    flank : int, optional
        bp shown each side of the variant; default the file's ``window`` (the scored targets).

    Returns
    -------
    matplotlib.figure.Figure
        Tracks C_X, C_X', FIS, significant FIS, and the DFIM heatmap when the file has ``fis_all_alts``.
    """
    if isinstance(maps, MapsFile):
        return plot_maps_row(maps, maps.find(variant_id, target=target, alt=alt), model=model, flank=flank)
    with MapsFile(maps) as m:
        return plot_maps_row(m, m.find(variant_id, target=target, alt=alt), model=model, flank=flank)


# ----------------------------------------------------------------------------------------------- saving
def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> None:
    """Write a figure atomically (temp file in the same directory, then ``os.replace``) as .png/.pdf/.svg.

    Why: a crashed or interrupted run never leaves a truncated figure behind under the requested name.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FIGURE_FORMATS:
        raise InputError(f"unknown figure format {ext or '(none)'!r}; use .png, .pdf or .svg", path=path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=_FIGURE_FORMATS[ext], dpi=dpi, bbox_inches="tight", pad_inches=0.1)


# ----------------------------------------------------------------------------------------------- CLI
def _resolve_vcf_variant(vcf: str, variant: str, n_known: int = 5) -> str:
    """The ``variant_id`` (as score-variants names it) of ``variant`` (an ID or chrom:pos:ref:alt) in the VCF.

    Checked before any model is loaded, so a typo fails in a second with ids that do exist.
    """
    known: list[str] = []
    _, records = read_records(vcf)
    for rec in records:
        for j, alt in enumerate(rec.alts or ["."]):
            v = Variant(record_index=rec.index, alt_index=j, line=rec.line, chrom=rec.chrom, pos=rec.pos or 0,
                        ref=rec.ref, alt=alt, vcf_id=rec.vcf_id)
            if variant in (v.variant_id, f"{v.chrom}:{v.pos}:{v.ref}:{v.alt}"):
                return v.variant_id
            if len(known) < n_known and v.variant_id not in known:
                known.append(v.variant_id)
    raise InputError(f"variant {variant!r} is not in the VCF; ids that exist include: {', '.join(known)}", path=vcf)


def _score_one_variant(args: Any, variant_id: str, maps_path: str) -> None:
    """Score only ``variant_id`` with the command's settings (and all three alternative bases, for the DFIM
    heatmap) into a maps file."""
    score_variants(args.model, args.vcf, args.fasta, maps=maps_path, variant_ids=[variant_id],
                   settings=Settings.from_args(args).replace(all_alts=True), source=args.source, quiet=args.quiet,
                   return_table=False)


def _motif_annotation(maps: MapsFile, i: int, motifs: Any) -> dict[str, Any] | None:
    """Own/partner motif columns of maps row ``i`` (None without motifs)."""
    return annotate_maps_rows(maps, [i], motifs)[0] if motifs is not None else None


def figure_for(args: Any, motifs: Any = None) -> Figure:
    """The figure ``kipoi-dfim plot`` saves (see :func:`run`); separate so that it can be inspected.

    ``motifs`` (a :class:`kipoi_dfim.motifs.MotifSet`) names the own and partner motifs over the tracks.
    """
    target = None
    if args.targets:
        if len(args.targets) > 1:
            log.warning("plot draws one target; using the first of %s", args.targets)
        target = args.targets[0]
    window = args.window if args.window is not None else Settings().window
    model_label = args.model if isinstance(args.model, str | os.PathLike) else type(args.model).__name__
    if args.maps:
        with MapsFile(args.maps) as m:
            i = m.find(args.variant, target=target)
            return plot_maps_row(m, i, model=str(model_label), flank=window,
                                 motifs=_motif_annotation(m, i, motifs))  # fmt: skip
    if not args.vcf or not args.fasta:
        raise InputError("plot needs --maps H5, or --vcf and --fasta to score the variant first")
    variant_id = _resolve_vcf_variant(str(args.vcf), args.variant)
    with tempfile.TemporaryDirectory(prefix="kipoi-dfim-plot-") as tmp:
        maps_path = os.path.join(tmp, "maps.h5")
        _score_one_variant(args, variant_id, maps_path)
        with MapsFile(maps_path) as m:
            if len(m) == 0:
                raise InputError(f"variant {args.variant!r} could not be scored (run score-variants for its status)",
                                 path=str(args.vcf))  # fmt: skip
            i = m.find(variant_id, target=target)
            return plot_maps_row(m, i, model=str(model_label), flank=window,
                                 motifs=_motif_annotation(m, i, motifs))  # fmt: skip


def figure_paths(out: str, variants: Sequence[str]) -> list[str]:
    """Output file of each variant: ``out`` for one; for several, ``out`` with ``{variant}`` replaced, or
    ``<stem>.<variant><ext>`` (characters other than letters, digits, ``._-`` become ``_``)."""
    if len(variants) == 1:
        return [out]
    stem, ext = os.path.splitext(out)
    safe = ["".join(c if c.isalnum() or c in "._-" else "_" for c in v) for v in variants]
    paths = [out.replace("{variant}", v) if "{variant}" in out else f"{stem}.{v}{ext}" for v in safe]
    if len(set(paths)) != len(paths):
        raise InputError("two --variant values give the same figure file name", path=out)
    return paths


def run(args: Any) -> None:
    """``kipoi-dfim plot MODEL --variant ID [--variant ID ...] -o FIG [--maps H5 | --vcf VCF --fasta FA]``.

    With ``--maps`` nothing is recomputed and MODEL only labels the figure (it is not loaded). Without it,
    each variant is scored (with all three alternative bases, for the DFIM heatmap) into a temporary maps
    file, which is then drawn. ``--window`` is the half-width shown (at most what the maps file holds).
    Several ``--variant``: one figure each (see :func:`figure_paths`), with a progress bar on stderr.
    ``--motifs`` names the own and partner motifs over the tracks (default JASPAR CORE vertebrates).
    """
    ext = os.path.splitext(args.out)[1].lower()
    if ext not in _FIGURE_FORMATS:
        raise InputError(f"unknown figure format {ext or '(none)'!r}; use .png, .pdf or .svg", path=args.out)
    variants = [args.variant] if isinstance(args.variant, str) else list(args.variant)
    paths = figure_paths(args.out, variants)
    motifs = resolve_motifs(getattr(args, "motifs", None))
    quiet = bool(getattr(args, "quiet", False))
    bar = tqdm(list(zip(variants, paths, strict=True)), desc="plot", unit="variant",
               disable=quiet or len(variants) == 1)  # fmt: skip
    for v, path in bar:
        save_figure(figure_for(argparse.Namespace(**dict(vars(args), variant=v)), motifs), path)
