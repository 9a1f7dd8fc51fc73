"""VCF records -> variants -> reference/alternate one-hot windows.

Every (record, ALT) becomes a :class:`Variant` with a ``status``: ``"ok"`` when it can be scored, otherwise the
reason it was not (the record still reaches the output). Windows are centred on the variant and moved inside
the contig where they would cross its ends (flag ``window_shifted``); only a contig shorter than the model
input is padded with N (flag ``padded``).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyfaidx

from kipoi_dfim import indels
from kipoi_dfim.errors import InputError
from kipoi_dfim.output.base import LIVE_TEMPS
from kipoi_dfim.sequence import one_hot

log = logging.getLogger(__name__)

# statuses of (record, ALT) pairs that are reported but not scored
STATUS_OK = "ok"
NOT_SCORED = {
    "too_long": "REF or ALT longer than a quarter of the model input (indels: kipoi_dfim.indels)",
    "symbolic_allele": "symbolic ALT allele (<...>, breakends)",
    "star_allele": "ALT '*' (overlapping deletion)",
    "missing_alt": "ALT is missing ('.')",
    "ref_mismatch": "REF does not match the FASTA",
    "unknown_contig": "the contig is not in the FASTA",
    "n_at_variant": "N in REF, ALT or the FASTA at the variant",
    "not_acgt": "REF or ALT has letters other than ACGTN",
    "alt_equals_ref": "ALT is the same sequence as REF (no change to score)",
    "outside_contig": "the variant lies outside the contig",
    "bad_pos": "POS is not an integer in 1..2^62-1 (the range of htslib, bcftools)",
}
POS_MAX = 2**62 - 1  # htslib's largest POS: beyond it no VCF tool reads the record

_ACGTN = re.compile(r"^[ACGTNacgtn]+$")


@dataclass
class Variant:
    """One ALT allele of one VCF record, with where it sits in its model window."""

    record_index: int
    alt_index: int
    line: int
    chrom: str
    pos: int | None  # 1-based VCF POS as written (any integer, for bad_pos too); None when it is not an integer
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
        return f"{self.chrom}:{self.pos if self.pos is not None else '.'}:{self.ref}:{self.alt}"

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def span(self) -> range:
        """Window positions of the substituted bases."""
        return range(self.offset, self.offset + len(self.ref))


class Fasta:
    """A reference FASTA (pyfaidx) with contig names matched with or without a 'chr' prefix.

    The ``.fai`` index is checked against the FASTA before it is trusted: a FASTA edited after it was indexed
    would otherwise give sequence from the wrong offsets (wrong windows, wrong REF checks) without an error.
    A missing or stale index is rebuilt: a missing one beside the FASTA when its folder is writable (as
    ``samtools faidx`` would), a stale one -- or any when the folder is read-only -- in a temporary file that is
    removed once read, so an input folder is never changed behind the user's back.
    """

    def __init__(self, path: str | os.PathLike):
        path = str(path)
        if not os.path.exists(path):
            raise InputError("FASTA file not found", path=path)
        if os.path.isdir(path):
            raise InputError("is a directory, not a FASTA file", path=path)
        self.path = path
        self.fa = self._open(path)
        self.lengths = {k: len(v) for k, v in self.fa.records.items()}

    @staticmethod
    def _open(path: str) -> pyfaidx.Fasta:
        fai = path + ".fai"
        compressed = _is_gzip(path)
        problem = None if compressed or not os.path.exists(fai) else fai_problem(path, fai)
        if problem:
            log.warning("%s: %s; using a fresh index in a temporary file (run `samtools faidx %s` to fix it)",
                        fai, problem, path)
        try:
            if compressed or (os.path.exists(fai) and not problem):
                return pyfaidx.Fasta(path, as_raw=True, sequence_always_upper=True, rebuild=False)
            if not problem and _folder_writable(path):
                return _with_new_index(path, os.path.dirname(os.path.abspath(path)), keep_as=fai)
            return _with_new_index(path, None, keep_as=None)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - pyfaidx raises several kinds
            raise InputError(f"cannot read FASTA ({type(e).__name__}: {_one_line(e)})", path=path) from e

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


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _folder_writable(path: str) -> bool:
    """Whether a file can be created beside ``path`` (tried, not guessed: root ignores permission bits)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".kipoi-dfim-probe.", dir=os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    os.close(fd)
    os.remove(tmp)
    return True


def _with_new_index(path: str, folder: str | None, keep_as: str | None) -> pyfaidx.Fasta:
    """Index ``path`` into a temporary file (in ``folder``, or TMPDIR); keep it as ``keep_as`` or remove it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".fai", dir=folder)
    os.close(fd)
    os.remove(tmp)  # pyfaidx writes the index itself
    LIVE_TEMPS.add(tmp)
    try:
        fa = pyfaidx.Fasta(path, indexname=tmp, as_raw=True, sequence_always_upper=True, rebuild=True)
        if keep_as is not None:
            os.replace(tmp, keep_as)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        LIVE_TEMPS.discard(tmp)
    return fa


def fai_problem(path: str, fai: str) -> str | None:
    """Why ``fai`` does not index ``path`` (None when it does).

    Each entry is checked where it points in the FASTA: its header line must name it, and its sequence must end
    where the entry says (the next byte after the last line is ``>`` or the end of the file). An edit of the
    FASTA after indexing moves these boundaries, so this catches it without reading the sequence itself.
    """
    entries = []
    try:
        with open(fai, encoding="utf-8") as fh:
            for k, line in enumerate(fh, start=1):
                cols = line.rstrip("\n").split("\t")
                if len(cols) < 5 or not all(c.isdigit() for c in cols[1:5]) or int(cols[3]) < 1:
                    return f"line {k} is not a .fai entry (name, length, offset, line bases, line bytes)"
                entries.append((cols[0], *map(int, cols[1:5])))
    except (OSError, UnicodeDecodeError) as e:
        return f"cannot be read ({_one_line(e)})"
    size = os.path.getsize(path)
    with open(path, "rb") as fa:
        for name, length, offset, lbases, lbytes in sorted(entries, key=lambda e: e[2]):
            head = offset - min(offset, len(name) + 4096)
            fa.seek(head)
            before = fa.read(offset - head)
            title = before.rstrip(b"\r\n").rsplit(b"\n", 1)
            whole = len(title) == 2 or head == 0  # else the header is too long to check its name
            if not before.endswith(b"\n") or whole and title[-1].split()[:1] != [b">" + name.encode()]:
                return f"the entry of {name!r} does not point at its sequence (the FASTA changed after indexing)"
            end = offset + (length // lbases) * lbytes + length % lbases
            fa.seek(end)
            after = fa.read(lbytes + 2).lstrip(b"\r\n")
            if end > size or (after and not after.startswith(b">")):
                return f"the length of {name!r} differs from the FASTA's (the FASTA changed after indexing)"
    return None


def open_text(path: str):
    """Open a plain or gzip/bgzip-compressed text file (sniffed from its magic bytes) for reading text."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt")
    return open(path)


def open_bytes(path: str):
    """Open a plain or gzip/bgzip-compressed file for reading bytes (lines split on ``\\n`` only)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


@dataclass
class Record:
    """One VCF data line as read: its text (kept byte for byte for the output) and its fixed fields.

    ``text`` is the line without its line terminator (a final ``\\r`` of a CRLF file is dropped; a lone
    ``\\r`` inside the line is kept, because htslib splits lines on ``\\n`` only and so must we).
    """

    index: int  # 0-based record number
    line: int  # 1-based line number in the file
    text: bytes
    chrom: str
    pos: int | None  # None when POS is not a positive integer
    vcf_id: str
    ref: str
    alts: list[str]
    read_bytes: int = 0  # bytes of the file read up to this record (for progress)
    pos_value: int | None = None  # POS as written when it is an integer (also 0 or negative), else None


@dataclass
class VcfHeader:
    """The header lines of a VCF (``##`` meta lines and the ``#CHROM`` line), bytes without terminators."""

    meta: list[bytes]
    columns: bytes
    n_lines: int
    file_bytes: int = 0  # size of the file on disk (for progress)
    header_bytes: int = 0  # bytes of the file read with the header (for progress)


_FIXED = ("#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO")


def _lines(path: str) -> Iterator[tuple[int, bytes, int]]:
    """(1-based line number, line bytes without terminator, bytes of the file read so far).

    The byte count is of the file on disk (compressed bytes for a gzipped file): it gives a progress bar
    its total without a second pass over the file. A decode or gzip error names the line.
    """
    n = 0
    try:
        with open_bytes(path) as fh:
            raw_fh = getattr(fh, "fileobj", fh)
            for n, raw in enumerate(fh, start=1):
                line = raw[:-1] if raw.endswith(b"\n") else raw
                yield n, line[:-1] if line.endswith(b"\r") else line, raw_fh.tell()
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"cannot read the file after line {n} ({e})", path=path, line=n + 1) from e


def _decode(line: bytes, path: str, n: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"bytes that are not UTF-8 text at column {e.start + 1} ({line[e.start:e.start + 4]!r})",
                         path=path, line=n) from e


def read_records(path: str | os.PathLike) -> tuple[VcfHeader, Iterator[Record]]:
    """Check a VCF's header and stream its records, one reader for scoring and for writing the output.

    Why our own reader: htslib (through cyvcf2) crashes the process on some malformed lines (a blank or
    comment line among the records, space-separated fields), and a second reader of the same file can split
    lines differently from the first (a lone carriage return), pairing outputs with the wrong records. Only the
    fixed columns are parsed here; the rest of each line is kept as bytes and written back unchanged.

    Lines among the records that are blank or start with ``#`` are not records: they are skipped with a
    warning naming their line (and are not copied to the output, where they would break VCF readers). A line
    that is not tab-separated into at least 8 columns, or is not UTF-8, is an :class:`InputError` naming it.
    """
    path = str(path)
    if not os.path.exists(path):
        raise InputError("VCF file not found", path=path)
    if os.path.isdir(path):
        raise InputError("is a directory, not a VCF file", path=path)
    lines = _lines(path)
    header = _read_header(path, lines)
    return header, _records(path, lines)


def _read_header(path: str, lines: Iterator[tuple[int, bytes, int]]) -> VcfHeader:
    meta: list[bytes] = []
    for n, line, nbytes in lines:
        text = _decode(line, path, n)
        if n == 1 and not text.startswith("##fileformat=VCF"):
            raise InputError(f"not a VCF: the first line must be '##fileformat=VCFv4.x', found {text[:60]!r}",
                             path=path, line=1)
        if text.startswith("##"):
            meta.append(line)
            continue
        cols = text.split("\t")
        if tuple(cols[:8]) != _FIXED:
            raise InputError("expected the tab-separated header line '#CHROM POS ID REF ALT QUAL FILTER INFO' "
                             f"after the ## lines, found {text[:60]!r}", path=path, line=n)
        return VcfHeader(meta, line, n, os.path.getsize(path), nbytes)
    raise InputError("no '#CHROM' header line", path=path)


def _records(path: str, lines: Iterator[tuple[int, bytes, int]]) -> Iterator[Record]:
    index = 0
    for n, line, nbytes in lines:
        text = _decode(line, path, n)
        if not text.strip() or text.startswith("#"):
            log.warning("%s, line %d: %s among the records, skipped", path, n,
                        "blank line" if not text.strip() else "'#' line")
            continue
        cols = text.split("\t")
        if len(cols) < 8:
            how = "is separated by spaces, not tabs" if len(text.split()) >= 8 else f"has {len(cols)}"
            raise InputError(f"a VCF record needs 8 tab-separated columns; this line {how}", path=path, line=n)
        value = _integer(cols[1])
        pos = value if value is not None and 0 < value <= POS_MAX else None
        alts = [] if cols[4] in (".", "") else cols[4].split(",")
        yield Record(index, n, line, cols[0], pos, cols[2], cols[3], alts, nbytes, value)
        index += 1


_INTEGER = re.compile(r"^[+-]?[0-9]+$")


def _integer(text: str) -> int | None:
    """POS as a Python int (no 32/64-bit wrap), or None when it is not a decimal integer."""
    return int(text) if _INTEGER.match(text) else None


def record_variants(rec: Record, fasta: Fasta, seq_len: int) -> list[Variant]:
    """The variants (one per ALT; one ``missing_alt`` variant when there is none) of a record, placed."""
    out = []
    for j, alt in enumerate(rec.alts or [None]):
        v = Variant(record_index=rec.index, alt_index=j, line=rec.line, chrom=rec.chrom, pos=rec.pos or 0,
                    ref=rec.ref, alt=alt if alt is not None else ".", vcf_id=rec.vcf_id)
        if rec.pos is None:
            v.pos = rec.pos_value
        v.status = "bad_pos" if rec.pos is None else _status_of_alleles(rec.ref, alt)
        if v.status == STATUS_OK:
            place_window(v, fasta, seq_len)
        if v.status == STATUS_OK and indels.is_indel(v):  # indels: normalisation, alternate window fill
            indels.check_indel(v, fasta, seq_len)
        out.append(v)
    return out


def _status_of_alleles(ref: str, alt: str | None) -> str:
    if alt is None or alt == "." or alt == "":
        return "missing_alt"
    if alt == "*":
        return "star_allele"
    if alt.startswith("<") or "[" in alt or "]" in alt or alt.startswith(".") or alt.endswith("."):
        return "symbolic_allele"
    if not _ACGTN.match(ref) or not _ACGTN.match(alt):
        return "not_acgt"
    if "N" in ref.upper() or "N" in alt.upper():
        return "n_at_variant"
    if alt.upper() == ref.upper():
        return "alt_equals_ref"
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
        if indels.is_indel(v):  # the same length, filled/trimmed from the genome on the right
            a = indels.alt_window(v, fasta, seq_len)
        else:
            a = s[: v.offset] + v.alt.upper() + s[v.offset + len(v.ref) :]
        refs.append(s)
        alts.append(a)
    if not refs:
        z = np.zeros((0, seq_len, 4), np.float32)
        return z, z.copy()
    return one_hot(refs), one_hot(alts)


def iter_chunks(
    vcf_path: str | os.PathLike, fasta: Fasta, seq_len: int, chunk_size: int = 256
) -> Iterator[tuple[list[Record], list[Variant]]]:
    """Stream a VCF in chunks of ``chunk_size`` records: (records, their variants in record/ALT order).

    Records are never dropped: a record with no ALT at all yields one variant with status ``missing_alt``.
    """
    _, records = read_records(vcf_path)
    recs: list[Record] = []
    for rec in records:
        recs.append(rec)
        if len(recs) == chunk_size:
            yield recs, [v for r in recs for v in record_variants(r, fasta, seq_len)]
            recs = []
    if recs:
        yield recs, [v for r in recs for v in record_variants(r, fasta, seq_len)]


def iter_variants(
    vcf_path: str | os.PathLike, fasta: Fasta, seq_len: int, chunk_size: int = 256
) -> Iterator[list[Variant]]:
    """Stream a VCF in chunks of records; each chunk is the list of its (record, ALT) variants."""
    for _, variants in iter_chunks(vcf_path, fasta, seq_len, chunk_size):
        yield variants
