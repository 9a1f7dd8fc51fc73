"""The TSV of ``score-variants --tsv``: one row per (variant, ALT, target); its columns, writer and reader."""

from __future__ import annotations

import csv
import os
from typing import TYPE_CHECKING

import numpy as np

from kipoi_dfim.errors import InputError
from kipoi_dfim.motifs import ANNOTATION_COLUMNS
from kipoi_dfim.null import FileStats
from kipoi_dfim.output.base import ScoredChunk, Spool, atomic_path, fmt

if TYPE_CHECKING:
    import pandas as pd

TSV_COLUMNS = (
    "variant_id", "chrom", "pos", "ref", "alt", "target", "status", "max_abs_fis", "max_fis_offset",
    "max_fis_base", "fis_at_max", "pval", "qval", "ref_pred", "alt_pred", "diff", "logit_ref", "logit_alt",
    "logit", "deepsea_effect",
)
# after the documented columns: extras a careful user needs to trace a row back to its record
TSV_EXTRA = ("pval_empirical", "max_abs_maxfis", "maxfis_offset", "flags", "vcf_record", "vcf_line", "alt_index")
ALL_COLUMNS = TSV_COLUMNS + TSV_EXTRA
#: with motifs (score-variants --motifs): the own and partner motif columns of kipoi_dfim.motifs
MOTIF_COLUMNS = ANNOTATION_COLUMNS
STAT_COLUMNS = {"pval": "pval", "qval": "qval", "pval_empirical": "pval_empirical"}
STRING_COLUMNS = ("variant_id", "chrom", "ref", "alt", "target", "status", "max_fis_base", "flags",
                  "own_motif_ref", "own_motif_alt", "partner_motif")
#: numeric columns; any other column (e.g. added by later versions) stays text
NUMERIC_COLUMNS = frozenset(ALL_COLUMNS + MOTIF_COLUMNS) - frozenset(STRING_COLUMNS)
MISSING = {"", "NA", "NaN", "nan", ".", "None"}


class TsvWriter:
    """Writes the TSV: chunks are spooled with their p/q cells empty and written with them in :meth:`finish`."""

    def __init__(self, path: str, columns: tuple[str, ...] = ALL_COLUMNS):
        self.path = path
        self.columns = columns
        self.spool = Spool(path)
        self.stat_idx = [(columns.index(c), k) for c, k in STAT_COLUMNS.items() if c in columns]

    def write_chunk(self, chunk: ScoredChunk) -> None:
        self.spool.append((chunk.first_row, [[fmt(r.get(c)) for c in self.columns] for r in chunk.rows]))

    def finish(self, stats: FileStats) -> None:
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            w.writerow(self.columns)
            for first, rows in self.spool.read():
                for k, row in enumerate(rows):
                    for i, name in self.stat_idx:
                        row[i] = fmt(getattr(stats, name)[first + k])
                    w.writerow(row)
        self.spool.close()

    def abort(self) -> None:
        self.spool.close()


def read_tsv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``score-variants --tsv`` file: text columns stay text, numeric columns become float (NaN = missing).

    Why by hand: pandas' default NA parsing would turn a variant called "NA" into a missing value, and a
    non-numeric score would silently become NaN; here it is an InputError naming the line.
    """
    import pandas as pd  # lazy: pandas costs ~33 MB of memory; score-variants' streaming path never needs it

    path = os.fspath(path)
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment=None)
    except FileNotFoundError:
        raise InputError("no such file", path=path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"not a tab-separated score-variants TSV: {e}", path=path) from None
    df.columns = [c.lstrip("#").strip() for c in df.columns]
    missing = [c for c in TSV_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"not a score-variants --tsv file: missing column(s) {', '.join(missing)}", path=path)
    for c in df.columns:
        if c not in NUMERIC_COLUMNS:
            continue
        raw = df[c].str.strip()
        num = pd.to_numeric(raw.where(~raw.isin(MISSING)), errors="coerce")
        bad = num.isna() & ~raw.isin(MISSING)
        if bad.any():
            i = int(np.nonzero(bad.to_numpy())[0][0])
            raise InputError(f"column {c!r}: {raw.iloc[i]!r} is not a number", path=path, line=i + 2)
        df[c] = num.astype(float)
    df["tsv_row"] = np.arange(len(df))
    return df


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """The TSV as :func:`kipoi_dfim.score_variants` returns it: :func:`read_tsv` with empty text cells NaN."""
    df = read_tsv(path).drop(columns="tsv_row")
    for c in STRING_COLUMNS:
        if c in df.columns:
            df[c] = df[c].mask(df[c] == "")
    return df
