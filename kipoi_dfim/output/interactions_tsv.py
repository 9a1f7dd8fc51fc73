"""The TSV of ``kipoi-dfim interactions``: one row per ordered (source, target) feature pair and scored target."""

from __future__ import annotations

import os

import pandas as pd

from kipoi_dfim.output.base import atomic_path

COLUMNS = ["seq", "source", "target", "source_start", "target_start", "fis", "abs_fis", "pval", "qval", "status"]
#: added after target_start when more than one model output is scored
TASK_COLUMN = "target_task"


def write_interactions(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the table atomically as a TSV (NaN as empty, 6 significant digits), so that a crash never leaves
    a half-written file under the final name."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        df.to_csv(fh, sep="\t", index=False, na_rep="", float_format="%.6g")


def read_interactions(path: str | os.PathLike) -> pd.DataFrame:
    """The table back (names stay text; empty cells NaN)."""
    return pd.read_csv(path, sep="\t", dtype={"seq": str, "source": str, "target": str, "status": str,
                                              TASK_COLUMN: str})
