"""Write example_vcfs/sim/: simulated contigs with the GATA-TAL1 grammar, a VCF of known variants, the truth.

Usage: python scripts/make_sim_examples.py [--out example_vcfs/sim] [--seed 11]

Files:
- ``sim_contigs.fa`` (+ ``.fai``): 400 bp contigs of GC-0.46 background. Every planted motif lies in
  [110, 290), so a 200 bp window centred on any example variant lies inside its contig.
- ``sim_variants.vcf``: VCF 4.2, sorted, ``##contig`` lines with lengths, ``##reference``; INFO/CLASS repeats
  the class the ID already tells:
  ``int_gata_*`` / ``int_tal1_*``  SNVs in a core base of one motif of an interacting pair, the partner motif
  entirely within +-15 bp (centre distance 7-10 bp); the ALT breaks the motif.
  ``lone_*``  SNVs in a GATA or TAL1 site without partner (a negative-class contig).
  ``distractor_ctcf_*`` / ``distractor_ap1_*``  SNVs in distractor motifs, >= 30 bp from the pair.
  ``bg_*``  SNVs in plain background, >= 20 bp from any motif and >= 30 bp from the pair.
  ``indel_*``  a background deletion and insertion (class ``indel``; scored since indels are, neutral).
  ``multiallelic_*``, ``refmismatch_*``  a record with two ALTs; a REF that disagrees with the FASTA.
  Appended later (drawn after every record above, so those are unchanged):
  ``int_del_*``  VCF 4.2 anchored deletions of one core base of a pair motif (class ``interacting_indel``);
  the partner loses its importance; partner offsets are in reference coordinates, from the anchor (POS).
  ``bg_indel_*``  1-3 bp insertions/deletions in plain background (class ``background_indel``); the last one
  is written right-shifted in a homopolymer on purpose (flagged ``not_normalized``).
  ``spacer_ins_*``  a 2 bp insertion between the two motifs of the pair (class ``spacer_indel``): the partner
  moves by 2 bp but the spacing stays in the trained range, so aligned FIS stays small.
- ``sim_truth.tsv``: one row per record: id, chrom, pos, ref, alt, class, motif, motif_start, motif_end
  (1-based, inclusive), partner, partner_start_offset, partner_end_offset (offsets of the partner's first and
  last base relative to the variant, as in the maps H5 ``offsets``; empty when there is no partner).
- ``sim_motifs.bed``: every planted motif (BED6, 0-based half-open, strand of the motif).

Deterministic for a given seed; contig ``k`` has its own stream ``SeedSequence([seed, k])``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kipoi_dfim.sequence import reverse_complement_str  # noqa: E402
from kipoi_dfim.simulation import (  # noqa: E402
    CONSENSUS,
    MotifSite,
    consensus_hits,
    embed_motif,
    random_background,
    scrub_unplanted,
    write_fasta,
)

CONTIG_LEN = 400
REGION = (110, 290)
EXAMPLE_SPACING = (7, 10)
N_PAIR_CONTIGS = 10
N_LONE_CONTIGS = 2
N_DISTRACTOR_SNVS = 3  # per distractor motif
WINDOW_REACH = 95  # a 200 bp window centred within 95 bp of the pair holds the whole pair (5 bp margin)
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}
# bases of the forward consensus an interacting SNV may hit: GATA's core G-A-T-A, any base of the E-box
CORE = {"gata": (1, 2, 3, 4), "tal1": (0, 1, 2, 3, 4, 5)}


@dataclass
class Record:
    """One VCF record plus its truth annotation."""

    id: str
    chrom: str
    pos: int  # 1-based
    ref: str
    alt: str
    cls: str
    motif: MotifSite | None = None
    partner: MotifSite | None = None


def _site(name: str, start: int, rng: np.random.Generator) -> MotifSite:
    """The consensus site of ``name`` at ``start`` on a random strand."""
    strand = "+" if rng.random() < 0.5 else "-"
    text = CONSENSUS[name] if strand == "+" else reverse_complement_str(CONSENSUS[name])
    return MotifSite(name, start, start + len(text), strand, text)


def _make_pair_contig(rng: np.random.Generator, distractors: tuple[str, ...]) -> tuple[str, list[MotifSite]]:
    """Interacting pair near the contig centre; distractors on the flanks, >= 30 bp from the pair."""
    first, second = ("gata", "tal1") if rng.random() < 0.5 else ("tal1", "gata")
    spacing = int(rng.integers(EXAMPLE_SPACING[0], EXAMPLE_SPACING[1] + 1))  # both motifs are 6 bp
    start = int(rng.integers(180, 205))
    sites = [_site(first, start, rng), _site(second, start + spacing, rng)]
    end = start + spacing + 6
    # flanks >= 30 bp from the pair yet close enough that a window centred on a distractor holds the pair
    flanks = [(end - WINDOW_REACH, start - 30), (end + 30, start + WINDOW_REACH)]
    for name, (lo, hi) in zip(distractors, flanks, strict=False):
        width = len(CONSENSUS[name])
        sites.append(_site(name, int(rng.integers(lo, hi - width + 1)), rng))
    return _fill(rng, sites)


def _make_lone_contig(rng: np.random.Generator, name: str) -> tuple[str, list[MotifSite]]:
    """One interacting motif without its partner near the centre, an AP-1 distractor on a flank."""
    start = int(rng.integers(180, 205))
    sites = [_site(name, start, rng), _site("ap1", int(rng.integers(REGION[0], start - 37)), rng)]
    return _fill(rng, sites)


def _fill(rng: np.random.Generator, sites: list[MotifSite]) -> tuple[str, list[MotifSite]]:
    """Background, planted sites, then background scrubbed of chance motif hits."""
    seq = random_background(CONTIG_LEN, rng, scrub=False)
    for site in sites:
        seq = embed_motif(seq, site.site, site.start)
    return scrub_unplanted(seq, sites, rng), sorted(sites, key=lambda s: s.start)


def _motif_snv(seq: str, site: MotifSite, rng: np.random.Generator) -> tuple[int, str, str]:
    """0-based position, REF and ALT of an SNV that hits a core base of ``site`` and breaks it."""
    width = site.end - site.start
    core = CORE.get(site.name, tuple(range(width)))
    # consensus index -> sequence offset (minus-strand sites are read backwards)
    offsets = [i if site.strand == "+" else width - 1 - i for i in core]
    for _ in range(100):
        pos = site.start + int(rng.choice(offsets))
        ref = seq[pos]
        alt = COMPLEMENT[ref]
        mutated = seq[:pos] + alt + seq[pos + 1:]
        if not consensus_hits(mutated[site.start:site.end], (site.name,)) and not _new_hits(seq, mutated, pos):
            return pos, ref, alt
    raise RuntimeError(f"no breaking SNV found in {site}")  # pragma: no cover


def _new_hits(seq: str, mutated: str, pos: int, flank: int = 20) -> bool:
    """Whether an SNV at ``pos`` creates a motif hit that was not there (a bg variant must stay neutral)."""
    lo, hi = max(0, pos - flank), pos + flank
    return bool(set(consensus_hits(mutated[lo:hi])) - set(consensus_hits(seq[lo:hi])))


def _background_positions(sites: list[MotifSite], pair: list[MotifSite]) -> np.ndarray:
    """0-based positions in REGION that are >= 20 bp from any motif and >= 30 bp from the pair, and whose
    centred 200 bp window still holds the whole pair (so the model is 'on' and only the variant is neutral)."""
    pos = np.arange(*REGION)
    lo, hi = min(s.start for s in pair), max(s.end for s in pair)
    ok = (pos >= hi - WINDOW_REACH) & (pos <= lo + WINDOW_REACH)
    for s in sites:
        margin = 30 if s in pair else 20
        ok &= (pos < s.start - margin) | (pos >= s.end + margin)
    return pos[ok]


def _background_snv(seq: str, candidates: np.ndarray, used: set[int], rng: np.random.Generator):
    """A background SNV (pos, ref, alt) at an unused candidate position that creates no motif."""
    for _ in range(1000):
        pos = int(rng.choice(candidates))
        if any(abs(pos - u) < 3 for u in used):
            continue
        alt = COMPLEMENT[seq[pos]]
        if not _new_hits(seq, seq[:pos] + alt + seq[pos + 1:], pos):
            used.add(pos)
            return pos, seq[pos], alt
    raise RuntimeError("no background position left")  # pragma: no cover


def _no_new_motif(seq: str, mutated: str, pos: int, delta: int, flank: int = 20) -> bool:
    """Whether an indel at ``pos`` (length change ``delta``) creates no motif hit that was not there."""
    lo, hi = max(0, pos - flank), pos + flank
    before = Counter(n for n, _ in consensus_hits(seq[lo:hi]))
    after = Counter(n for n, _ in consensus_hits(mutated[lo : hi + delta]))
    return not (after - before)


def _motif_deletion(seq: str, site: MotifSite, rng: np.random.Generator) -> tuple[int, str, str]:
    """0-based anchor position, REF, ALT of a left-aligned deletion of one inner core base of ``site`` that
    breaks it; the anchor is inside the site too (so the variant lies in the motif, as the SNVs do). Inner:
    deleting an end base leaves 5 of 6 bases in place next to a genome base, which a CNN may still half-read."""
    width = site.end - site.start
    core = [i for i in CORE.get(site.name, tuple(range(width))) if 0 < i < width - 1]
    offsets = [i if site.strand == "+" else width - 1 - i for i in core]
    for _ in range(200):
        p = site.start + int(rng.choice(offsets))
        if p - 1 < site.start or seq[p - 1] == seq[p]:
            continue
        mutated = seq[:p] + seq[p + 1:]
        lo = max(0, site.start - 8)
        if consensus_hits(mutated[lo : site.end + 7], (site.name,)):
            continue
        if _no_new_motif(seq, mutated, p, -1):
            return p - 1, seq[p - 1 : p + 1], seq[p - 1]
    raise RuntimeError(f"no breaking deletion found in {site}")  # pragma: no cover


def _background_indel(seq: str, candidates: np.ndarray, used: set[int], rng: np.random.Generator,
                      insertion: bool, size: int, right_shifted: bool = False) -> tuple[int, str, str]:
    """A background indel (anchor position, REF, ALT), left-aligned unless ``right_shifted`` (then a 1 bp
    deletion written at the right end of a run of equal bases, which normalisation would move left)."""
    for _ in range(2000):
        a = int(rng.choice(candidates))
        if any(abs(a - u) < 5 for u in used):
            continue
        if right_shifted:
            if seq[a] != seq[a + 1] or seq[a + 1] == seq[a + 2]:
                continue
            ref, alt = seq[a : a + 2], seq[a]
        elif insertion:
            ins = "".join(rng.choice(list("ACGT"), size))
            if ins[-1] == seq[a]:
                continue
            ref, alt = seq[a], seq[a] + ins
        else:
            if seq[a] == seq[a + size]:
                continue
            ref, alt = seq[a : a + size + 1], seq[a]
        mutated = seq[:a] + alt + seq[a + len(ref):]
        if _no_new_motif(seq, mutated, a + 1, len(alt) - len(ref)):
            used.add(a)
            return a, ref, alt
    raise RuntimeError("no background indel position left")  # pragma: no cover


def _spacer_insertion(seq: str, pair: list[MotifSite], rng: np.random.Generator) -> tuple[int, str, str]:
    """A left-aligned 2 bp insertion between the two motifs of the pair (both stay intact)."""
    first, second = sorted(pair, key=lambda s: s.start)
    for _ in range(200):
        a = int(rng.integers(first.end - 1, second.start))  # insert after a, before a + 1 <= second.start
        ins = "".join(rng.choice(list("ACGT"), 2))
        mutated = seq[: a + 1] + ins + seq[a + 1:]
        if ins[-1] != seq[a] and _no_new_motif(seq, mutated, a + 1, 2):
            return a, seq[a], seq[a] + ins
    raise RuntimeError("no spacer insertion found")  # pragma: no cover


def _add_indels(k: int, chrom: str, seq: str, pair: list[MotifSite], bg: np.ndarray, used: set[int],
                rng: np.random.Generator, add) -> None:
    """The indel records appended to the example (their draws come after every earlier draw of the contig)."""
    if k < 4:  # a deletion in GATA (even k) or TAL1 (odd k)
        s = next(p for p in pair if p.name == ("gata", "tal1")[k % 2])
        a, ref, alt = _motif_deletion(seq, s, rng)
        add("int_del", chrom, a, ref, alt, "interacting_indel", s, next(p for p in pair if p != s))
    elif k < 8:
        a, ref, alt = _background_indel(seq, bg, used, rng, insertion=k % 2 == 1, size=1 + (k - 4) % 3,
                                        right_shifted=k == 7)
        add("bg_indel", chrom, a, ref, alt, "background_indel")
    elif k < N_PAIR_CONTIGS:
        add("spacer_ins", chrom, *_spacer_insertion(seq, pair, rng), "spacer_indel")


def build(seed: int) -> tuple[list[tuple[str, str]], list[Record], list[tuple[str, MotifSite]]]:
    """Contigs, records and planted sites of the example set."""
    contigs, records, planted = [], [], []
    counters: dict[str, int] = {}

    def add(prefix: str, chrom: str, pos0: int, ref: str, alt: str, cls: str, motif=None, partner=None):
        counters[prefix] = counters.get(prefix, 0) + 1
        records.append(Record(f"{prefix}_{counters[prefix]}", chrom, pos0 + 1, ref, alt, cls, motif, partner))

    n_contigs = N_PAIR_CONTIGS + N_LONE_CONTIGS
    for k in range(n_contigs):
        rng = np.random.default_rng(np.random.SeedSequence([seed, k]))
        chrom = f"sim{k + 1:02d}"
        if k < N_PAIR_CONTIGS:
            distractors = [("ctcf", "ap1"), ("ap1", "ctcf"), ("ctcf",), ("ap1",)][k % 4]
            seq, sites = _make_pair_contig(rng, distractors)
        else:
            seq, sites = _make_lone_contig(rng, ("gata", "tal1")[k - N_PAIR_CONTIGS])
        contigs.append((chrom, seq))
        planted.extend((chrom, s) for s in sites)
        pair = [s for s in sites if s.name in ("gata", "tal1")]
        used = set()
        for s in sites:
            pos, ref, alt = _motif_snv(seq, s, rng)
            used.add(pos)
            if s.name in ("ctcf", "ap1"):
                if counters.get(f"distractor_{s.name}", 0) < N_DISTRACTOR_SNVS:
                    add(f"distractor_{s.name}", chrom, pos, ref, alt, "distractor", s)
                else:
                    used.discard(pos)
            elif len(pair) == 2:
                add(f"int_{s.name}", chrom, pos, ref, alt, "interacting", s, next(p for p in pair if p != s))
            else:
                add(f"lone_{s.name}", chrom, pos, ref, alt, "lone", s)
        bg = _background_positions(sites, pair)
        n_bg = 1 if k < 8 else 0
        for _ in range(n_bg):
            add("bg", chrom, *_background_snv(seq, bg, used, rng), "background")
        if k in (8, 9, 10, 11):
            pos, ref, _ = _background_snv(seq, bg, used, rng)
            if k == 8:  # deletion of one base
                add("indel", chrom, pos, seq[pos:pos + 2], seq[pos], "indel")
            elif k == 9:  # insertion
                add("indel", chrom, pos, ref, ref + COMPLEMENT[ref], "indel")
            elif k == 10:
                add("multiallelic", chrom, pos, ref, ",".join([b for b in "ACGT" if b != ref][:2]), "multiallelic")
            else:  # REF disagrees with the FASTA on purpose
                wrong = COMPLEMENT[ref]
                alt = next(b for b in "ACGT" if b not in (ref, wrong))
                add("refmismatch", chrom, pos, wrong, alt, "ref_mismatch")
        if len(pair) == 2:
            _add_indels(k, chrom, seq, pair, bg, used, rng, add)
    records.sort(key=lambda r: (r.chrom, r.pos))
    return contigs, records, planted


def write_vcf(path: str, contigs: list[tuple[str, str]], records: list[Record], fasta_name: str) -> None:
    """VCF 4.2 with ##contig lengths and ##reference; records already sorted."""
    header = ["##fileformat=VCFv4.2",
              "##source=kipoi-dfim scripts/make_sim_examples.py (simulated GATA-TAL1 grammar)",
              f"##reference={fasta_name}"]
    header += [f"##contig=<ID={name},length={len(seq)}>" for name, seq in contigs]
    header += ['##INFO=<ID=CLASS,Number=1,Type=String,Description="Simulated truth class: interacting, lone, '
               'distractor, background, indel, multiallelic, ref_mismatch, interacting_indel, background_indel, '
               'spacer_indel">',
               "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    lines = [f"{r.chrom}\t{r.pos}\t{r.id}\t{r.ref}\t{r.alt}\t.\t.\tCLASS={r.cls}" for r in records]
    with open(path, "w") as fh:
        fh.write("\n".join(header + lines) + "\n")


def write_truth(path: str, records: list[Record]) -> None:
    """The truth TSV described in the module docstring."""
    cols = ["id", "chrom", "pos", "ref", "alt", "class", "motif", "motif_start", "motif_end", "partner",
            "partner_start_offset", "partner_end_offset"]
    rows = ["\t".join(cols)]
    for r in records:
        m, p, v0 = r.motif, r.partner, r.pos - 1
        rows.append("\t".join(str(x) for x in [
            r.id, r.chrom, r.pos, r.ref, r.alt, r.cls,
            m.name if m else "", m.start + 1 if m else "", m.end if m else "",
            p.name if p else "", p.start - v0 if p else "", p.end - 1 - v0 if p else ""]))
    with open(path, "w") as fh:
        fh.write("\n".join(rows) + "\n")


def write_motif_bed(path: str, planted: list[tuple[str, MotifSite]]) -> None:
    """Every planted motif as BED6."""
    with open(path, "w") as fh:
        fh.writelines(f"{c}\t{s.start}\t{s.end}\t{s.name}\t0\t{s.strand}\n" for c, s in planted)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("example_vcfs", "sim"))
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    contigs, records, planted = build(args.seed)
    write_fasta(os.path.join(args.out, "sim_contigs.fa"), contigs)
    write_vcf(os.path.join(args.out, "sim_variants.vcf"), contigs, records, "sim_contigs.fa")
    write_truth(os.path.join(args.out, "sim_truth.tsv"), records)
    write_motif_bed(os.path.join(args.out, "sim_motifs.bed"), planted)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.cls] = counts.get(r.cls, 0) + 1
    print(f"wrote {len(records)} records on {len(contigs)} contigs to {args.out}: {counts}")


if __name__ == "__main__":
    main()
