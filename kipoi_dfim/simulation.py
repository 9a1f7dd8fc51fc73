"""A simulated regulatory grammar with a known motif interaction (numpy only, seeded).

The grammar follows the spirit of section 3.1 of the DFIM paper (Greenside et al., 2018): a DFIM method is only
credible if it recovers an interaction we planted ourselves. Every sequence is random background with GC
content 0.46 (A,T 0.27; C,G 0.23). The positive class needs *two* motifs that must co-occur, a GATA site
(``WGATAR``, e.g. ``AGATAA``) and a TAL1 E-box (``CAGCTG``); they are placed next to each other (centres 7-14
bp apart, either order, either strand) so that a variant in one motif has its partner inside the +-15 bp DFIM
target window. Negatives carry only one of the two (either one). Two distractor motifs, a CTCF-like site
(``CCASYAGRKGGCRS``) and an AP-1 site (``TGASTCA``), appear independently at random in both classes, so a
model must ignore them: they carry no label information and must not interact with anything.

Sites are sampled from hand-written position weight matrices built from IUPAC consensus strings, so they
vary at the ambiguous positions (W, R, S, Y, K) as real sites do. Background is scrubbed of every consensus
hit, on both strands, and no site contains another motif's consensus, so the label is exactly determined by
the planted sites and the placements returned here are the complete truth. (Mismatched sites, ``noise`` > 0,
are possible but off by default: a site with a mismatch is indistinguishable from background 5-of-6 matches,
which would cap the attainable AUROC and blur the truth.)

Randomness: sequence ``i`` of a data set is drawn from ``numpy.random.SeedSequence([seed, i])``, so it does not
depend on how many sequences are simulated.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from kipoi_dfim.sequence import ALPHABET, background_frequencies, decode, one_hot, reverse_complement_str

GC = 0.46
"""GC fraction of the simulated background (the paper's value)."""

MOTIFS: dict[str, str] = {
    "gata": "WGATAR",
    "tal1": "CAGCTG",
    "ctcf": "CCASYAGRKGGCRS",
    "ap1": "TGASTCA",
}
"""IUPAC consensus of every motif of the grammar, forward strand."""

CONSENSUS: dict[str, str] = {
    "gata": "AGATAA",
    "tal1": "CAGCTG",
    "ctcf": "CCACCAGGGGGCGC",
    "ap1": "TGAGTCA",
}
"""One fixed best site per motif (used for clean example contigs)."""

INTERACTING_PAIR: tuple[str, str] = ("gata", "tal1")
"""The two motifs whose co-occurrence defines the positive class."""

DISTRACTORS: tuple[str, str] = ("ctcf", "ap1")
"""Motifs present at random in both classes; they carry no label information."""

PAIR_SPACING: tuple[int, int] = (7, 14)
"""Inclusive range of the centre-to-centre distance (bp) between the two interacting motifs."""

_IUPAC: dict[str, str] = {
    "A": "A", "C": "C", "G": "G", "T": "T", "R": "AG", "Y": "CT", "S": "CG", "W": "AT",
    "K": "GT", "M": "AC", "B": "CGT", "D": "AGT", "H": "ACT", "V": "ACG", "N": "ACGT",
}


@dataclass(frozen=True)
class MotifSite:
    """One planted motif: ``seq[start:end]`` (0-based, half-open) holds ``site`` on the forward strand.

    ``strand`` tells whether the motif was planted as given in :data:`MOTIFS` (``"+"``) or reverse complemented
    (``"-"``); ``site`` is always the forward-strand text found in the sequence.
    """

    name: str
    start: int
    end: int
    strand: str
    site: str

    @property
    def centre(self) -> float:
        """Centre of the site in sequence coordinates (half-integer for even lengths)."""
        return (self.start + self.end - 1) / 2.0


def motif_pwm(name: str, noise: float = 0.0, gc: float = GC) -> np.ndarray:
    """Position weight matrix (len, 4) ACGT of a motif of the grammar.

    The IUPAC consensus, ambiguous letters split evenly, optionally mixed with the background frequencies with
    weight ``noise`` (then sampled sites now and then carry a mismatch). With the default ``noise=0`` every
    sampled site matches the consensus, which keeps the simulated labels exact.
    """
    bg = background_frequencies(gc).astype(np.float64)
    rows = []
    for letter in MOTIFS[name]:
        allowed = _IUPAC[letter]
        row = np.array([1.0 if b in allowed else 0.0 for b in ALPHABET]) / len(allowed)
        rows.append((1.0 - noise) * row + noise * bg)
    return np.array(rows)


def sample_site(name: str, rng: np.random.Generator, noise: float = 0.0) -> str:
    """Draw one forward-strand site of motif ``name`` from its PWM."""
    pwm = motif_pwm(name, noise=noise)
    u = rng.random(len(pwm))[:, None]
    idx = (u > np.cumsum(pwm, axis=1)).sum(axis=1)
    return "".join(ALPHABET[min(i, 3)] for i in idx)


def _consensus_regex(name: str) -> re.Pattern:
    """A regex matching the IUPAC consensus of ``name`` on either strand."""
    fwd = "".join(f"[{_IUPAC[c]}]" for c in MOTIFS[name])
    rc_consensus = reverse_complement_str(MOTIFS[name].translate(str.maketrans("RYKMBDHV", "YRMKVHDB")))
    rev = "".join(f"[{_IUPAC[c]}]" for c in rc_consensus)
    return re.compile(f"(?=({fwd}|{rev}))")


_HIT_PATTERNS = {name: _consensus_regex(name) for name in MOTIFS}


def consensus_hits(seq: str, names: tuple[str, ...] | None = None) -> list[tuple[str, int]]:
    """All (motif, start) where ``seq`` matches a motif's IUPAC consensus on either strand."""
    hits = []
    for name in names or tuple(MOTIFS):
        hits.extend((name, m.start()) for m in _HIT_PATTERNS[name].finditer(seq))
    return sorted(hits, key=lambda h: (h[1], h[0]))


def random_background(length: int, rng: np.random.Generator, gc: float = GC, scrub: bool = True) -> str:
    """i.i.d. background with the given GC content, optionally scrubbed of every motif's consensus.

    Scrubbing resamples the bases of any chance consensus hit until none is left, so that labels and
    placements describe the sequence completely (a chance GATA next to a lone TAL1 would otherwise make a
    'negative' that is really positive).
    """
    seq = "".join(np.array(list(ALPHABET))[rng.choice(4, size=length, p=_bg_probs(gc))])
    return scrub_unplanted(seq, [], rng, gc) if scrub else seq


def _bg_probs(gc: float) -> np.ndarray:
    p = background_frequencies(gc).astype(np.float64)
    return p / p.sum()


def scrub_unplanted(seq: str, sites: list[MotifSite], rng: np.random.Generator, gc: float = GC) -> str:
    """Resample background bases until no consensus hit is left except the planted ``sites``.

    Only bases outside the planted sites are changed, so hits that straddle a site and its flank (a chance
    ``CAGC`` before a planted ``TG...``) are broken on the background side.
    """
    planted = {(s.name, s.start) for s in sites}
    fixed = np.zeros(len(seq), dtype=bool)
    for s in sites:
        fixed[s.start:s.end] = True
    p = _bg_probs(gc)
    chars = list(seq)
    for _ in range(1000):
        extra = [h for h in consensus_hits("".join(chars)) if h not in planted]
        if not extra:
            return "".join(chars)
        for name, start in extra:
            free = [j for j in range(start, start + len(MOTIFS[name])) if not fixed[j]]
            if not free:
                raise ValueError(f"unplanted {name} hit at {start} lies entirely inside planted sites")
            for j in free:
                chars[j] = ALPHABET[rng.choice(4, p=p)]
    raise RuntimeError("could not scrub motif hits from the background")  # pragma: no cover


def embed_motif(seq: str | np.ndarray, site: str, start: int) -> str | np.ndarray:
    """Return a copy of ``seq`` with ``site`` written at ``start`` (0-based).

    ``seq`` is either a string or a one-hot (L, 4) ACGT array; the result has the same type. Raises
    ValueError when the site does not fit, rather than silently truncating it.
    """
    if start < 0 or start + len(site) > len(seq):
        raise ValueError(f"site of length {len(site)} at {start} does not fit a sequence of length {len(seq)}")
    if isinstance(seq, str):
        return seq[:start] + site + seq[start + len(site):]
    out = np.array(seq, copy=True)
    out[start:start + len(site)] = one_hot(site, dtype=out.dtype)
    return out


def _free_starts(occupied: np.ndarray, width: int, lo: int, hi: int, pad: int) -> np.ndarray:
    """Starts s in [lo, hi - width] where [s - pad, s + width + pad) holds no planted base."""
    starts = np.arange(lo, hi - width + 1)
    if len(starts) == 0:
        return starts
    csum = np.concatenate([[0], np.cumsum(occupied)])
    a = np.clip(starts - pad, 0, len(occupied))
    b = np.clip(starts + width + pad, 0, len(occupied))
    return starts[(csum[b] - csum[a]) == 0]


def _oriented_site(name: str, rng: np.random.Generator, noise: float, strand: str | None) -> tuple[str, str]:
    """A sampled site and its strand, reverse complemented when planted on the minus strand.

    Sites that contain another motif's consensus (a degenerate CTCF site can spell ``CAGCTG``) are redrawn,
    so a distractor never carries a hidden interacting motif.
    """
    for _ in range(1000):
        site = sample_site(name, rng, noise)
        if all(h == (name, 0) for h in consensus_hits(site)):
            break
    else:  # pragma: no cover
        raise RuntimeError(f"could not sample a clean {name} site")
    strand = strand or ("+" if rng.random() < 0.5 else "-")
    return (site if strand == "+" else reverse_complement_str(site)), strand


def _place_pair(
    occupied: np.ndarray, rng: np.random.Generator, region: tuple[int, int], noise: float,
    spacing: tuple[int, int], pad: int,
) -> list[MotifSite]:
    """Place the interacting pair as one unit: random order, strands and centre distance."""
    a, b = INTERACTING_PAIR if rng.random() < 0.5 else INTERACTING_PAIR[::-1]
    site_a, strand_a = _oriented_site(a, rng, noise, None)
    site_b, strand_b = _oriented_site(b, rng, noise, None)
    dist = int(rng.integers(spacing[0], spacing[1] + 1))
    # centre distance -> start offset of b relative to a (motifs may differ in length)
    offset = int(round(dist + (len(site_a) - len(site_b)) / 2.0))
    if offset < len(site_a):
        raise ValueError(f"pair spacing {spacing} makes the two motifs overlap")
    width = offset + len(site_b)
    starts = _free_starts(occupied, width, region[0], region[1], pad)
    if len(starts) == 0:
        raise ValueError(f"no room for the motif pair in region {region}")
    s = int(rng.choice(starts))
    sites = [MotifSite(a, s, s + len(site_a), strand_a, site_a),
             MotifSite(b, s + offset, s + offset + len(site_b), strand_b, site_b)]
    occupied[s:s + width] = 1
    return sites


def _place_single(
    name: str, occupied: np.ndarray, rng: np.random.Generator, region: tuple[int, int], noise: float, pad: int,
) -> MotifSite:
    """Place one motif at a random free position of the region."""
    site, strand = _oriented_site(name, rng, noise, None)
    starts = _free_starts(occupied, len(site), region[0], region[1], pad)
    if len(starts) == 0:
        raise ValueError(f"no room for motif {name} in region {region}")
    s = int(rng.choice(starts))
    occupied[s:s + len(site)] = 1
    return MotifSite(name, s, s + len(site), strand, site)


def simulate_sequence(
    label: int,
    rng: np.random.Generator,
    seq_len: int = 200,
    region: tuple[int, int] | None = None,
    distractor_prob: float = 0.5,
    noise: float = 0.0,
    spacing: tuple[int, int] = PAIR_SPACING,
    pad: int = 2,
) -> tuple[str, list[MotifSite]]:
    """One sequence of the grammar and its planted sites (sorted by start).

    Parameters
    ----------
    label : int
        1: the interacting pair (GATA + TAL1, centres ``spacing`` bp apart); 0: only one of them, either one.
    rng : numpy.random.Generator
        Source of all randomness for this sequence.
    seq_len : int
        Length of the sequence.
    region : (int, int), optional
        Half-open span the motifs must lie in (default: the whole sequence). Example contigs use it to keep
        the grammar where a window centred on any variant fits inside the contig.
    distractor_prob : float
        Probability that each distractor (CTCF, AP-1) is present, independently and in both classes.
    noise : float
        PWM mixing weight with background (site variation).
    spacing : (int, int)
        Inclusive centre-to-centre distance range of the pair.
    pad : int
        Minimum number of background bases between planted motifs.
    """
    region = region or (0, seq_len)
    occupied = np.zeros(seq_len, dtype=np.int8)
    if label:
        sites = _place_pair(occupied, rng, region, noise, spacing, pad)
    else:
        lone = INTERACTING_PAIR[int(rng.integers(2))]
        sites = [_place_single(lone, occupied, rng, region, noise, pad)]
    for name in DISTRACTORS:
        if rng.random() < distractor_prob:
            sites.append(_place_single(name, occupied, rng, region, noise, pad))
    seq = random_background(seq_len, rng, scrub=False)
    for site in sites:
        seq = embed_motif(seq, site.site, site.start)
    return scrub_unplanted(seq, sites, rng), sorted(sites, key=lambda m: m.start)


def simulate_dataset(
    n: int,
    seq_len: int = 200,
    seed: int = 0,
    pos_fraction: float = 0.5,
    **kwargs,
) -> tuple[np.ndarray, np.ndarray, list[list[MotifSite]]]:
    """Simulate ``n`` labelled sequences of the grammar.

    Each sequence has its own random stream ``SeedSequence([seed, i])``: sequence ``i`` is the same whatever
    ``n`` is, so a test set of 500 is a prefix of a test set of 5000 with the same seed.

    Parameters
    ----------
    n : int
        Number of sequences.
    seq_len : int
        Sequence length (the trained models take 200).
    seed : int
        Seed of the data set.
    pos_fraction : float
        Probability that a sequence is positive.
    **kwargs
        Passed to :func:`simulate_sequence` (``distractor_prob``, ``noise``, ``spacing``, ``region``, ``pad``).

    Returns
    -------
    onehot : float32 (n, seq_len, 4), ACGT
    labels : int64 (n,)
    placements : list of lists of :class:`MotifSite`, one list per sequence
    """
    seqs, labels, placements = [], [], []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        label = int(rng.random() < pos_fraction)
        seq, sites = simulate_sequence(label, rng, seq_len=seq_len, **kwargs)
        seqs.append(seq)
        labels.append(label)
        placements.append(sites)
    onehot = one_hot(seqs) if n else np.zeros((0, seq_len, 4), np.float32)
    return onehot, np.array(labels, dtype=np.int64), placements


def interacting_pairs(sites: list[MotifSite]) -> list[tuple[MotifSite, MotifSite]]:
    """The (GATA, TAL1) pairs planted together in one sequence (empty for negatives)."""
    a = [s for s in sites if s.name == INTERACTING_PAIR[0]]
    b = [s for s in sites if s.name == INTERACTING_PAIR[1]]
    return [(x, y) for x in a for y in b]


def ablate_site(x: np.ndarray, site: MotifSite, gc: float = GC) -> np.ndarray:
    """Copy of one-hot ``x`` (L, 4) with the site's span filled with background frequencies.

    This is the DFIM paper's way to remove a motif (motif-level FIS mutates a source motif this way), and
    lets tests check that a model needs both interacting motifs and ignores the distractors.
    """
    out = np.array(x, dtype=np.float32, copy=True)
    out[site.start:site.end] = background_frequencies(gc)
    return out


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties counted half.

    Kept here, numpy only, so the training scripts report the same number the tests check with scikit-learn.
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both classes")
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def write_fasta(path: str, records: list[tuple[str, str]], line_width: int = 60) -> None:
    """Write ``(name, sequence)`` records to a FASTA file and its samtools-style ``.fai`` index.

    Writing the index ourselves (instead of letting pyfaidx create it on first read) keeps model dirs and
    example folders read-only at run time.
    """
    fai_rows, offset, chunks = [], 0, []
    for name, seq in records:
        header = f">{name}\n"
        offset += len(header)
        lines = [seq[i:i + line_width] for i in range(0, len(seq), line_width)]
        body = "".join(line + "\n" for line in lines)
        fai_rows.append(f"{name}\t{len(seq)}\t{offset}\t{line_width}\t{line_width + 1}\n")
        chunks.append(header + body)
        offset += len(body)
    with open(path, "w") as fh:
        fh.write("".join(chunks))
    with open(path + ".fai", "w") as fh:
        fh.write("".join(fai_rows))


def write_kipoi_examples(out_dir: str, n: int = 24, seed: int = 7, seq_len: int = 200) -> tuple[str, str]:
    """Write the example files of a simulated-grammar Kipoi model dir: a FASTA of ``n`` simulated
    sequences (one contig each, with ``.fai``) and a BED of their full spans with the true label.

    Returns the paths (bed, fasta). ``kipoi test`` runs the model's dataloader on these, offline.
    """
    os.makedirs(out_dir, exist_ok=True)
    x, labels, _ = simulate_dataset(n, seq_len=seq_len, seed=seed)
    names = [f"sim{i:03d}" for i in range(n)]
    fasta = os.path.join(out_dir, "sim_sequences.fa")
    bed = os.path.join(out_dir, "intervals.bed")
    write_fasta(fasta, list(zip(names, decode(x), strict=True)))
    with open(bed, "w") as fh:
        fh.writelines(f"{name}\t0\t{seq_len}\t{int(y)}\n" for name, y in zip(names, labels, strict=True))
    return bed, fasta


def ablation_augment(
    x: np.ndarray, labels: np.ndarray, placements: list[list[MotifSite]], frac: float, seed: int,
    gc: float = GC,
) -> tuple[np.ndarray, np.ndarray]:
    """Training augmentation: in a fraction ``frac`` of sequences fill one random planted site with
    background frequencies (:func:`ablate_site`) and relabel by the grammar.

    Why: DFIM's motif-level scores remove a motif exactly this way, with soft (non one-hot) columns a model
    trained on one-hot data never saw; without this a conv filter can still half-fire on the fill (the torch
    model did for GATA). Removing a pair member makes a positive negative; removing a distractor or a lone
    motif keeps the label. Returns new arrays; the inputs are not modified.
    """
    rng = np.random.default_rng(seed)
    x, labels = np.array(x, dtype=np.float32, copy=True), np.array(labels, copy=True)
    for i in np.flatnonzero(rng.random(len(x)) < frac):
        if not placements[i]:
            continue
        site = placements[i][int(rng.integers(len(placements[i])))]
        x[i] = ablate_site(x[i], site, gc)
        if site.name in INTERACTING_PAIR:
            labels[i] = 0
    return x, labels
