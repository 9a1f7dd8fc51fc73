"""VCF records -> variants -> reference/alternate one-hot windows.

Every (record, ALT) becomes a :class:`Variant` with a ``status``: ``"ok"`` when it can be scored, otherwise the
reason it was not (the record still reaches the output). Windows are centred on the variant and moved inside
the contig where they would cross its ends (flag ``window_shifted``); only a contig shorter than the model
input is padded with N (flag ``padded``).
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from kipoi_dfim.errors import InputError
from kipoi_dfim.sequence import one_hot

# statuses of (record, ALT) pairs that are reported but not scored
STATUS_OK = "ok"
NOT_SCORED = {
    "indel": "REF and ALT differ in length (indels are not scored)",
    "symbolic_allele": "symbolic ALT allele (<...>, breakends)",
    "star_allele": "ALT '*' (overlapping deletion)",
    "missing_alt": "ALT is missing ('.')",
    "ref_mismatch": "REF does not match the FASTA",
    "unknown_contig": "the contig is not in the FASTA",
    "n_at_variant": "N in REF, ALT or the FASTA at the variant",
    "not_acgt": "REF or ALT has letters other than ACGTN",
    "outside_contig": "the variant lies outside the contig",
}

_ACGTN = re.compile(r"^[ACGTNacgtn]+$")


@dataclass
class Variant:
    """One ALT allele of one VCF record, with where it sits in its model window."""

    record_index: int
    alt_index: int
    line: int
    chrom: str
    pos: int  # 1-based VCF POS
    ref: str
    alt: str
    vcf_id: str | None
    status: str = STATUS_OK
    flags: list[str] = field(default_factory=list)
    fasta_contig: str | None = None
    window_start: int = 0  # 0-based contig coordinate of the window's first base (may be < 0 when padded)
    offset: int = 0  # 0-based position of the variant's first base in the window

    @property
    def variant_id(self) -> str:
        """The VCF ID, or chrom:pos:ref:alt when it is missing."""
        if self.vcf_id and self.vcf_id != ".":
            ids = self.vcf_id.split(";")
            return ids[0] if len(ids) == 1 else self.vcf_id
        return f"{self.chrom}:{self.pos}:{self.ref}:{self.alt}"

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def span(self) -> range:
        """Window positions of the substituted bases."""
        return range(self.offset, self.offset + len(self.ref))


class Fasta:
    """A reference FASTA (pyfaidx) with contig names matched with or without a 'chr' prefix."""

    def __init__(self, path: str | os.PathLike):
        import pyfaidx

        path = str(path)
        if not os.path.exists(path):
            raise InputError("FASTA file not found", path=path)
        try:
            self.fa = pyfaidx.Fasta(path, as_raw=True, sequence_always_upper=True, rebuild=False)
        except Exception as e:  # noqa: BLE001 - pyfaidx raises several kinds
            raise InputError(f"cannot read FASTA ({type(e).__name__}: {e})", path=path) from e
        self.path = path
        self.lengths = {k: len(v) for k, v in self.fa.records.items()}

    def contig(self, chrom: str) -> str | None:
        """The FASTA's name for a VCF contig (tries chrom, chrom without 'chr', 'chr' + chrom, MT/chrM)."""
        cands = [chrom]
        if chrom.startswith("chr"):
            cands.append(chrom[3:])
        else:
            cands.append("chr" + chrom)
        if chrom in ("MT", "chrM", "M", "chrMT"):
            cands += ["MT", "chrM"]
        for c in cands:
            if c in self.lengths:
                return c
        return None

    def fetch(self, contig: str, start: int, end: int) -> str:
        """0-based half-open [start, end); positions outside the contig come back as N."""
        n = self.lengths[contig]
        left = max(0, -start)
        right = max(0, end - n)
        seq = self.fa[contig][max(start, 0) : min(end, n)] if min(end, n) > max(start, 0) else ""
        return "N" * left + str(seq) + "N" * right


def open_text(path: str):
    """Open a plain or gzip/bgzip-compressed text file (sniffed from its magic bytes) for reading."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt")
    return open(path)


def count_header_lines(path: str) -> int:
    """Number of lines before the first record (the '##' lines and '#CHROM')."""
    n = 0
    with open_text(path) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            n += 1
    return n


def open_vcf(path: str | os.PathLike):
    """Open a VCF/bgzipped VCF with cyvcf2; a missing or unreadable file is an InputError naming it."""
    import cyvcf2

    path = str(path)
    if not os.path.exists(path):
        raise InputError("VCF file not found", path=path)
    try:
        with open_text(path) as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise InputError(f"cannot read VCF ({e})", path=path) from e
    if not first.startswith("##fileformat=VCF"):
        raise InputError(f"not a VCF: the first line must be '##fileformat=VCFv4.x', found {first[:60]!r}",
                         path=path, line=1)
    try:
        return cyvcf2.VCF(path, lazy=True, threads=1)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot parse the VCF header ({e})", path=path) from e


def _status_of_alleles(ref: str, alt: str | None) -> str:
    if alt is None or alt == "." or alt == "":
        return "missing_alt"
    if alt == "*":
        return "star_allele"
    if alt.startswith("<") or "[" in alt or "]" in alt or alt.startswith(".") or alt.endswith("."):
        return "symbolic_allele"
    if not _ACGTN.match(ref) or not _ACGTN.match(alt):
        return "not_acgt"
    if len(ref) != len(alt):
        return "indel"
    if "N" in ref.upper() or "N" in alt.upper():
        return "n_at_variant"
    return STATUS_OK


def place_window(var: Variant, fasta: Fasta, seq_len: int) -> None:
    """Check REF against the FASTA and place the model window (sets status, flags, window_start, offset)."""
    contig = fasta.contig(var.chrom)
    if contig is None:
        var.status = "unknown_contig"
        return
    var.fasta_contig = contig
    n = fasta.lengths[contig]
    start0 = var.pos - 1
    k = len(var.ref)
    if start0 < 0 or start0 + k > n:
        var.status = "outside_contig"
        return
    ref_fa = fasta.fetch(contig, start0, start0 + k)
    if "N" in ref_fa:
        var.status = "n_at_variant"
        return
    if ref_fa != var.ref.upper():
        var.status = "ref_mismatch"
        var.flags.append(f"fasta_ref={ref_fa}")
        return
    # the variant's first base sits at L//2 for an SNV (index 500 of a 1 kb window, as in the paper)
    ws = start0 - (seq_len - k + 1) // 2
    if n < seq_len:
        var.flags.append("padded")
    elif ws < 0:
        ws = 0
        var.flags.append("window_shifted")
    elif ws + seq_len > n:
        ws = n - seq_len
        var.flags.append("window_shifted")
    var.window_start = ws
    var.offset = start0 - ws


def windows(variants: list[Variant], fasta: Fasta, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """One-hot reference and alternate windows (N, L, 4) for variants with status ok."""
    refs, alts = [], []
    for v in variants:
        s = fasta.fetch(v.fasta_contig, v.window_start, v.window_start + seq_len)
        a = s[: v.offset] + v.alt.upper() + s[v.offset + len(v.ref) :]
        refs.append(s)
        alts.append(a)
    if not refs:
        z = np.zeros((0, seq_len, 4), np.float32)
        return z, z.copy()
    return one_hot(refs), one_hot(alts)


def iter_variants(
    vcf_path: str | os.PathLike, fasta: Fasta, seq_len: int, chunk_size: int = 256
) -> Iterator[list[Variant]]:
    """Stream a VCF in chunks of records; each chunk is the list of its (record, ALT) variants.

    Records are never dropped: a record with no ALT at all yields one variant with status ``missing_alt``.
    """
    vcf_path = str(vcf_path)
    vcf = open_vcf(vcf_path)
    first_line = count_header_lines(vcf_path) + 1
    chunk: list[Variant] = []
    n_records = 0
    it = iter(vcf)
    i = -1
    while True:
        try:
            rec = next(it)
        except StopIteration:
            break
        except Exception as e:  # noqa: BLE001 - htslib parse errors
            raise InputError(f"cannot parse record ({e})", path=vcf_path, line=first_line + i + 1) from e
        i += 1
        line = first_line + i
        alts = list(rec.ALT) or [None]
        ref = rec.REF or ""
        for j, alt in enumerate(alts):
            v = Variant(
                record_index=i, alt_index=j, line=line, chrom=rec.CHROM, pos=int(rec.POS), ref=ref,
                alt=alt if alt is not None else ".", vcf_id=rec.ID,
            )
            v.status = _status_of_alleles(ref, alt)
            if v.status == STATUS_OK:
                place_window(v, fasta, seq_len)
            chunk.append(v)
        n_records += 1
        if n_records % chunk_size == 0:
            yield chunk
            chunk = []
    vcf.close()
    if chunk:
        yield chunk
