"""Segmentation of a CRM PPM into motif segments: runs where the 3 bp smoothed information content exceeds 1 bit.

A CN CRM is usually one or several short motifs separated by uninformative gaps. As in NeuronMotif, the IC of
the (Laplace-smoothed) PPM is averaged over a 3 bp window and positions above ``ic_min`` (1 bit) are motif
positions; a run is extended over adjacent bases whose own IC exceeds ``ic_min`` (smoothing blurs the edges),
and runs shorter than ``min_len`` are dropped. The gaps between segments are what the syntax trees record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kipoi_dfim.neuronmotif.ppm import consensus, information_content


@dataclass
class Segment:
    """One motif segment of a CRM: PPM rows [start, end) (0-based, end exclusive)."""

    start: int
    end: int
    ppm: np.ndarray
    mean_ic: float
    label: str | None = None  # dictionary label, set by kipoi_dfim.neuronmotif.match.match_segments

    @property
    def consensus(self) -> str:
        """Most probable sequence of the segment."""
        return consensus(self.ppm)


def smoothed_ic(ppm: np.ndarray, window: int = 3) -> np.ndarray:
    """IC averaged over a centred window (edges use the part of the window inside the PPM)."""
    ic = information_content(ppm)
    kernel = np.ones(window)
    num = np.convolve(ic, kernel, mode="same")
    den = np.convolve(np.ones_like(ic), kernel, mode="same")
    return num / den


def segment(ppm: np.ndarray, ic_min: float = 1.0, window: int = 3, min_len: int = 4) -> list[Segment]:
    """Motif segments of a PPM (see the module docstring)."""
    ppm = np.asarray(ppm, dtype=np.float64)
    on = smoothed_ic(ppm, window) > ic_min
    ic = information_content(ppm)
    out, i, n = [], 0, len(on)
    while i < n:
        if not on[i]:
            i += 1
            continue
        j = i
        while j < n and on[j]:
            j += 1
        a, b = i, j
        # smoothing pulls an informative edge base below the threshold (its outer neighbour has ~0 bits):
        # take back adjacent bases whose own IC exceeds it
        while a > 0 and ic[a - 1] > ic_min and (not out or a - 1 >= out[-1].end):
            a -= 1
        while b < n and ic[b] > ic_min and not on[b]:
            b += 1
        if b - a >= min_len:
            out.append(Segment(a, b, ppm[a:b].copy(), float(ic[a:b].mean())))
        i = max(j, b)
    return out
