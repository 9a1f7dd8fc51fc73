"""Motif annotation of scored variants: the variant's own motif and its interaction partner.

A DFIM score says *that* a variant changes how the model reads its neighbourhood; a biologist wants to know
*which* motifs are involved. This module names them, offline, from JASPAR (the sqlite databases bundled with
pyjaspar) or a user's MEME / JASPAR file:

- own motif: the bases around the variant whose importance the variant changes most (its own site), named on
  the reference and on the alternate allele, with the named motif's PWM score on each allele (so "creates a
  GATA site" or "breaks an ETS site" can be read off);
- partner: the contiguous target span with the largest sum of |FIS|, named the same way.

Spans come from the FIS track and are named with memelite's Tomtom (:func:`annotate_variants` says why: the
sequence alone is full of chance matches). PWM scores are log-odds in bits against a uniform background from
our own vectorised scan (:func:`best_site`), not memelite's FIMO: FIMO reports every hit above a p-value
threshold over whole sequences and cannot ask "best site covering this base"; with a permissive threshold its
per-hit DataFrames would cost far more than the scan. The scan's p-values use FIMO's method (exact score
distribution on 0.1-bit bins); ``tests/test_motifs.py`` checks scores and p-values against memelite's FIMO.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kipoi_dfim.distributions import bh_adjust
from kipoi_dfim.errors import InputError
from kipoi_dfim.output.base import atomic_path

if TYPE_CHECKING:
    import pandas as pd

ALPHABET = "ACGT"
PSEUDOCOUNT = 0.01  # probability added to each PPM cell before renormalising: a zero count costs ~-4.7 bits
BIN = 0.1  # bits per bin of the exact score distribution (FIMO's default bin size)
CHUNK = 128  # variants scanned per matrix product (bounds memory at ~CHUNK * 60 * 2K floats)
ANNOTATION_COLUMNS = (
    "own_motif_ref", "own_score_ref", "own_p_ref", "own_motif_alt", "own_score_alt", "own_p_alt", "own_delta",
    "own_offset", "own_end", "partner_motif", "partner_offset", "partner_end", "partner_score", "partner_p",
    "partner_fis",
)
_LABEL_BAD = re.compile(r"[\s,;=]+")


@dataclass
class MotifSet:
    """Motifs as position probability matrices.

    Attributes
    ----------
    ids, names : list of str
        Matrix IDs (e.g. ``MA0035.4``) and TF names (e.g. ``Gata1``).
    ppms : list of numpy.ndarray
        (W, 4) probabilities in ACGT order, rows summing to 1.
    source : str
        Where the motifs came from (``JASPAR2026 CORE vertebrates`` or a file path), for reports.
    tf_class, tf_family : list of str or None
        JASPAR's structural class/family per motif (e.g. ``C4-GATA-related``), ``""`` when unknown; lets a reader
        (and the tests) see that two differently named motifs belong to the same family.
    """

    ids: list[str]
    names: list[str]
    ppms: list[np.ndarray]
    source: str = ""
    tf_class: list[str] | None = None
    tf_family: list[str] | None = None
    _scanner: _Scanner | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    def label(self, i: int) -> str:
        """``name(id)`` without spaces, commas, semicolons or ``=``, so it fits a TSV cell and a VCF INFO value."""
        name, mid = self.names[i], self.ids[i]
        text = name if not mid or mid == name else f"{name}({mid})"
        return _LABEL_BAD.sub("_", text)

    def subset(self, index) -> MotifSet:
        """A new MotifSet with the motifs at ``index`` (a list of positions), annotations kept."""
        index = list(index)

        def pick(v):
            return None if v is None else [v[i] for i in index]

        return MotifSet(pick(self.ids), pick(self.names), pick(self.ppms), self.source,
                        pick(self.tf_class), pick(self.tf_family))

    def tomtom_targets(self) -> list[np.ndarray]:
        """The PPMs as memelite's Tomtom wants them: contiguous (4, W) float64."""
        return [np.ascontiguousarray(np.asarray(p, dtype=np.float64).T) for p in self.ppms]

    def scanner(self) -> _Scanner:
        """The log-odds and p-value tables, built once per set (they cost ~0.3 s for JASPAR CORE)."""
        if self._scanner is None:
            self._scanner = _Scanner(self.ppms)
        return self._scanner


# -- reading and writing ----------------------------------------------------------------------------------------


def load_motifs(
    path: str | None = None,
    collection: str = "CORE",
    tax_group: str | None = "vertebrates",
    release: str | None = None,
) -> MotifSet:
    """Motifs from a MEME or JASPAR file, or from JASPAR's bundled sqlite database (no network).

    Parameters
    ----------
    path : str, optional
        MEME minimal-format or JASPAR-format file. When given, the other arguments are ignored.
    collection : str
        JASPAR collection (``CORE``, ``UNVALIDATED``, ``CNE``, ``PBM``, ...).
    tax_group : str or None
        JASPAR taxonomic group (``vertebrates``, ``plants``, ``insects``, ...); None for all.
    release : str or None
        e.g. ``JASPAR2024``; None for the newest release pyjaspar ships.

    Returns
    -------
    MotifSet
        The latest version of each matrix, in JASPAR's order.
    """
    if path is not None:
        with open(path, errors="replace") as fh:
            head = fh.read(4096)
        if "MOTIF" in head or "MEME version" in head:
            return read_meme(path)
        return _read_jaspar_file(path)
    return _load_jaspar_db(collection, tax_group, release)


@functools.lru_cache(maxsize=4)
def _load_jaspar_db(collection: str, tax_group: str | None, release: str | None) -> MotifSet:
    # cached: fetching ~1,000 matrices through Biopython takes ~2 s and a report may ask several times
    import pyjaspar

    release = release or pyjaspar.JASPAR_LATEST_RELEASE
    if release not in pyjaspar.jaspar_releases:
        raise InputError(f"unknown JASPAR release {release!r}; bundled: {', '.join(pyjaspar.jaspar_releases)}")
    db = pyjaspar.jaspardb(release=release)
    found = db.fetch_motifs(collection=collection, tax_group=[tax_group] if tax_group else None,
                            all_versions=False)
    if not found:
        raise InputError(f"no motifs in {release} for collection={collection!r} tax_group={tax_group!r}")
    ppms = [_ppm_from_counts(np.array([m.counts[b] for b in ALPHABET], dtype=np.float64).T) for m in found]
    return MotifSet(
        ids=[m.matrix_id for m in found],
        names=[m.name for m in found],
        ppms=ppms,
        source=f"{release} {collection}" + (f" {tax_group}" if tax_group else ""),
        tf_class=["; ".join(m.tf_class or []) for m in found],
        tf_family=["; ".join(m.tf_family or []) for m in found],
    )


def _ppm_from_counts(counts: np.ndarray) -> np.ndarray:
    tot = counts.sum(axis=1, keepdims=True)
    if (counts < 0).any() or (tot <= 0).any():
        raise ValueError("negative counts or an empty column")
    return counts / tot


def _read_jaspar_file(path: str) -> MotifSet:
    from Bio import motifs as biomotifs

    try:
        with open(path) as fh:
            found = list(biomotifs.parse(fh, "jaspar"))
        ppms = [_ppm_from_counts(np.array([m.counts[b] for b in ALPHABET], dtype=np.float64).T) for m in found]
    except (ValueError, KeyError, IndexError) as e:
        raise InputError(f"not a MEME or JASPAR motif file ({e})", path) from None
    if not found:
        raise InputError("no motifs found (expected MEME minimal format or JASPAR '>ID name' blocks)", path)
    return MotifSet([m.matrix_id or m.name for m in found], [m.name or m.matrix_id for m in found], ppms,
                    source=str(path))


def read_meme(path: str) -> MotifSet:
    """Read a MEME minimal-format motif file (``MOTIF id [name]`` + ``letter-probability matrix`` rows).

    Our own small parser rather than memelite's or Biopython's readers: those lose the id/name split or fail
    without saying on which line, and a user's hand-made file deserves a message that names the line.
    """
    ids, names, ppms = [], [], []
    cur: dict | None = None
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            words = line.split()
            if not words:
                continue
            if words[0] == "ALPHABET=" and len(words) > 1 and words[1].upper() not in ("ACGT", "ACGU"):
                raise InputError(f"only the DNA alphabet ACGT is supported, not {words[1]}", path, lineno)
            if words[0] == "MOTIF":
                if len(words) < 2:
                    raise InputError("MOTIF line without an identifier", path, lineno)
                _finish(cur, path, ids, names, ppms)
                cur = {"id": words[1], "name": words[2] if len(words) > 2 else words[1], "w": None, "rows": []}
            elif cur is not None and line.startswith("letter-probability"):
                m = re.search(r"\bw=\s*(\d+)", line)
                cur["w"] = int(m.group(1)) if m else None
                cur["reading"] = True
            elif cur is not None and cur.get("reading"):
                try:
                    row = [float(x) for x in words]
                except ValueError:
                    if cur["w"] is None:  # matrix without w= ends at the first non-numeric line
                        cur["reading"] = False
                        continue
                    raise InputError(f"expected 4 probabilities, got {line.strip()!r}", path, lineno) from None
                if len(row) != 4 or min(row) < 0:
                    raise InputError(f"expected 4 non-negative probabilities, got {line.strip()!r}", path, lineno)
                cur["rows"].append(row)
                if cur["w"] is not None and len(cur["rows"]) == cur["w"]:
                    cur["reading"] = False
    _finish(cur, path, ids, names, ppms)
    if not ids:
        raise InputError("no motifs found (expected 'MOTIF' and 'letter-probability matrix' lines)", path)
    return MotifSet(ids, names, ppms, source=str(path))


def _finish(cur: dict | None, path: str, ids: list, names: list, ppms: list) -> None:
    if cur is None:
        return
    rows = np.array(cur["rows"], dtype=np.float64)
    if len(rows) == 0 or (cur["w"] is not None and len(rows) != cur["w"]):
        raise InputError(f"motif {cur['id']}: w={cur['w']} but {len(rows)} matrix rows", path)
    if (rows.sum(axis=1) <= 0).any():
        raise InputError(f"motif {cur['id']}: a matrix row sums to 0", path)
    ids.append(cur["id"])
    names.append(cur["name"])
    ppms.append(rows / rows.sum(axis=1, keepdims=True))


def write_meme(motifs: MotifSet, path: str) -> None:
    """Write ``motifs`` in MEME minimal format (readable by MEME, memelite and :func:`read_meme`), atomically."""
    lines = ["MEME version 4", "", f"ALPHABET= {ALPHABET}", "", "strands: + -", "",
             "Background letter frequencies", "A 0.25 C 0.25 G 0.25 T 0.25", ""]
    for mid, name, ppm in zip(motifs.ids, motifs.names, motifs.ppms, strict=True):
        lines.append(f"MOTIF {mid} {name}".rstrip() if name != mid else f"MOTIF {mid}")
        lines.append(f"letter-probability matrix: alength= 4 w= {len(ppm)} nsites= 20 E= 0")
        lines.extend(" ".join(f"{v:.6f}" for v in row) for row in np.asarray(ppm))
        lines.append("")
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write("\n".join(lines) + "\n")


# -- scanning ----------------------------------------------------------------------------------------------------


class _Scanner:
    """Log-odds matrices of all motifs on both strands packed into one (Wmax*4, 2K) matrix, plus p-value tables.

    Motif k's forward strand is column k, its reverse complement column K + k; shorter motifs are zero-padded
    at the end, and sites whose motif would run past the sequence are masked by the callers.
    """

    def __init__(self, ppms: list[np.ndarray]):
        k = len(ppms)
        self.widths = np.array([len(p) for p in ppms], dtype=np.int64)
        self.wmax = int(self.widths.max())
        lo = np.zeros((2 * k, self.wmax, 4), dtype=np.float64)
        for i, p in enumerate(ppms):
            p = np.asarray(p, dtype=np.float64)
            lp = np.log2((p + PSEUDOCOUNT) / (1 + 4 * PSEUDOCOUNT) / 0.25)
            lo[i, : len(p)] = lp
            lo[k + i, : len(p)] = lp[::-1, ::-1]  # reverse complement: ACGT reversed is TGCA
        self.log_odds = lo
        self.matrix = lo.reshape(2 * k, -1).T.astype(np.float32)
        self.widths2 = np.concatenate([self.widths, self.widths])
        self.max_score = lo.max(axis=2).sum(axis=1)[:k]
        self._tables(lo[:k])

    def _tables(self, lo: np.ndarray) -> None:
        # exact distribution of the integer-binned score under a uniform background, as FIMO computes it
        sfs, mins = [], []
        for i, w in enumerate(self.widths):
            m = np.rint(lo[i, :w] / BIN).astype(np.int64)
            lo_i = m.min(axis=1)
            sh = m - lo_i[:, None]
            dist = np.zeros(int(sh.max(axis=1).sum()) + 1)
            dist[0] = 1.0
            n = 1
            for j in range(w):
                new = np.zeros_like(dist)
                for b in range(4):
                    new[sh[j, b] : sh[j, b] + n] += 0.25 * dist[:n]
                n += int(sh[j].max())
                dist = new
            sfs.append(np.cumsum(dist[::-1])[::-1])
            mins.append(int(lo_i.sum()))
        self.sf_len = np.array([len(s) for s in sfs], dtype=np.int64)
        self.sf_start = np.concatenate([[0], np.cumsum(self.sf_len)[:-1]])
        self.sf = np.concatenate(sfs)
        self.sf_min = np.array(mins, dtype=np.int64)

    def pvalues(self, scores: np.ndarray, motif: np.ndarray) -> np.ndarray:
        """P(score >= s) for a random uniform site, for scores of motifs ``motif`` (same shape)."""
        idx = np.rint(np.asarray(scores) / BIN).astype(np.int64) - self.sf_min[motif]
        over = idx >= self.sf_len[motif]
        idx = np.clip(idx, 0, self.sf_len[motif] - 1)
        p = self.sf[self.sf_start[motif] + idx]
        return np.where(over, self.sf[self.sf_start[motif] + self.sf_len[motif] - 1], p)

    def scan(self, x: np.ndarray) -> np.ndarray:
        """Scores (N, L, 2K) of every motif/strand starting at every position of ``x`` (N, L, 4).

        Sites running past the end see zero padding; callers mask them.
        """
        n, length, _ = x.shape
        xp = np.zeros((n, length + self.wmax - 1, 4), dtype=np.float32)
        xp[:, :length] = x
        win = np.lib.stride_tricks.sliding_window_view(xp, self.wmax, axis=1)  # (N, L, 4, W)
        win = np.ascontiguousarray(win.transpose(0, 1, 3, 2)).reshape(n * length, -1)
        return (win @ self.matrix).reshape(n, length, -1)

    def information(self) -> np.ndarray:
        """(2K, Wmax) information content in bits of each motif column (zero in the padding), both strands."""
        p = 0.25 * np.exp2(self.log_odds)
        ic = (p * self.log_odds).sum(axis=2)
        cols = np.arange(self.wmax)[None, :] < self.widths2[:, None]
        return np.where(cols, ic, 0.0)


def _best_overlapping(sc: _Scanner, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, min_overlap: int) -> dict:
    """For each row of ``x`` (N, D, 4): the motif whose best site overlapping [lo, hi) is most significant.

    A site of width w overlaps enough when it shares at least min(min_overlap, w, hi - lo) bases with the span;
    sites must lie inside the sequence. Returns arrays (N,): motif (-1 when no site fits), start, strand (+1/-1),
    score (bits), p, plus ``per_motif`` (N, K) best scores (to ask how a given motif fares on another allele).
    """
    n, d, _ = x.shape
    k = len(sc.widths)
    s0 = max(int(lo.min()) - sc.wmax + 1, 0)
    s1 = min(int(hi.max()), d)
    starts = np.arange(s0, s1, dtype=np.int32)
    scores = sc.scan(x[:, s0 : min(s1 + sc.wmax - 1, d)])[:, : len(starts)]
    w = sc.widths2.astype(np.int32)[None, None, :]
    st = starts[None, :, None]
    lo3, hi3 = lo.astype(np.int32)[:, None, None], hi.astype(np.int32)[:, None, None]
    need = np.minimum(np.minimum(w, hi3 - lo3), min_overlap)
    ok = (np.minimum(st + w, hi3) - np.maximum(st, lo3) >= need) & (st + w <= d)
    scores = np.where(ok, scores, -np.inf).reshape(n, len(starts), 2, k)
    flat = scores.transpose(0, 3, 2, 1).reshape(n, k, -1)  # (N, K, strand * start)
    arg = flat.argmax(axis=2)
    best = np.take_along_axis(flat, arg[..., None], axis=2)[..., 0]
    found = np.isfinite(best)
    p = np.where(found, sc.pvalues(np.where(found, best, 0.0), np.broadcast_to(np.arange(k), best.shape)), 2.0)
    pmin = p.min(axis=1, keepdims=True)
    tie = np.where(p <= pmin * (1 + 1e-9), best, -np.inf)  # equal p-values: the higher score wins
    motif = tie.argmax(axis=1)
    rows = np.arange(n)
    any_site = found[rows, motif]
    a = arg[rows, motif]
    return {
        "motif": np.where(any_site, motif, -1),
        "start": np.where(any_site, starts[a % len(starts)], -1),
        "strand": np.where(a // len(starts) == 0, 1, -1),
        "score": np.where(any_site, best[rows, motif], np.nan),
        "p": np.where(any_site, p[rows, motif], np.nan),
        "per_motif": np.where(found, best, np.nan),
    }


def _motif_scores(sc: _Scanner, x: np.ndarray, motif: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  min_overlap: int) -> np.ndarray:
    """Best score (N,) of motif ``motif[i]`` (either strand) over its sites in ``x[i]`` that share at least
    min(min_overlap, width, hi - lo) bases with [lo[i], hi[i]); NaN when no site fits. One motif per row, so
    this costs a (N, S, W*4) x (N, W*4, 2) product instead of a scan with every motif."""
    n, d, _ = x.shape
    k = len(sc.widths)
    s0 = max(int(lo.min()) - sc.wmax + 1, 0)
    s1 = min(int(hi.max()), d)
    starts = np.arange(s0, s1)
    xp = np.zeros((n, s1 - s0 + sc.wmax - 1, 4), dtype=np.float32)
    seg = x[:, s0 : min(s1 + sc.wmax - 1, d)]
    xp[:, : seg.shape[1]] = seg
    win = np.lib.stride_tricks.sliding_window_view(xp, sc.wmax, axis=1)[:, : len(starts)]  # (N, S, 4, W)
    lo_odds = sc.log_odds[np.stack([motif, motif + k], axis=1)]  # (N, 2, W, 4)
    scores = np.einsum("nsbw,ntwb->nst", win, lo_odds.astype(np.float32))
    w = sc.widths[motif][:, None]
    st = starts[None, :]
    need = np.minimum(np.minimum(w, (hi - lo)[:, None]), min_overlap)
    ok = (np.minimum(st + w, hi[:, None]) - np.maximum(st, lo[:, None]) >= need) & (st + w <= d)
    best = np.where(ok[..., None], scores, -np.inf).max(axis=(1, 2))
    return np.where(np.isfinite(best), best, np.nan)


def best_site(seq: np.ndarray, motifs: MotifSet, covering: tuple[int, int] | None = None) -> dict:
    """The most significant motif site in a one-hot sequence, on either strand.

    Parameters
    ----------
    seq : numpy.ndarray
        (L, 4) one-hot, ACGT; N bases (all-zero rows) score 0.
    motifs : MotifSet
    covering : (a, b), optional
        Only sites sharing at least one base with positions [a, b) (0-based), e.g. (v, v + 1) for the sites
        covering the base v. Default: every site inside the sequence.

    Returns
    -------
    dict
        ``motif`` (index, -1 if no motif fits), ``label``, ``id``, ``name``, ``start``, ``end`` (0-based,
        exclusive), ``strand`` ("+"/"-"), ``score`` (log-odds bits vs a uniform background), ``p`` (probability
        that a random site scores at least as high; the motif with the smallest p wins, so long motifs do not
        win on raw score alone).
    """
    seq = np.asarray(seq, dtype=np.float32)
    if seq.ndim != 2 or seq.shape[1] != 4:
        raise InputError(f"best_site needs a (L, 4) one-hot sequence, got shape {seq.shape}")
    a, b = covering if covering is not None else (0, len(seq))
    r = _best_overlapping(motifs.scanner(), seq[None], np.array([a]), np.array([b]), 1)
    m = int(r["motif"][0])
    if m < 0:
        return {"motif": -1, "label": "", "id": "", "name": "", "start": -1, "end": -1, "strand": "",
                "score": math.nan, "p": math.nan}
    start = int(r["start"][0])
    return {"motif": m, "label": motifs.label(m), "id": motifs.ids[m], "name": motifs.names[m], "start": start,
            "end": start + int(motifs.scanner().widths[m]), "strand": "+" if r["strand"][0] > 0 else "-",
            "score": float(r["score"][0]), "p": float(r["p"][0])}


def annotate_variants(
    seq_ref: np.ndarray,
    seq_alt: np.ndarray,
    fis: np.ndarray,
    center: int,
    motifs: MotifSet,
    window: int | None = None,
    span_width: int = 5,
    pad: int = 2,
    p_threshold: float = 1e-3,
) -> pd.DataFrame:
    """Own motif (REF and ALT) and interaction partner for many scored variants at once.

    The model, not the sequence alone, says where the motifs are: a random 200 bp window holds chance matches
    to hundreds of JASPAR motifs, but only the bases whose importance the variant changes (large |FIS|) are
    read by the model. So both motifs are located on the FIS track first and only then named:

    - own span: the ``span_width`` consecutive bases containing the variant with the largest sum of |FIS|
      (breaking a site changes the importance of its other bases most);
    - partner span: the ``span_width`` consecutive bases within +-``window`` bp, outside the own span, with the
      largest sum of |FIS| -- the contiguous target span the variant interacts with most strongly.

    Each span's bases, with ``pad`` uniform columns per side, are a Tomtom query (memelite) against ``motifs``;
    the own span is queried with the REF and with the ALT bases. The span is 5 bp, the core most TF sites share
    and what a CNN's first-layer filters read: on the sim example, 5 bp spans name the GATA and E-box families
    for all 20 interacting variants (own and partner), 6 bp spans for 18-19 of 20 (the sixth base is often the
    spacer between two sites, whose importance also changes, and one wrong base lets a zinc-finger motif
    outscore GATA).

    Parameters
    ----------
    seq_ref, seq_alt : numpy.ndarray
        (M, D, 4) one-hot windows with the variant at index ``center`` (the maps H5 ``seq_ref``/``seq_alt``).
    fis : numpy.ndarray
        (M, D) per-position FIS (the maps H5 ``fis``; NaN at the variant).
    center : int
        Index of the variant in the D positions (where the maps ``offsets`` are 0).
    motifs : MotifSet
        Tomtom targets; a whole database (its columns are Tomtom's background).
    window : int, optional
        Partner spans lie within +-window bp of the variant (the scoring window); default: all of D.
    span_width, pad : int
        Span width and the uniform columns per side of each Tomtom query.
    p_threshold : float
        A motif is named only when its Tomtom p-value is at most this; scores and p-values are given anyway.

    Returns
    -------
    pandas.DataFrame
        One row per variant, columns ``ANNOTATION_COLUMNS``: motif labels (``""`` when no match passes
        ``p_threshold``); ``own_score_ref``/``own_score_alt``: log-odds (bits) of the best site of the named
        motif covering the variant on that allele; ``own_delta``: the REF motif's score on ALT minus on REF
        (negative: the variant breaks it); ``own_p_*``/``partner_p``: Tomtom p-values; ``own_offset``/``own_end``:
        first/last base of the own span relative to the variant;
        ``partner_offset``/``partner_end``: first/last base of the partner span relative to the variant;
        ``partner_score``: log-odds of the partner motif's best site overlapping half the span or more;
        ``partner_fis``: the signed FIS summed over the span.
    """
    import pandas as pd  # lazy: pandas costs ~33 MB of memory; score-variants' streaming path never needs it

    seq_ref, seq_alt = np.asarray(seq_ref, dtype=np.float32), np.asarray(seq_alt, dtype=np.float32)
    fis = np.asarray(fis, dtype=np.float64)
    if seq_ref.ndim != 3 or seq_ref.shape != seq_alt.shape or fis.shape != seq_ref.shape[:2]:
        raise InputError(f"annotate_variants: seq_ref {seq_ref.shape}, seq_alt {seq_alt.shape} and fis {fis.shape} "
                         "must be (M, D, 4), (M, D, 4), (M, D)")
    d = seq_ref.shape[1]
    if not 0 <= center < d or not 1 <= span_width <= d:
        raise InputError(f"annotate_variants: center {center} outside 0..{d - 1} or span_width outside 1..{d}")
    parts = [_annotate_chunk(seq_ref[i : i + CHUNK], seq_alt[i : i + CHUNK], fis[i : i + CHUNK], center, motifs,
                             window, span_width, pad, p_threshold) for i in range(0, len(seq_ref), CHUNK)]
    if not parts:
        return pd.DataFrame(columns=list(ANNOTATION_COLUMNS))
    return pd.concat(parts, ignore_index=True)


def _spans(strength: np.ndarray, lo: np.ndarray, hi: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Start (N,) of the ``width``-wide span with the largest sum of ``strength`` among starts in [lo, hi], and
    that sum."""
    n, d = strength.shape
    csum = np.concatenate([np.zeros((n, 1)), np.cumsum(strength, axis=1)], axis=1)
    sums = csum[:, width:] - csum[:, :-width]  # (N, d - width + 1)
    starts = np.arange(d - width + 1)[None, :]
    sums = np.where((starts >= lo[:, None]) & (starts <= hi[:, None]), sums, -np.inf)
    best = sums.argmax(axis=1)
    return best, sums[np.arange(n), best]


def _queries(seq: np.ndarray, start: np.ndarray, width: int, pad: int) -> list[np.ndarray]:
    """Tomtom queries: the observed bases of each span, with ``pad`` uniform columns per side so that a motif
    whose informative core is wider than the span can still align fully."""
    flank = np.full((pad, 4), 0.25)
    return [np.vstack([flank, seq[i, s : s + width], flank]) for i, s in enumerate(start)]


def _annotate_chunk(ref, alt, fis, center, motifs, window, width, pad, p_threshold) -> pd.DataFrame:
    import pandas as pd  # lazy: pandas costs ~33 MB of memory; score-variants' streaming path never needs it

    sc = motifs.scanner()
    n, d, _ = ref.shape
    rows = np.arange(n)
    strength = np.nan_to_num(np.abs(fis), nan=0.0)
    strength[:, center] = 0.0
    own_start, _ = _spans(strength, np.full(n, max(center - width + 1, 0)), np.full(n, min(center, d - width)),
                          width)
    lo = 0 if window is None else max(center - window, 0)
    hi = d - width if window is None else min(center + window + 1, d) - width
    rest = strength.copy()
    rest[rows[:, None], own_start[:, None] + np.arange(width)[None, :]] = 0.0
    p_start, p_sum = _spans(rest, np.full(n, lo), np.full(n, hi), width)
    has_partner = np.isfinite(p_sum) & (p_sum > 0)
    queries = (_queries(ref, own_start, width, pad) + _queries(alt, own_start, width, pad)
               + _queries(ref, p_start, width, pad))
    target, pval = _tomtom_best(queries, motifs)
    t_ref, t_alt, t_par = target[:n], target[n : 2 * n], target[2 * n :]
    p_ref, p_alt, p_par = pval[:n], pval[n : 2 * n], pval[2 * n :]
    at = np.full(n, center)
    score_ref = _motif_scores(sc, ref, t_ref, at, at + 1, 1)
    score_alt = _motif_scores(sc, alt, t_alt, at, at + 1, 1)
    delta = _motif_scores(sc, alt, t_ref, at, at + 1, 1) - score_ref
    partner = _motif_scores(sc, ref, t_par, p_start, p_start + width, (width + 1) // 2)
    in_span = (np.arange(d)[None, :] >= p_start[:, None]) & (np.arange(d)[None, :] < p_start[:, None] + width)
    pfis = np.nansum(np.where(in_span, fis, 0.0), axis=1)

    def names(t, p, ok=True):
        return [motifs.label(int(t[i])) if p[i] <= p_threshold and (ok is True or ok[i]) else "" for i in rows]

    return pd.DataFrame({
        "own_motif_ref": names(t_ref, p_ref), "own_score_ref": score_ref, "own_p_ref": p_ref,
        "own_motif_alt": names(t_alt, p_alt), "own_score_alt": score_alt, "own_p_alt": p_alt,
        "own_delta": delta,
        "own_offset": own_start - center, "own_end": own_start + width - 1 - center,
        "partner_motif": names(t_par, p_par, has_partner),
        "partner_offset": np.where(has_partner, p_start - center, 0),
        "partner_end": np.where(has_partner, p_start + width - 1 - center, 0),
        "partner_score": np.where(has_partner, partner, np.nan),
        "partner_p": np.where(has_partner, p_par, np.nan),
        "partner_fis": np.where(has_partner, pfis, np.nan),
    })


def annotate_variant(
    seq_ref: np.ndarray, seq_alt: np.ndarray, fis: np.ndarray, center: int, motifs: MotifSet, **opts
) -> dict:
    """Own motif and partner of one scored variant: :func:`annotate_variants` on a single row, as a dict.

    ``seq_ref``/``seq_alt`` are (D, 4), ``fis`` is (D,); ``opts`` are those of :func:`annotate_variants`.
    """
    df = annotate_variants(np.asarray(seq_ref)[None], np.asarray(seq_alt)[None], np.asarray(fis)[None], center,
                           motifs, **opts)
    return {c: (v.item() if hasattr(v, "item") else v) for c, v in df.iloc[0].items()}


def resolve_motifs(spec: str | MotifSet | None) -> MotifSet | None:
    """A motif set from a command-line style spec: "jaspar" (JASPAR CORE vertebrates), "none"/None, a file path,
    or a MotifSet (returned as is)."""
    if spec is None or isinstance(spec, MotifSet):
        return spec
    if str(spec).lower() == "none":
        return None
    if str(spec).lower() == "jaspar":
        return load_motifs()
    return load_motifs(str(spec))


def annotate_maps_rows(maps, rows: list[int], motifs: MotifSet) -> list[dict]:
    """:func:`annotate_variants` of rows of a ``score-variants --maps`` file (a :class:`kipoi_dfim.plot.MapsFile`:
    anything with ``row(i)`` returning ``seq_ref``/``seq_alt``/``fis``/``offsets``, and ``attrs``), one dict per row.

    Only these rows are read, so a report of the top 50 variants of a genome-wide run does not load every map.
    """
    if not rows:
        return []
    recs = [maps.row(i) for i in rows]
    zero = np.flatnonzero(np.asarray(recs[0]["offsets"]) == 0)
    if len(zero) != 1:
        raise InputError("maps offsets have no single 0 (the variant)", path=getattr(maps, "path", None))
    window = maps.attrs.get("window")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # memelite warns below 25 targets; callers name the motif source
        df = annotate_variants(np.stack([r["seq_ref"] for r in recs]), np.stack([r["seq_alt"] for r in recs]),
                               np.stack([r["fis"] for r in recs]), int(zero[0]), motifs,
                               window=None if window is None else int(window))  # fmt: skip
    return df.to_dict("records")


def _tomtom_best(queries: list[np.ndarray], motifs: MotifSet) -> tuple[np.ndarray, np.ndarray]:
    """Index and p-value of the best Tomtom target for each (W, 4) query."""
    from memelite import tomtom as _tomtom

    if not queries:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    qs = [np.ascontiguousarray(np.asarray(q, dtype=np.float64).T) for q in queries]
    p, _score, _offset, _overlap, _strand, idx = _tomtom(qs, motifs.tomtom_targets(), n_nearest=1)
    return idx[:, 0].astype(np.int64), p[:, 0]


def tomtom(query_ppms: list[np.ndarray], motifs: MotifSet, n_nearest: int | None = 10) -> pd.DataFrame:
    """Compare query motifs with a motif set by memelite's Tomtom (complete-score p-values, both strands).

    Parameters
    ----------
    query_ppms : list of numpy.ndarray
        (W, 4) matrices in ACGT order (probabilities, or any non-negative weights such as a contribution
        matrix).
    motifs : MotifSet
        Targets; use a whole database (Tomtom's background comes from the target columns, so p-values of fewer
        than ~50 targets are unreliable, and memelite warns).
    n_nearest : int or None
        Best targets kept per query (None: all).

    Returns
    -------
    pandas.DataFrame
        Columns ``query`` (index into ``query_ppms``), ``target`` (index into ``motifs``), ``target_id``,
        ``target_name``, ``p``, ``E`` (p x number of targets), ``q`` (Benjamini-Hochberg over that query's
        targets), ``offset``, ``overlap``, ``orientation`` ("+" or "-"), sorted by query then p.
    """
    import pandas as pd  # lazy: see annotate_variants
    from memelite import tomtom as _tomtom

    if len(motifs) == 0 or not query_ppms:
        raise InputError("tomtom needs at least one query and one target motif")
    qs = [np.ascontiguousarray(np.asarray(q, dtype=np.float64).T) for q in query_ppms]
    ts = motifs.tomtom_targets()
    nn = len(ts) if n_nearest is None else min(n_nearest, len(ts))
    p, _score, offset, overlap, strand = _tomtom(qs, ts)[:5]
    rows = []
    for qi in range(len(qs)):
        q = bh_adjust(np.clip(p[qi], 0, 1))
        for t in np.argsort(p[qi], kind="stable")[:nn]:
            rows.append({"query": qi, "target": int(t), "target_id": motifs.ids[t], "target_name": motifs.names[t],
                         "p": float(p[qi, t]), "E": float(p[qi, t]) * len(ts), "q": float(q[t]),
                         "offset": int(offset[qi, t]), "overlap": int(overlap[qi, t]),
                         "orientation": "+" if strand[qi, t] == 0 else "-"})
    return pd.DataFrame(rows).sort_values(["query", "p"], kind="stable", ignore_index=True)
