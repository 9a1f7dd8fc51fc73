"""The annotated VCF of ``score-variants -o``: its INFO fields, writer and bgzip/tabix finishing.

Every input record is written, in input order, from the record's own bytes as the reader read them (the
reader and the writer never split the file separately), with its fields untouched except for DFIM INFO fields
added per ALT (``Number=A``) and target. ``.vcf.gz`` is bgzipped and tabix-indexed with pysam (htslib).
Earlier DFIM_* INFO fields and headers (a re-scored file) are replaced.
"""

from __future__ import annotations

import logging
import math
import os
import re
import urllib.parse

import numpy as np
import pysam

from kipoi_dfim.null import FileStats
from kipoi_dfim.output.base import (
    LIVE_TEMPS,
    ScoredChunk,
    Spool,
    commit_temp,
    commit_together,
    make_temp,
    remove_output,
    remove_temp,
)
from kipoi_dfim.variants import NOT_SCORED

log = logging.getLogger(__name__)


def vcf_value(v: object) -> str:
    """VCF INFO value: '.' for missing and non-finite numbers."""
    if v is None or v == "":
        return "."
    if isinstance(v, float | np.floating):
        return "." if not math.isfinite(v) else f"{float(v):.6g}"
    s = str(v)
    return "." if s in ("", "nan", "inf", "-inf", "NaN") else s


def info_id(name: str) -> str:
    """A VCF 4.2-valid INFO ID fragment ([A-Za-z_][0-9A-Za-z_.]*) from a target name."""
    s = re.sub(r"[^0-9A-Za-z_.]", "_", str(name))
    return s if re.match(r"^[A-Za-z]", s) else "T" + s


# (suffix, Type, description, TSV column)
INFO_FIELDS = (
    ("MAXABS", "Float", "max |FIS| over the +-{w} bp target window (maxAbsFIS)", "max_abs_fis"),
    ("OFFSET", "Integer", "offset (bp, target - variant) of the max |FIS| base", "max_fis_offset"),
    ("BASE", "String", "observed base at the max |FIS| position", "max_fis_base"),
    ("FIS", "Float", "signed FIS at the max |FIS| position", "fis_at_max"),
    ("P", "Float", "p-value of MAXABS under the dinucleotide-shuffled null ({pvalue})", "pval"),
    ("Q", "Float", "Benjamini-Hochberg q-value of P across the file", "qval"),
    ("REFPRED", "Float", "model output for the reference window (ISM ref)", "ref_pred"),
    ("ALTPRED", "Float", "model output for the alternate window (ISM alt)", "alt_pred"),
    ("DIFF", "Float", "ISM diff = alt - ref (kipoi-veff)", "diff"),
    ("LOGIT", "Float", "ISM logit = logit(alt) - logit(ref) (kipoi-veff)", "logit"),
    ("DEEPSEA", "Float", "ISM deepsea_effect = |logit| * |diff| (kipoi-veff)", "deepsea_effect"),
)
# with motifs: the variant's own motif and its interaction partner (kipoi_dfim.motifs)
MOTIF_FIELDS = (
    ("OWNREF", "String", "best motif on the REF bases of the variant's own span", "own_motif_ref"),
    ("OWNALT", "String", "best motif on the ALT bases of the variant's own span", "own_motif_alt"),
    ("OWNDELTA", "Float", "score of the REF motif on ALT minus on REF (bits; < 0: the variant breaks it)",
     "own_delta"),
    ("PARTNER", "String", "motif of the interaction partner (the span with the largest summed |FIS|)",
     "partner_motif"),
    ("PARTNEROFF", "Integer", "offset (bp) of the partner span's first base from the variant", "partner_offset"),
    ("PARTNERFIS", "Float", "summed FIS over the partner span", "partner_fis"),
)


def info_fields(with_motifs: bool) -> tuple:
    """The INFO fields written per target."""
    return INFO_FIELDS + (MOTIF_FIELDS if with_motifs else ())


PVALUE_DESCRIPTIONS = {
    "tail": "empirical (1+b)/(1+M); a GPD tail model where fewer than 10 null values reach it",
    "empirical": "empirical (1+b)/(1+M)",
    "gaussian": "Gaussian fit",
}


def info_header_lines(targets: list[str], window: int, method: str, with_null: bool,
                      with_motifs: bool = False, pvalue: str = "tail") -> list[str]:
    """The ``##INFO`` lines of the DFIM fields; ``pvalue`` names the p-value test in P's description."""
    lines = [
        '##INFO=<ID=DFIM_STATUS,Number=A,Type=String,Description="kipoi-dfim: ok, or why this ALT was not '
        f'scored ({", ".join(NOT_SCORED)})">'
    ]
    for t in targets:
        tid = info_id(t)
        for suffix, typ, desc, _col in info_fields(with_motifs):
            if suffix in ("P", "Q") and not with_null:
                continue
            d = desc.format(w=window, pvalue=PVALUE_DESCRIPTIONS.get(pvalue, pvalue))
            lines.append(
                f'##INFO=<ID=DFIM_{tid}_{suffix},Number=A,Type={typ},Description="kipoi-dfim ({method}), '
                f'target {t}: {d}">'
            )
    return lines


def _strip_dfim_info(info: str) -> str:
    if info == ".":
        return info
    kept = [f for f in info.split(";") if not f.startswith("DFIM_")]
    return ";".join(kept) if kept else "."


class VcfWriter:
    """Writes the annotated VCF; chunks are spooled (record bytes + INFO values) until the p/q-values exist.

    Parameters
    ----------
    path : str
        ``.vcf`` or ``.vcf.gz`` (bgzipped + tabix index ``.tbi``).
    header : kipoi_dfim.variants.VcfHeader
        The input's header lines, copied (without earlier DFIM lines) with the DFIM INFO lines added.
    targets : list of str
        Target names, in the rows' target order.
    settings : Settings
        For the header descriptions (window, method, null).
    command : str, optional
        The command line, as a ``##kipoi-dfimCommand`` header line.
    """

    def __init__(self, path: str, header, targets: list[str], settings, command: str | None = None):
        self.path = path
        self.header = header
        self.targets = list(targets)
        self.settings = settings
        self.command = command
        self.with_motifs = settings.motifs != "none"
        self.fixer = RecordFixer(header.meta)
        self.spool = Spool(path)

    def write_chunk(self, chunk: ScoredChunk) -> None:
        T = chunk.n_targets
        recs, k = [], 0
        for rec in chunk.records:
            n_alt = max(1, len(rec.alts))
            rows = chunk.rows[k : k + n_alt * T]
            text, orig = self.fixer.fix(rec.text)
            values = _info_values(rows, T, n_alt, self.with_motifs)
            values["orig"] = orig
            recs.append((text, chunk.first_row + k, n_alt, values))
            k += n_alt * T
        self.spool.append(recs)

    def finish(self, stats: FileStats) -> None:
        tmp = make_temp(self.path, ".vcf.tmp")
        try:
            with open(tmp, "wb") as out:
                self._write_header(out)
                for recs in self.spool.read():
                    for text, first, n_alt, values in recs:
                        out.write(self._line(text, first, n_alt, values, stats))
            self._commit(tmp)
        finally:
            remove_temp(tmp)
            self.spool.close()

    def abort(self) -> None:
        self.spool.close()

    # -- lines ----------------------------------------------------------------------------------------------
    def _write_header(self, out) -> None:
        for line in self.header.meta:
            if not line.startswith((b"##INFO=<ID=DFIM_", b"##kipoi-dfim")):
                out.write(line + b"\n")
        for h in self.fixer.header_lines():
            out.write(h.encode() + b"\n")
        s = self.settings
        for h in info_header_lines(self.targets, s.window, s.method, s.with_null, self.with_motifs, s.pvalue):
            out.write(h.encode() + b"\n")
        if self.command:
            out.write(f"##kipoi-dfimCommand={self.command}\n".encode())
        out.write(self.header.columns + b"\n")

    def _line(self, text: bytes, first: int, n_alt: int, values: dict, stats: FileStats) -> bytes:
        cols = text.split(b"\t")
        T = len(self.targets)
        add = ["DFIM_STATUS=" + ",".join(values["status"])]
        if values["orig"]:
            add.append("DFIM_ORIG=" + values["orig"])
        for t, name in enumerate(self.targets):
            tid = info_id(name)
            for suffix, _typ, _d, col in info_fields(self.with_motifs):
                if col in ("pval", "qval"):
                    if not self.settings.with_null:
                        continue
                    arr = getattr(stats, col)
                    vals = [vcf_value(arr[first + a * T + t]) for a in range(n_alt)]
                else:
                    vals = values[col][t]
                if all(v == "." for v in vals):
                    continue
                add.append(f"DFIM_{tid}_{suffix}=" + ",".join(vals))
        info = _strip_dfim_info(cols[7].decode())
        cols[7] = ";".join(([] if info == "." else [info]) + add).encode()
        return b"\t".join(cols) + b"\n"

    def _commit(self, tmp: str) -> None:
        if not self.path.endswith(".gz"):
            commit_temp(tmp, self.path)
            return
        gz = make_temp(self.path, ".vcf.gz")
        # a .tbi holds positions below 2^29 only; beyond, a careful bcftools user indexes with CSI (tabix -C)
        ext = ".csi" if self.fixer.max_pos >= 2**29 else ".tbi"
        idx = gz + ext
        LIVE_TEMPS.add(idx)
        try:
            pysam.tabix_compress(tmp, gz, force=True)
            verbosity = pysam.set_verbosity(0)  # our one-line warning instead of htslib's [E::...] lines
            try:
                pysam.tabix_index(gz, preset="vcf", force=True, keep_original=True, csi=ext == ".csi")
            except Exception as e:  # noqa: BLE001 - unsorted input, or positions no index can hold
                why = "positions beyond what a .tbi/.csi index holds" if self.fixer.max_pos >= 2**32 else \
                    "sort the input VCF to get an index"
                log.warning("%s: written bgzipped but not indexed (%s: %s)", self.path, why, " ".join(str(e).split()))
            finally:
                pysam.set_verbosity(verbosity)
            stale = [self.path + x for x in (".tbi", ".csi")]  # an index of an older file would be wrong
            with commit_together():
                commit_temp(gz, self.path)
                if os.path.exists(idx):
                    commit_temp(idx, self.path + ext)
                    stale.remove(self.path + ext)
                for old in stale:
                    remove_output(old)
        finally:
            remove_temp(gz)
            remove_temp(idx)


# what htslib accepts without a warning: contig names (VCF 4.3), FILTER and INFO IDs, POS (62 bits)
_CONTIG = re.compile(r"^[0-9A-Za-z!#$%&+./:;?@^_|~-][0-9A-Za-z!#$%&*+./:;=?@^_|~-]*$")
_KEY = re.compile(r"^([A-Za-z_][0-9A-Za-z_.]*|1000G)$")
_POS = re.compile(r"^[0-9]{1,19}$")
_HTS_POS_MAX = 2**62 - 1
# INFO keys reserved by the VCF specification: htslib warns when they are declared with another Number/Type
_RESERVED_INFO = {
    "AA": ("1", "String"), "AC": ("A", "Integer"), "AD": ("R", "Integer"), "ADF": ("R", "Integer"),
    "ADR": ("R", "Integer"), "AF": ("A", "Float"), "AN": ("1", "Integer"), "BQ": ("1", "Float"),
    "CIGAR": ("A", "String"), "DB": ("0", "Flag"), "DP": ("1", "Integer"), "END": ("1", "Integer"),
    "H2": ("0", "Flag"), "H3": ("0", "Flag"), "MQ": ("1", "Float"), "MQ0": ("1", "Integer"), "NS": ("1", "Integer"),
    "SB": ("4", "Integer"), "SOMATIC": ("0", "Flag"), "VALIDATED": ("0", "Flag"), "1000G": ("0", "Flag"),
}
_DECLARED = re.compile(rb"^##(contig|FILTER|INFO)=<ID=([^,>]*)")
ORIG_HEADER = ('##INFO=<ID=DFIM_ORIG,Number=.,Type=String,Description="kipoi-dfim: fields of the input record that '
               'are not valid VCF, as COLUMN:percent-encoded text; in the record they are replaced (POS by 0, CHROM '
               'percent-encoded, FILTER by ., INFO fields removed)">')


def _pct(text: str) -> str:
    return urllib.parse.quote(text, safe="")


class RecordFixer:
    """Make each output record one that htslib (bcftools) reads without a warning; keep what it changes.

    Why: the annotated VCF is for bcftools and friends. The input may declare too little (contigs, FILTERs,
    INFO keys used but not in the header: declared here) or hold fields no VCF reader can parse (a POS that
    is not a 62-bit integer, a contig name or INFO key with spaces or control characters): those are replaced
    and their original text kept, percent-encoded, in ``DFIM_ORIG``. The record keeps its place and its
    ``DFIM_STATUS``; everything else is written byte for byte.
    """

    def __init__(self, meta: list[bytes]):
        self.declared: dict[str, set[str]] = {"contig": set(), "FILTER": {"PASS"}, "INFO": set()}
        for line in meta:
            m = _DECLARED.match(line)
            if m:
                self.declared[m.group(1).decode()].add(m.group(2).decode("utf-8", "replace"))
        self.added: dict[str, dict[str, str]] = {"contig": {}, "FILTER": {}, "INFO": {}}
        self.used_orig = False
        self.max_pos = 0  # largest POS written (decides .tbi or .csi)

    def _use(self, kind: str, name: str, typ: str = "") -> None:
        if name not in self.declared[kind] and (kind != "INFO" or self.added[kind].get(name) != "String"):
            self.added[kind][name] = typ or self.added[kind].get(name, "")

    def fix(self, text: bytes) -> tuple[bytes, str]:
        """(record bytes safe for htslib, DFIM_ORIG value or '')."""
        cols = text.decode("utf-8").split("\t")
        orig = []
        if not _CONTIG.match(cols[0]):
            orig.append("CHROM:" + _pct(cols[0]))
            cols[0] = _pct(cols[0]) or "."
        self._use("contig", cols[0])
        if not _POS.match(cols[1]) or int(cols[1]) > _HTS_POS_MAX:
            orig.append("POS:" + _pct(cols[1]))
            cols[1] = "0"
        self.max_pos = max(self.max_pos, int(cols[1]))
        if cols[6] not in (".", "PASS"):
            names = cols[6].split(";")
            if all(_KEY.match(f) or _CONTIG.match(f) and "=" not in f for f in names) and cols[6]:
                for f in names:
                    self._use("FILTER", f)
            else:
                orig.append("FILTER:" + _pct(cols[6]))
                cols[6] = "."
        cols[7] = self._fix_info(cols[7], orig)
        self.used_orig = self.used_orig or bool(orig)
        return "\t".join(cols).encode("utf-8"), ",".join(orig)

    def _fix_info(self, info: str, orig: list[str]) -> str:
        if info in (".", ""):
            return "."
        kept, seen = [], set()
        for field in info.split(";"):
            key, eq, _value = field.partition("=")
            if field == "" or key.startswith("DFIM_"):
                continue
            if not _KEY.match(key) or key in seen:
                orig.append("INFO:" + _pct(field))
                continue
            seen.add(key)
            self._use("INFO", key, "String" if eq else "Flag")
            kept.append(field)
        return ";".join(kept) if kept else "."

    def header_lines(self) -> list[str]:
        """Header lines for what the records use but the input did not declare (and DFIM_ORIG when used)."""
        out = [f"##contig=<ID={c}>" for c in self.added["contig"]]
        out += [f'##FILTER=<ID={f},Description="not declared in the input VCF">' for f in self.added["FILTER"]]
        for k, t in self.added["INFO"].items():
            number, typ = _RESERVED_INFO.get(k, ("0" if t == "Flag" else ".", t or "String"))
            out.append(f'##INFO=<ID={k},Number={number},Type={typ},Description="not declared in the input VCF">')
        return out + ([ORIG_HEADER] if self.used_orig else [])


def _info_values(rows: list[dict], T: int, n_alt: int, with_motifs: bool) -> dict:
    """Formatted INFO values of one record: status per ALT, and per column per target one value per ALT."""
    out: dict = {"status": [vcf_value(rows[a * T]["status"]) for a in range(n_alt)]}
    for _s, _t, _d, col in info_fields(with_motifs):
        if col not in ("pval", "qval"):
            out[col] = [[vcf_value(rows[a * T + t].get(col)) for a in range(n_alt)] for t in range(T)]
    return out
