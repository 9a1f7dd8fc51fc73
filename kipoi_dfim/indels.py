"""Insertions, deletions and complex substitutions: their windows and the alignment of the two windows.

An SNV changes one base and leaves every other base where it was, so DFIM compares ``C_X[t]`` with ``C_X'[t]``.
An indel moves every base on one side of it, so the reference and the alternate window no longer line up base
for base; this module owns everything that follows from that (numpy only; see docs/indels.md):

* the event of a REF/ALT pair (:func:`allele_event`: shared bases trimmed, VCF 4.2 anchor bases included);
* whether a record is normalised, checked against the FASTA (:func:`normalize`, flag ``not_normalized``);
* the alternate window (:func:`alt_window`): the model's length, the bases left of the variant at the same
  positions as in the reference window, the bases right of it shifted by the length difference, the window
  filled (deletion) or trimmed (insertion) on the right from the genome -- tangermeme's
  ``deletion_effect``/``insertion_effect`` with ``left=False``. Where the contig ends before the filled window
  would, the window is filled on the left instead and the record is flagged ``alt_filled_left=<k>``;
* the alignment (:func:`alignment`): for each reference-window position the alternate-window position of the
  same genome base, -1 inside the REF allele (deleted bases and anchors are not targets) or off the window;
* the aligned importance (:func:`align_to_reference`): alternate tracks gathered into reference coordinates, so
  ``FIS[t] = sum_b C_X[t, b] - C_X'[align(t), b]`` is the usual ``fis_tracks`` of the aligned arrays;
* the null's alternate windows (:func:`null_alternates`): the indel applied to each shuffled background.

Everything is derived from the variant's ``offset``, ``ref``, ``alt`` and flags, so a Variant rebuilt from a
Kipoi batch (``kipoi_spec``) aligns exactly as the one the VCF reader made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # variants imports this module
    from kipoi_dfim.variants import Fasta, Variant

#: ``alt_offset`` of the maps file where a reference position has no aligned alternate base
NO_ALT = int(np.iinfo(np.int32).min)
FILL_FLAG = "alt_filled_left"


@dataclass(frozen=True)
class Event:
    """What a REF/ALT pair changes, after trimming the bases they share (suffix first, then prefix).

    ``start`` is the index in REF (and ALT) of the first changed base; ``ref_len``/``alt_len`` the changed bases;
    ``trimmed`` how many shared bases were trimmed (1 for a VCF 4.2 anchored indel); ``kind`` one of
    ``snv, mnv, insertion, deletion, complex``.
    """

    start: int
    ref_len: int
    alt_len: int
    trimmed: int
    kind: str

    @property
    def delta(self) -> int:
        """Length difference ALT - REF: how far the bases right of the event move in the alternate window."""
        return self.alt_len - self.ref_len


def allele_event(ref: str, alt: str) -> Event:
    """The event of a REF/ALT pair (case-insensitive).

    Why suffix first: trimming the shared suffix before the shared prefix places an event inside a repeat at
    its leftmost position within the alleles, as ``bcftools norm`` and vt do, so ``GTT>GT`` is the deletion of
    the first T, and its ``trimmed`` count (2) shows the record was not parsimonious.
    """
    r, a = ref.upper(), alt.upper()
    s = 0
    while s < min(len(r), len(a)) and r[len(r) - 1 - s] == a[len(a) - 1 - s]:
        s += 1
    r2, a2 = r[: len(r) - s], a[: len(a) - s]
    p = 0
    while p < min(len(r2), len(a2)) and r2[p] == a2[p]:
        p += 1
    rl, al = len(r2) - p, len(a2) - p
    if rl == al:
        kind = "snv" if rl == 1 else "mnv"
    elif rl == 0:
        kind = "insertion"
    elif al == 0:
        kind = "deletion"
    else:
        kind = "complex"
    return Event(p, rl, al, p + s, kind)


def is_indel(v: Variant) -> bool:
    """Whether the variant changes the length of the sequence (insertion, deletion, complex)."""
    return len(v.ref) != len(v.alt)


def _left_shift(v: Variant) -> int:
    """How far the alternate window starts left of the reference window (``alt_filled_left=<k>``, else 0)."""
    for f in v.flags:
        if f.startswith(FILL_FLAG + "="):
            return int(f.split("=", 1)[1])
    return 0


def check_indel(v: Variant, fasta: Fasta, seq_len: int) -> None:
    """Status and flags of an indel whose REF matched the FASTA and whose window is placed.

    Sets status ``too_long`` when REF or ALT is longer than a quarter of the model input (the event would not
    fit in the window next to its context); flags ``complex`` (REF and ALT differ in length and content),
    ``not_normalized`` (:func:`normalize` would write the record differently: scored as written, since the
    haplotype is the same and another caller's representation is not ours to change silently) and
    ``alt_filled_left=<k>`` (the contig ends before the filled alternate window would).
    """
    if max(len(v.ref), len(v.alt)) > seq_len // 4:
        v.status = "too_long"
        return
    ev = allele_event(v.ref, v.alt)
    if ev.kind == "complex":
        v.flags.append("complex")
    if normalize(fasta, v.fasta_contig, v.pos - 1, v.ref, v.alt) != (v.pos - 1, v.ref.upper(), v.alt.upper()):
        v.flags.append("not_normalized")
    n = fasta.lengths[v.fasta_contig]
    over = v.window_start + seq_len - (n + ev.delta)
    if n >= seq_len and over > 0:
        v.flags.append(f"{FILL_FLAG}={over}")


def normalize(
    fasta: Fasta, contig: str, pos0: int, ref: str, alt: str, max_steps: int = 100_000
) -> tuple[int, str, str]:
    """The normalised (left-aligned, parsimonious) form of a variant: (0-based POS, REF, ALT), upper case.

    Tan, Abecasis and Kang (Bioinformatics 2015), the algorithm of ``vt normalize`` and ``bcftools norm``:
    while both alleles end with the same base, drop it; when an allele becomes empty, extend both by the
    genome base on their left; finally drop shared leading bases while both alleles keep at least one. At the
    contig start, where no base is left to extend with, the alleles keep the base on their right (VCF's rule
    for events at POS 1).
    """
    r, a = ref.upper(), alt.upper()
    for _ in range(max_steps):
        if r and a and r[-1] == a[-1]:
            r, a = r[:-1], a[:-1]
        elif not r or not a:
            if pos0 == 0:
                b = fasta.fetch(contig, len(r), len(r) + 1)
                r, a = r + b, a + b
                break
            pos0 -= 1
            b = fasta.fetch(contig, pos0, pos0 + 1)
            r, a = b + r, b + a
        else:
            break
    while len(r) > 1 and len(a) > 1 and r[0] == a[0]:
        r, a, pos0 = r[1:], a[1:], pos0 + 1
    return pos0, r, a


def _geometry(v: Variant) -> tuple[Event, int, int]:
    """The event, its start in reference-window coordinates, and the alternate window's start in the same."""
    ev = allele_event(v.ref, v.alt)
    return ev, v.offset + ev.start, -_left_shift(v)


def alt_window(v: Variant, fasta: Fasta, seq_len: int) -> str:
    """The alternate window of an indel (``seq_len`` letters; N beyond the contig).

    Alternate-haplotype coordinates (reference-window based): bases before the event keep their coordinate,
    the ALT bases of the event follow, then the bases after the REF event shifted by ``delta``. The window
    starts where the reference window starts (``alt_filled_left``: ``k`` bases earlier).
    """
    ev, e0, a0 = _geometry(v)
    j = a0 + np.arange(seq_len)  # alternate-haplotype coordinates of the window
    src = np.where(j < e0, j, j - ev.delta)  # reference-window coordinate of each genome base
    lo, hi = int(src.min()), int(src.max()) + 1
    genome = fasta.fetch(v.fasta_contig, v.window_start + lo, v.window_start + hi)
    alt_ev = v.alt.upper()[ev.start : ev.start + ev.alt_len]
    out = [alt_ev[k - e0] if e0 <= k < e0 + ev.alt_len else genome[s - lo] for k, s in zip(j, src, strict=True)]
    return "".join(out)


def alignment(v: Variant, L: int) -> np.ndarray:
    """(L,) int: the alternate-window position aligned with each reference-window position; -1 for none.

    Left of the event a base keeps its position (``+k`` with ``alt_filled_left=k``), right of it it moves by
    ``delta`` (and ``k``); the REF allele's bases (the changed ones and the anchors) are not targets and get
    -1, as do bases whose partner fell off the alternate window. Identity for substitutions.
    """
    t = np.arange(L)
    if not is_indel(v):
        return t
    ev, e0, a0 = _geometry(v)
    j = np.where(t < e0, t, t + ev.delta) - a0
    j[(t >= v.offset) & (t < v.offset + len(v.ref))] = -1
    j[(j < 0) | (j >= L)] = -1
    return j


def alt_sources(v: Variant, L: int) -> np.ndarray:
    """(L,) int: for each alternate-window position, the reference-window position its base came from;
    -1 for an ALT base of the event, -2 for a genome base outside the reference window (the fill)."""
    ev, e0, a0 = _geometry(v)
    j = a0 + np.arange(L)
    src = np.where(j < e0, j, j - ev.delta)
    src[(j >= e0) & (j < e0 + ev.alt_len)] = -1
    src[(src >= L) | (src < -1)] = -2
    src[(j < e0) & (src < 0)] = -2
    return src


def align_to_reference(
    C: np.ndarray, Xalt: np.ndarray, variants: Sequence[Variant]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alternate importance and windows in reference coordinates, and which positions have a partner.

    Parameters
    ----------
    C : (T, K, N, L, 4)
        Importance of the reference windows (``K = 0``) and alternate windows (``K >= 1``).
    Xalt : (N, L, 4)
        The alternate windows.
    variants : N variants

    Returns
    -------
    C_aligned, Xalt_aligned, valid
        Copies where the rows of indels hold, at reference position ``t``, the alternate values at
        ``alignment(t)`` (zeros without one); ``valid`` (N, L) is False there. Substitution rows are unchanged,
        so ``fis_tracks(C_aligned)`` is the usual FIS for SNVs and ``C_X[t] - C_X'[align(t)]`` for indels.
    """
    N, L = Xalt.shape[:2]
    valid = np.ones((N, L), bool)
    rows = [i for i, v in enumerate(variants) if is_indel(v)]
    if not rows:
        return C, Xalt, valid
    C, Xalt = C.copy(), Xalt.copy()
    for i in rows:
        j = alignment(variants[i], L)
        ok = j >= 0
        valid[i] = ok
        jj = np.where(ok, j, 0)
        C[:, 1:, i] = np.where(ok[:, None], C[:, 1:, i][..., jj, :], 0)
        Xalt[i] = np.where(ok[:, None], Xalt[i][jj], 0)
    return C, Xalt, valid


def null_alternates(nref: np.ndarray, nalt: np.ndarray, Xalt: np.ndarray, variants: Sequence[Variant],
                    K: int) -> np.ndarray:
    """The null's alternate windows of indels: the indel applied to each shuffled background.

    ``nref``/``nalt`` (N*K, L, 4) are the backgrounds with REF / ALT put back at the variant's span (right for
    substitutions); for an indel the alternate background takes every base from the shuffled reference
    background at its source position, keeps the ALT bases of the event, and keeps the genome bases of the
    right-hand fill (at most ``|delta|`` bases at the window's far edge, outside any target window).
    """
    rows = [i for i, v in enumerate(variants) if is_indel(v)]
    if not rows:
        return nalt
    nalt = nalt.copy()
    L = nref.shape[1]
    for i in rows:
        src = alt_sources(variants[i], L)
        blk = slice(i * K, (i + 1) * K)
        keep = src < 0
        nalt[blk] = np.where(keep[None, :, None], Xalt[i][None], nref[blk][:, np.maximum(src, 0)])
    return nalt


def display_alt_offsets(v: Variant, flank: int, L: int) -> np.ndarray:
    """(2 flank + 1,) int64 for the maps file: at each reference offset -flank..flank from the variant, the
    offset (from the variant's reference position) of the aligned alternate base, :data:`NO_ALT` for none."""
    o = np.arange(-flank, flank + 1)
    t = v.offset + o
    inside = (t >= 0) & (t < L)
    j = np.full(o.shape, -1)
    j[inside] = alignment(v, L)[t[inside]]
    return np.where(j >= 0, j - v.offset, NO_ALT).astype(np.int64)
