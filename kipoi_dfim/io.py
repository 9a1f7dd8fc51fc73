"""Output files, all written atomically (a temporary file in the destination folder, then os.replace).

- TSV: one row per (variant, ALT, target).
- VCF: every input record, in order, with its fields untouched, plus DFIM INFO fields (Number=A: one value per
  ALT); ``.vcf.gz`` is bgzipped and tabix-indexed.
- Maps HDF5: the FIS tracks (layout in docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator

import numpy as np

from kipoi_dfim.variants import open_text

log = logging.getLogger(__name__)

TSV_COLUMNS = (
    "variant_id", "chrom", "pos", "ref", "alt", "target", "status", "max_abs_fis", "max_fis_offset",
    "max_fis_base", "fis_at_max", "pval", "qval", "ref_pred", "alt_pred", "diff", "logit_ref", "logit_alt",
    "logit", "deepsea_effect",
)
# after the documented columns: extras a careful user needs to trace a row back to its record
TSV_EXTRA = ("pval_empirical", "max_abs_maxfis", "maxfis_offset", "flags", "vcf_record", "vcf_line", "alt_index")


def make_temp(path: str, suffix: str = ".tmp") -> str:
    """An empty temporary file next to ``path`` with the permissions a normal new file would get."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=d)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = make_temp(path, suffix + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def fmt(v) -> str:
    """TSV cell: '' for missing/NaN, 6 significant digits for floats."""
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{float(v):.6g}"
    return str(v)


def vcf_value(v) -> str:
    """VCF INFO value: '.' for missing and non-finite numbers."""
    if v is None or v == "":
        return "."
    if isinstance(v, (float, np.floating)):
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
    ("P", "Float", "p-value of MAXABS under the dinucleotide-shuffled null (Gaussian fit)", "pval"),
    ("Q", "Float", "Benjamini-Hochberg q-value of P across the file", "qval"),
    ("REFPRED", "Float", "model output for the reference window (ISM ref)", "ref_pred"),
    ("ALTPRED", "Float", "model output for the alternate window (ISM alt)", "alt_pred"),
    ("DIFF", "Float", "ISM diff = alt - ref (kipoi-veff)", "diff"),
    ("LOGIT", "Float", "ISM logit = logit(alt) - logit(ref) (kipoi-veff)", "logit"),
    ("DEEPSEA", "Float", "ISM deepsea_effect = |logit| * |diff| (kipoi-veff)", "deepsea_effect"),
)


def info_header_lines(targets: list[str], window: int, method: str, with_null: bool) -> list[str]:
    lines = [
        '##INFO=<ID=DFIM_STATUS,Number=A,Type=String,Description="kipoi-dfim: ok, or why this ALT was not '
        'scored (indel, symbolic_allele, star_allele, missing_alt, ref_mismatch, unknown_contig, n_at_variant, '
        'not_acgt, outside_contig)">'
    ]
    for t in targets:
        tid = info_id(t)
        for suffix, typ, desc, _col in INFO_FIELDS:
            if suffix in ("P", "Q") and not with_null:
                continue
            d = desc.format(w=window)
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


def write_vcf(
    in_vcf: str,
    out: str,
    rows_by_record: Iterable[tuple[int, list[dict]]],
    targets: list[str],
    window: int,
    method: str,
    with_null: bool,
    command: str | None = None,
) -> None:
    """Copy ``in_vcf`` to ``out`` adding DFIM INFO fields per ALT and target.

    ``rows_by_record`` yields ``(record_index, rows)`` in record order, ``rows`` being the TSV rows of that
    record (every ALT x target). Earlier DFIM_* INFO fields and headers (a re-scored file) are replaced.
    """
    gz = out.endswith(".gz")
    tids = [(t, info_id(t)) for t in targets]
    it = iter(rows_by_record)
    tmp_plain = make_temp(out, ".vcf.tmp")
    tmp_gz = tmp_plain + ".gz"
    try:
        with open_text(in_vcf) as fin, open(tmp_plain, "w") as fout:
            _copy_records(fin, fout, it, tids, targets, window, method, with_null, command)
        if gz:
            _bgzip_and_index(tmp_plain, tmp_gz)
            os.replace(tmp_gz, out)
            if os.path.exists(tmp_gz + ".tbi"):
                os.replace(tmp_gz + ".tbi", out + ".tbi")
            elif os.path.exists(out + ".tbi"):
                os.remove(out + ".tbi")  # a stale index of an older file would be wrong
        else:
            os.replace(tmp_plain, out)
    finally:
        for f in (tmp_plain, tmp_gz, tmp_gz + ".tbi"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f)


def _copy_records(fin, fout, it, tids, targets, window, method, with_null, command) -> None:
    nxt = next(it, None)
    rec = -1
    for line in fin:
        if line.startswith("##"):
            if not line.startswith("##INFO=<ID=DFIM_") and not line.startswith("##kipoi-dfim"):
                fout.write(line)
            continue
        if line.startswith("#"):
            for h in info_header_lines(targets, window, method, with_null):
                fout.write(h + "\n")
            if command:
                fout.write(f"##kipoi-dfimCommand={command}\n")
            fout.write(line)
            continue
        if not line.strip():
            continue
        rec += 1
        cols = line.rstrip("\n").split("\t")
        rows = []
        if nxt is not None and nxt[0] == rec:
            rows = nxt[1]
            nxt = next(it, None)
        if len(cols) < 8 or not rows:
            fout.write(line if line.endswith("\n") else line + "\n")
            continue
        n_alt = max(r["alt_index"] for r in rows) + 1
        by = {(r["alt_index"], r["target"]): r for r in rows}
        status = [next((by[(a, t)]["status"] for t, _ in tids if (a, t) in by), ".") for a in range(n_alt)]
        add = ["DFIM_STATUS=" + ",".join(vcf_value(s) for s in status)]
        for t, tid in tids:
            for suffix, _typ, _d, col in INFO_FIELDS:
                if suffix in ("P", "Q") and not with_null:
                    continue
                vals = [vcf_value(by[(a, t)].get(col)) if (a, t) in by else "." for a in range(n_alt)]
                if all(v == "." for v in vals):
                    continue
                add.append(f"DFIM_{tid}_{suffix}=" + ",".join(vals))
        info = _strip_dfim_info(cols[7])
        cols[7] = ";".join(([] if info == "." else [info]) + add)
        fout.write("\t".join(cols) + "\n")


def _bgzip_and_index(plain: str, gz: str) -> None:
    import pysam

    pysam.tabix_compress(plain, gz, force=True)
    try:
        pysam.tabix_index(gz, preset="vcf", force=True, keep_original=True)
    except Exception as e:  # noqa: BLE001 - unsorted input cannot be indexed
        log.warning("written bgzipped but not tabix-indexed (%s); sort the input VCF to get an index", e)


def write_tsv_rows(path: str, rows: Iterable[dict], columns: tuple[str, ...]) -> None:
    """Write rows atomically as a tab-separated file with a header."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([fmt(r.get(c)) for c in columns])
