"""The maps HDF5 of ``score-variants --maps``: its layout, writer and reader (layout in docs/architecture.md).

One row per scored (variant, ALT, target), in TSV row order. The tracks are appended chunk by chunk, so the
file never has to fit in memory; the file-wide statistics (p/q-values, per-base p-values) are written in
:meth:`MapsWriter.finish`, after which the finished file is moved to its final name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from kipoi_dfim.errors import InputError
from kipoi_dfim.null import FileStats, per_base_pvalues
from kipoi_dfim.output.base import ScoredChunk, commit_temp, make_temp, remove_temp

log = logging.getLogger(__name__)

#: datasets a maps file must hold for plot/report
REQUIRED_DATASETS = (
    "variant_id", "chrom", "pos", "ref", "alt", "target", "tsv_row", "offsets",
    "seq_ref", "seq_alt", "imp_ref", "imp_alt", "fis", "fis_pval", "max_abs_fis", "pval", "qval",
)  # fmt: skip
_INDEX_COLUMNS = ("variant_id", "chrom", "pos", "ref", "alt", "target", "tsv_row", "max_abs_fis", "pval", "qval")


def _decode(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in ("S", "O"):
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.ravel()],
                        dtype=object).reshape(arr.shape)  # fmt: skip
    return arr


def _attr(v: Any) -> Any:
    v = _decode(v)
    return v.tolist() if np.ndim(v) else v.item() if hasattr(v, "item") else v


class MapsFile:
    """Read access to a ``score-variants --maps`` file (or a dict with the same keys and ``attrs``).

    The index columns (ids, alleles, targets, summary scores) are read at once; the tracks (M, D, 4) are read
    one row at a time, so a report of the top 50 variants of a genome-wide run does not load the whole file.
    """

    def __init__(self, source: str | os.PathLike | Mapping[str, Any]):
        import h5py  # lazy: h5py costs ~10 MB of memory; only --maps runs need it
        import pandas as pd  # lazy: pandas costs ~33 MB of memory; score-variants' streaming path never needs it

        self.path = None if isinstance(source, Mapping) else os.fspath(source)
        self._h5 = None
        if self.path is None:
            self._data: Mapping[str, Any] = source
            self.attrs = dict(source.get("attrs", {}))
        else:
            try:
                self._h5 = h5py.File(self.path, "r")
            except (OSError, FileNotFoundError) as e:
                raise InputError(f"cannot open the maps HDF5 file: {e}", path=self.path) from None
            self._data = self._h5
            self.attrs = {k: _attr(v) for k, v in self._h5.attrs.items()}
        missing = [k for k in REQUIRED_DATASETS if k not in self._data]
        if missing:
            raise InputError(
                f"not a score-variants --maps file: missing dataset(s) {', '.join(missing)}",
                path=self.path or "<maps dict>",
            )
        self.index = pd.DataFrame({k: _decode(self._column(k)) for k in _INDEX_COLUMNS})
        self.offsets = np.asarray(self._column("offsets"), dtype=int)

    def _column(self, key: str) -> np.ndarray:
        v = self._data[key]
        return v[()] if self._h5 is not None else np.asarray(v)

    def __enter__(self) -> MapsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def has_all_alts(self) -> bool:
        return "fis_all_alts" in self._data

    def row(self, i: int) -> dict[str, Any]:
        """All datasets of row ``i`` (tracks as float arrays, strings decoded) plus ``offsets``."""
        out: dict[str, Any] = dict(self.index.iloc[int(i)].to_dict())
        for k in ("seq_ref", "seq_alt", "imp_ref", "imp_alt", "fis", "fis_pval", "fis_all_alts"):
            if k in self._data:
                out[k] = np.asarray(self._data[k][int(i)], dtype=np.float64)
        if "alt_offset" in self._data:  # files of earlier versions have none: identity (SNVs)
            out["alt_offset"] = np.asarray(self._data["alt_offset"][int(i)], dtype=np.int64)
        if "all_alts_bases" in self._data:
            out["all_alts_bases"] = [str(b) for b in _decode(self._data["all_alts_bases"][int(i)])]
        out["offsets"] = self.offsets
        return out

    def known_ids(self, n: int = 5) -> list[str]:
        return list(self.index["variant_id"].unique())[:n]

    def find(self, variant_id: str, target: str | int | None = None, alt: str | None = None) -> int:
        """Row of ``variant_id`` (or ``chrom:pos:ref:alt``); several rows -> the one with the largest maxAbsFIS.

        Raises InputError naming a few ids that exist when nothing matches.
        """
        idx = self.index
        hit = idx["variant_id"].astype(str) == str(variant_id)
        if not hit.any():
            parts = str(variant_id).split(":")
            if len(parts) == 4 and parts[1].isdigit():
                hit = (
                    (idx["chrom"].astype(str) == parts[0])
                    & (idx["pos"].astype(int) == int(parts[1]))
                    & (idx["ref"].astype(str) == parts[2])
                    & (idx["alt"].astype(str) == parts[3])
                )
        where = self.path or "<maps dict>"
        if not hit.any():
            raise InputError(
                f"variant {variant_id!r} is not in the maps file ({len(idx)} rows); ids that exist include: "
                + ", ".join(self.known_ids()),
                path=where,
            )
        if alt is not None:
            hit &= idx["alt"].astype(str) == str(alt)
            if not hit.any():
                raise InputError(f"variant {variant_id!r} has no ALT {alt!r} in the maps file", path=where)
        if target is not None:
            names = list(self.attrs.get("targets", []) or [])
            t = str(target)
            if t.lstrip("-").isdigit() and t not in set(idx["target"].astype(str)) and names:
                t = str(names[int(t)])
            by_target = hit & (idx["target"].astype(str) == t)
            if not by_target.any():
                have = sorted(set(idx.loc[hit, "target"].astype(str)))
                raise InputError(
                    f"variant {variant_id!r} has no target {target!r} in the maps file; it has: {', '.join(have)}",
                    path=where,
                )
            hit = by_target
        rows = np.nonzero(hit.to_numpy())[0]
        if len(rows) > 1:
            score = np.nan_to_num(idx["max_abs_fis"].to_numpy(dtype=float)[rows], nan=-np.inf)
            chosen = int(rows[int(np.argmax(score))])
            log.info(
                "variant %s has %d rows in the maps file; drawing the largest maxAbsFIS (target %s, alt %s)",
                variant_id, len(rows), idx["target"][chosen], idx["alt"][chosen],
            )  # fmt: skip
            return chosen
        return int(rows[0])


def _spec(D: int, all_alts: bool) -> dict[str, tuple[tuple, Any]]:
    import h5py  # lazy: h5py costs ~10 MB of memory; only --maps runs need it

    s = h5py.string_dtype()
    spec = {
        "variant_id": ((), s), "chrom": ((), s), "ref": ((), s), "alt": ((), s), "target": ((), s),
        "pos": ((), np.int64), "tsv_row": ((), np.int64),
        "seq_ref": ((D, 4), np.float32), "seq_alt": ((D, 4), np.float32),
        "imp_ref": ((D, 4), np.float32), "imp_alt": ((D, 4), np.float32),
        "fis": ((D,), np.float32), "max_abs_fis": ((), np.float32),
        "alt_offset": ((D,), np.int64),  # alignment of the alternate track (kipoi_dfim.indels)
    }
    if all_alts:
        spec["fis_all_alts"] = ((3, D), np.float32)
        spec["all_alts_bases"] = ((3,), s)
    return spec


class MapsWriter:
    """Append-only writer of the maps HDF5, moved into place by :meth:`finish`.

    Parameters
    ----------
    path : str
        The final file.
    flank : int
        Tracks hold offsets -flank..+flank around the variant.
    attrs : dict
        Root attributes (settings, model, targets, version).
    all_alts : bool
        Also store the FIS of the three alternative bases.
    """

    def __init__(self, path: str, flank: int, attrs: dict, all_alts: bool):
        self.path = path
        import h5py  # lazy: h5py costs ~10 MB of memory; only --maps runs need it

        self.tmp = make_temp(path)
        self.h5 = h5py.File(self.tmp, "w")
        self.D = 2 * flank + 1
        self.h5.create_dataset("offsets", data=np.arange(-flank, flank + 1, dtype=np.int64))
        for k, val in attrs.items():
            self.h5.attrs[k] = val
        for name, (shape, dt) in _spec(self.D, all_alts).items():
            self.h5.create_dataset(name, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dt,
                                   chunks=(64,) + shape if shape else (1024,))
        self.n = 0
        self.row_of_tsv: list[int] = []  # TSV row of each maps row, to pick the file-wide p/q-values
        self.tslot: list[int] = []

    def write_chunk(self, chunk: ScoredChunk) -> None:
        ok = [(k, mr) for k, mr in enumerate(chunk.maps) if mr is not None]
        if not ok:
            return
        m = len(ok)
        for k, mr in ok:
            mr["tsv_row"] = chunk.first_row + k
            self.row_of_tsv.append(chunk.first_row + k)
            self.tslot.append(k % chunk.n_targets)
        for name in ok[0][1]:
            ds = self.h5[name]
            vals = [mr[name] for _, mr in ok]
            ds.resize(self.n + m, axis=0)
            ds[self.n : self.n + m] = np.asarray(vals) if ds.dtype.kind != "O" else np.asarray(vals, dtype=object)
        self.n += m

    def finish(self, stats: FileStats) -> None:
        """Write p/q-values and per-base p-values (two-sided, Gaussian of the per-target null FIS)."""
        rows = np.asarray(self.row_of_tsv, dtype=np.int64)
        self.h5.create_dataset("pval", data=np.asarray(stats.pval, np.float64)[rows])
        self.h5.create_dataset("qval", data=np.asarray(stats.qval, np.float64)[rows])
        fp = self.h5.create_dataset("fis_pval", shape=(self.n, self.D), dtype=np.float32, fillvalue=np.nan)
        if stats.per_base is not None:
            tslot = np.asarray(self.tslot, dtype=np.int64)
            step = 4096
            for a in range(0, self.n, step):
                F = self.h5["fis"][a : a + step]
                fp[a : a + step] = per_base_pvalues(F, tslot[a : a + step], stats.per_base)
        self.h5.close()
        commit_temp(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.h5.close()
        finally:
            remove_temp(self.tmp)
