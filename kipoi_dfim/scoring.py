"""Variant scoring: VCF in, annotated VCF / TSV / maps out (``kipoi-dfim score-variants``).

For each ALT of each VCF record the variant is the source mutation of DFIM. Importance is computed on the
reference window X and the alternate window X' (same references for both, so that the difference reflects the
mutation and not resampled references); FIS at each target base t within +-N bp is
``sum_b (C_X - C_X')[t, b]`` (only the observed base is non-zero). The summary is max |FIS| over the window
(maxAbsFIS, the paper's bQTL statistic) with the offset, base and signed FIS where it is reached.

The VCF is streamed in chunks of records; each chunk's variants are batched together into model calls. The
only per-record state kept to the end is what the file-wide statistics need (one max |FIS| per row and the null
values), so a million-record VCF is never held in memory.
"""

from __future__ import annotations

import csv
import logging
import os
import shlex
import sys
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from kipoi_dfim.errors import InputError
from kipoi_dfim.io import TSV_COLUMNS, TSV_EXTRA, atomic_path, fmt, make_temp, write_vcf
from kipoi_dfim.ism import ISM_COLUMNS, ism_scores
from kipoi_dfim.sequence import ALPHABET, reverse_complement
from kipoi_dfim.variants import Fasta, Variant, count_header_lines, iter_variants, open_text, windows

log = logging.getLogger(__name__)

ALL_COLUMNS = TSV_COLUMNS + TSV_EXTRA


@dataclass
class ScoringConfig:
    """Everything that decides the numbers (written into outputs for provenance)."""

    window: int = 15
    method: str = "deeplift"
    n_refs: int = 10
    null_shuffles: int = 0
    seed: int = 0
    rc: bool = False
    all_alts: bool = False
    batch_size: int = 64
    flank: int = 50
    baseline: str = "zeros"  # integrated gradients: zeros, uniform, gc or shuffle
    steps: int = 50  # integrated gradients


def _variant_seed(seed: int, v: Variant, stream: int) -> int:
    """Per-(variant, purpose) seed: independent of chunking and batch size."""
    ss = np.random.SeedSequence([int(seed), v.record_index, v.alt_index, stream])
    return int(ss.generate_state(1)[0])


def _shared_references(X: np.ndarray, cfg: ScoringConfig, seeds: np.ndarray) -> np.ndarray | None:
    """Dinucleotide shuffles of each reference window (N, R, L, 4), drawn once and used for X and X' alike."""
    if cfg.method == "deeplift" or (cfg.method == "integrated_gradients" and cfg.baseline == "shuffle"):
        from kipoi_dfim.shuffle import dinucleotide_shuffle

        return dinucleotide_shuffle(X, n=cfg.n_refs, seed=seeds)
    return None


def _importance(model, X: np.ndarray, target: int, cfg: ScoringConfig, refs: np.ndarray | None) -> np.ndarray:
    """Importance of windows X with explicit references/baselines (so the seeds were used upstream)."""
    from kipoi_dfim.attribution import importance

    kw = {}
    if cfg.method == "deeplift":
        kw["references"] = refs
    elif cfg.method == "integrated_gradients":
        kw["baseline"] = refs if refs is not None else cfg.baseline
        kw["steps"] = cfg.steps
    return importance(model, X, target, cfg.method, batch_size=cfg.batch_size, **kw)


def _importance_pair(model, X, Xalt, target, cfg: ScoringConfig, refs) -> tuple[np.ndarray, np.ndarray]:
    """Importance of the reference and alternate windows in one batched call, with the same references."""
    both_refs = np.concatenate([refs, refs]) if refs is not None else None
    C = _importance(model, np.concatenate([X, Xalt]), target, cfg, both_refs)
    return C[: len(X)], C[len(X):]


def _window_positions(v: Variant, L: int, w: int) -> np.ndarray:
    """Window positions of the target bases: within +-w of the variant span, excluding the variant itself."""
    lo = v.offset - w
    hi = v.offset + len(v.ref) - 1 + w
    pos = np.arange(max(lo, 0), min(hi, L - 1) + 1)
    return pos[(pos < v.offset) | (pos >= v.offset + len(v.ref))]


def _summaries(fis_pos: np.ndarray, X: np.ndarray, variants: list[Variant], w: int) -> list[dict]:
    out = []
    L = fis_pos.shape[1]
    for i, v in enumerate(variants):
        pos = _window_positions(v, L, w)
        if len(pos) == 0:
            out.append({"max_abs_fis": np.nan})
            continue
        vals = fis_pos[i, pos]
        k = int(np.argmax(np.abs(vals)))
        t = int(pos[k])
        base_idx = X[i, t].argmax() if X[i, t].sum() > 0 else None
        out.append({
            "max_abs_fis": float(abs(vals[k])),
            "max_fis_offset": t - v.offset,
            "max_fis_base": ALPHABET[base_idx] if base_idx is not None else "N",
            "fis_at_max": float(vals[k]),
        })
    return out


def _mutants_all_alts(X: np.ndarray, variants: list[Variant]) -> tuple[np.ndarray, list[list[str]]]:
    """For SNVs: the three alternative bases at the variant, (3N, L, 4) in variant-major order."""
    muts, bases = [], []
    for i, v in enumerate(variants):
        alts = [b for b in ALPHABET if b != v.ref.upper()] if len(v.ref) == 1 else []
        bases.append(alts)
        for b in alts:
            m = X[i].copy()
            m[v.offset] = 0
            m[v.offset, ALPHABET.index(b)] = 1
            muts.append(m)
    if not muts:
        return np.zeros((0,) + X.shape[1:], np.float32), bases
    return np.stack(muts), bases


class _NullAccumulator:
    """File-wide null, per target: max |FIS| of the shuffled backgrounds and running moments of per-base FIS."""

    def __init__(self, n_targets: int):
        self.max_abs: list[list[np.ndarray]] = [[] for _ in range(n_targets)]
        self.n = np.zeros(n_targets)
        self.s1 = np.zeros(n_targets)
        self.s2 = np.zeros(n_targets)

    def add(self, t: int, max_abs: np.ndarray, per_base: np.ndarray) -> None:
        self.max_abs[t].append(np.asarray(max_abs, np.float32))
        per_base = per_base[np.isfinite(per_base)]
        self.n[t] += per_base.size
        self.s1[t] += per_base.sum()
        self.s2[t] += (per_base.astype(np.float64) ** 2).sum()

    def null(self, t: int) -> np.ndarray:
        return np.concatenate(self.max_abs[t]) if self.max_abs[t] else np.zeros(0, np.float32)

    def per_base_moments(self, t: int) -> tuple[float, float]:
        n = max(self.n[t], 1)
        mu = self.s1[t] / n
        return mu, float(np.sqrt(max(self.s2[t] / n - mu * mu, 0.0)))


def _null_chunk(model, X, Xalt, variants, t, cfg, acc: _NullAccumulator, t_index: int) -> None:
    """The same variants on K dinucleotide-shuffled backgrounds (variant bases kept) -> the null."""
    from kipoi_dfim.shuffle import dinucleotide_shuffle

    K = cfg.null_shuffles
    seeds = np.array([_variant_seed(cfg.seed, v, 1) for v in variants], dtype=np.uint64)
    bg = dinucleotide_shuffle(X, n=K, seed=seeds)  # (N, K, L, 4)
    nref = bg.copy()
    nalt = bg.copy()
    for i, v in enumerate(variants):
        sl = slice(v.offset, v.offset + len(v.ref))
        nref[i, :, sl] = X[i, sl]
        nalt[i, :, sl] = Xalt[i, sl]
    N, L = X.shape[0], X.shape[1]
    nref = nref.reshape(N * K, L, 4)
    nalt = nalt.reshape(N * K, L, 4)
    nseeds = np.array([_variant_seed(cfg.seed, v, 2 + k) for v in variants for k in range(K)], dtype=np.uint64)
    Cr, Ca = _importance_pair(model, nref, nalt, t, cfg, _shared_references(nref, cfg, nseeds))
    fis = (Cr - Ca).sum(-1)
    rep = [v for v in variants for _ in range(K)]
    summ = _summaries(fis, nref, rep, cfg.window)
    max_abs = np.array([s["max_abs_fis"] for s in summ], np.float32)
    per_base = np.concatenate([fis[j, _window_positions(v, L, cfg.window)] for j, v in enumerate(rep)])
    acc.add(t_index, max_abs, per_base)


def _display(a: np.ndarray, v: Variant, flank: int) -> np.ndarray:
    """Slice (L, ...) to offsets -flank..+flank around the variant, NaN/zero padded at window edges."""
    L = a.shape[0]
    out = np.zeros((2 * flank + 1,) + a.shape[1:], np.float32)
    if a.dtype.kind == "f" and a.ndim == 1:
        out[:] = np.nan
    lo = v.offset - flank
    src = np.arange(lo, lo + 2 * flank + 1)
    ok = (src >= 0) & (src < L)
    out[ok] = a[src[ok]]
    return out


class _MapsWriter:
    """Append-only writer of the maps HDF5 (docs/architecture.md), atomically moved into place on close."""

    def __init__(self, path: str, flank: int, attrs: dict, all_alts: bool):
        import h5py

        self.path = path
        self.tmp = make_temp(path)
        self.h5 = h5py.File(self.tmp, "w")
        self.D = 2 * flank + 1
        self.h5.create_dataset("offsets", data=np.arange(-flank, flank + 1, dtype=np.int64))
        for k, val in attrs.items():
            self.h5.attrs[k] = val
        s = h5py.string_dtype()
        spec = {
            "variant_id": ((), s), "chrom": ((), s), "ref": ((), s), "alt": ((), s), "target": ((), s),
            "pos": ((), np.int64), "tsv_row": ((), np.int64),
            "seq_ref": ((self.D, 4), np.float32), "seq_alt": ((self.D, 4), np.float32),
            "imp_ref": ((self.D, 4), np.float32), "imp_alt": ((self.D, 4), np.float32),
            "fis": ((self.D,), np.float32), "max_abs_fis": ((), np.float32),
        }
        if all_alts:
            spec["fis_all_alts"] = ((3, self.D), np.float32)
            spec["all_alts_bases"] = ((3,), s)
        for name, (shape, dt) in spec.items():
            self.h5.create_dataset(name, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dt,
                                   chunks=(64,) + shape if shape else (1024,))
        self.n = 0

    def append(self, rows: dict[str, list]) -> None:
        m = len(rows["variant_id"])
        if m == 0:
            return
        for name, vals in rows.items():
            ds = self.h5[name]
            ds.resize(self.n + m, axis=0)
            ds[self.n : self.n + m] = np.asarray(vals) if ds.dtype.kind != "O" else np.asarray(vals, dtype=object)
        self.n += m

    def finish(self, pval: np.ndarray, qval: np.ndarray, tslot: np.ndarray, moments) -> None:
        """Write the file-wide statistics; per-base p-values from the pooled per-target null of FIS."""
        from scipy.stats import norm

        self.h5.create_dataset("pval", data=np.asarray(pval, np.float64))
        self.h5.create_dataset("qval", data=np.asarray(qval, np.float64))
        fp = self.h5.create_dataset("fis_pval", shape=(self.n, self.D), dtype=np.float32, fillvalue=np.nan)
        if moments is not None:
            step = 4096
            for a in range(0, self.n, step):
                F = self.h5["fis"][a : a + step]
                P = np.full(F.shape, np.nan, np.float32)
                for t, (mu, sd) in enumerate(moments):
                    sel = tslot[a : a + step] == t
                    if sd > 0 and sel.any():
                        P[sel] = 2 * norm.sf(np.abs(F[sel] - mu) / sd)
                fp[a : a + step] = P
        self.h5.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.h5.close()
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)


def _count_records(vcf: str) -> int:
    n = 0
    with open_text(vcf) as fh:
        for line in fh:
            if line and not line.startswith("#") and line.strip():
                n += 1
    return n


def score_variants(
    model,
    vcf: str | os.PathLike,
    fasta: str | os.PathLike,
    *,
    out: str | None = None,
    tsv: str | None = None,
    maps: str | None = None,
    target: int | str | Sequence[int | str] | None = None,
    window: int = 15,
    method: str = "deeplift",
    n_refs: int = 10,
    null_shuffles: int = 0,
    batch_size: int = 64,
    seed: int = 0,
    rc: bool = False,
    all_alts: bool = False,
    baseline: str = "zeros",
    steps: int = 50,
    chunk_size: int = 256,
    variant_ids: Sequence[str] | None = None,
    source: str | None = None,
    output: str = "logit",
    quiet: bool = False,
    return_table: bool = True,
    command: str | None = None,
):
    """Score the interactions of every VCF variant with the bases around it, plus ISM effect scores.

    Parameters
    ----------
    model
        Anything :func:`kipoi_dfim.load_model` accepts (a Kipoi model dir, a model object, ...).
    vcf, fasta
        Input VCF (plain or bgzipped) and reference FASTA (the .fai is built if missing).
    out, tsv, maps
        Optional outputs: annotated VCF (.vcf / .vcf.gz), the TSV table, the HDF5 of FIS tracks.
    target
        Model output(s) to score, by index or label; default all.
    window
        Targets are the bases within +-``window`` bp of the variant (15 in the paper).
    method
        Importance method: ``deeplift`` (default), ``grad_input``, ``integrated_gradients`` or ``ism``.
    n_refs
        DeepLIFT references (dinucleotide shuffles of the reference window) per variant.
    null_shuffles
        K dinucleotide-shuffled backgrounds per variant for the null of max |FIS| (0: no p/q-values).
    batch_size, chunk_size
        Sequences per model call; VCF records per chunk. Neither changes the numbers.
    seed
        Seed of all shuffles; a variant's shuffles depend only on (seed, record, ALT).
    rc
        Average the ISM scores with the reverse complement windows.
    all_alts
        Also compute the paper's maxFIS over all three alternative bases (SNVs).
    baseline, steps
        Integrated gradients: baseline ``zeros``, ``uniform`` (0.25), ``gc`` or ``shuffle`` (``n_refs``
        dinucleotide shuffles of the reference window, shared by both alleles), and the number of steps.
    variant_ids
        Only score these variant IDs (as in the ``variant_id`` column).

    Returns
    -------
    pandas.DataFrame or None
        The TSV's table (one row per variant x ALT x target), unless ``return_table=False``.
    """
    from kipoi_dfim.backend import load_model

    if window < 1:
        raise InputError(f"--window must be >= 1, got {window}")
    # cheap input checks first, so a typo in a path fails before a model is loaded
    fa = Fasta(fasta)
    from kipoi_dfim.variants import open_vcf

    open_vcf(vcf).close()
    m = load_model(model, source=source, output=output, batch_size=batch_size)
    if m.seq_len < 2 * window + 1:
        raise InputError(f"the model input ({m.seq_len} bp) is shorter than the +-{window} bp target window")
    if target is None:
        tidx = list(range(len(m.targets)))
    else:
        targets_in = [target] if isinstance(target, (int, str)) else list(target)
        tidx = [m.target_index(t) for t in targets_in]
    tnames = [m.targets[t] for t in tidx]
    cfg = ScoringConfig(window=window, method=method, n_refs=n_refs, null_shuffles=null_shuffles, seed=seed,
                        rc=rc, all_alts=all_alts, batch_size=batch_size, baseline=baseline, steps=steps,
                        flank=min(max(window, 50), (m.seq_len - 1) // 2))
    from kipoi_dfim.attribution import METHODS

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    wanted = set(variant_ids) if variant_ids is not None else None

    workdir = tempfile.mkdtemp(prefix="kipoi_dfim_")
    partial = os.path.join(workdir, "partial.tsv")
    acc = _NullAccumulator(len(tidx)) if null_shuffles > 0 else None
    # compact per-row state for the file-wide statistics (8-12 bytes a row)
    row_target = array("i")  # target slot of each row (the null is pooled per target)
    row_max_abs = array("d")
    maps_rows_idx = array("q")  # TSV row of each maps row
    maps_writer = None
    if maps:
        maps_writer = _MapsWriter(
            maps, cfg.flank, {"window": window, "flank": cfg.flank, "method": method, "model": str(model),
                              "targets": tnames, "seed": seed, "n_refs": n_refs, "null_shuffles": null_shuffles,
                              "version": _version()}, all_alts)
    total = _count_records(str(vcf))
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="record", desc="score-variants", disable=quiet, file=sys.stderr)
    n_rows = 0
    seen_ids: set[str] = set()
    try:
        with open(partial, "w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            w.writerow(ALL_COLUMNS)
            for chunk in iter_variants(vcf, fa, m.seq_len, chunk_size=chunk_size):
                n_chunk_records = len({v.record_index for v in chunk})
                if wanted is not None:
                    chunk = [v for v in chunk if v.variant_id in wanted]
                    seen_ids.update(v.variant_id for v in chunk)
                rows, maps_rows, _ = _score_chunk(m, chunk, fa, tidx, tnames, cfg, acc)
                for r, mr in zip(rows, maps_rows, strict=True):
                    row_target.append(r.pop("_tslot"))
                    row_max_abs.append(r.get("max_abs_fis", np.nan))
                    if mr is not None:
                        mr["tsv_row"] = n_rows
                        maps_rows_idx.append(n_rows)
                    w.writerow([fmt(r.get(c)) for c in ALL_COLUMNS])
                    n_rows += 1
                if maps_writer is not None:
                    ok_maps = [mr for mr in maps_rows if mr is not None]
                    if ok_maps:
                        maps_writer.append({k: [mr[k] for mr in ok_maps] for k in ok_maps[0]})
                bar.update(n_chunk_records)
        bar.close()
        if wanted is not None and not seen_ids:
            raise InputError(f"none of the variant IDs {sorted(wanted)[:5]} is in the VCF", path=str(vcf))

        # file-wide statistics
        row_target_np = np.frombuffer(row_target, dtype=np.int32) if len(row_target) else np.zeros(0, np.int32)
        pval, pemp, qval = _pvalues(np.array(row_max_abs, np.float64), row_target_np, acc, len(tidx))
        _finish_tsv(partial, tsv, pval, pemp, qval)
        if out:
            write_vcf(str(vcf), out, _rows_by_record(tsv or partial), tnames, window, method, acc is not None,
                      command=command)
        if maps_writer is not None:
            rows_idx = np.array(maps_rows_idx, dtype=np.int64)
            moments = [acc.per_base_moments(t) for t in range(len(tidx))] if acc is not None else None
            maps_writer.finish(pval[rows_idx], qval[rows_idx], row_target_np[rows_idx], moments)
            maps_writer = None
        if return_table:
            import pandas as pd

            return pd.read_csv(tsv or partial, sep="\t", keep_default_na=True,
                               dtype={"variant_id": str, "chrom": str, "ref": str, "alt": str, "target": str,
                                      "status": str, "max_fis_base": str, "flags": str})
        return None
    finally:
        if maps_writer is not None:
            maps_writer.abort()
        for f in os.listdir(workdir):
            os.remove(os.path.join(workdir, f))
        os.rmdir(workdir)


def _version() -> str:
    from kipoi_dfim import __version__

    return __version__


def _score_chunk(m, chunk: list[Variant], fa: Fasta, tidx, tnames, cfg: ScoringConfig, acc):
    """Rows (TSV dicts, one per variant x target, in record/ALT/target order), maps rows and FIS tracks."""
    X, Xalt = windows([v for v in chunk if v.ok], fa, m.seq_len)
    return score_windows(m, chunk, X, Xalt, tidx, tnames, cfg, acc)


def score_windows(m, chunk: list[Variant], X: np.ndarray, Xalt: np.ndarray, tidx, tnames, cfg: ScoringConfig,
                  acc=None):
    """Score variants whose windows are already extracted.

    ``X``/``Xalt`` hold the reference/alternate windows of the variants of ``chunk`` with status ok, in order;
    the others get a row with their status. Returns (TSV rows, maps rows, FIS tracks). Used by
    :func:`score_variants` and by the Kipoi model that ``kipoi-dfim kipoi-spec`` writes.
    """
    ok = [v for v in chunk if v.ok]
    per_target: dict[int, dict] = {}
    ism = {}
    if ok:
        P = m.predict(np.concatenate([X, Xalt]), output="raw").astype(np.float64)
        pr, pa = P[: len(ok)], P[len(ok):]
        pr_rc = pa_rc = None
        if cfg.rc:
            Prc = m.predict(reverse_complement(np.concatenate([X, Xalt])), output="raw").astype(np.float64)
            pr_rc, pa_rc = Prc[: len(ok)], Prc[len(ok):]
        ism = ism_scores(pr, pa, pr_rc, pa_rc)
        seeds = np.array([_variant_seed(cfg.seed, v, 0) for v in ok], dtype=np.uint64)
        refs = _shared_references(X, cfg, seeds)  # drawn once, used for every target
        if cfg.all_alts:
            Xm, mut_bases = _mutants_all_alts(X, ok)
            counts = [len(b) for b in mut_bases]
            refs_m = np.repeat(refs, counts, axis=0) if refs is not None else None
        for slot, t in enumerate(tidx):
            Cr, Ca = _importance_pair(m, X, Xalt, t, cfg, refs)
            fis_pos = (Cr - Ca).sum(-1)
            summ = _summaries(fis_pos, X, ok, cfg.window)
            res = {"Cr": Cr, "Ca": Ca, "fis": fis_pos, "summ": summ}
            if cfg.all_alts:
                Cm = _importance(m, Xm, t, cfg, refs_m)
                fis_m = (np.repeat(Cr, counts, axis=0) - Cm).sum(-1)
                res["fis_all"] = fis_m
                res["mut_bases"] = mut_bases
            if acc is not None:
                _null_chunk(m, X, Xalt, ok, t, cfg, acc, slot)
            per_target[slot] = res

    rows, maps_rows, fis_tracks = [], [], []
    ok_index = {id(v): i for i, v in enumerate(ok)}
    for v in chunk:
        i = ok_index.get(id(v))
        for slot, tname in enumerate(tnames):
            r = {
                "variant_id": v.variant_id, "chrom": v.chrom, "pos": v.pos, "ref": v.ref, "alt": v.alt,
                "target": tname, "status": v.status, "flags": ";".join(v.flags), "vcf_record": v.record_index,
                "vcf_line": v.line, "alt_index": v.alt_index, "_tslot": slot,
            }
            mr = None
            if i is not None:
                res = per_target[slot]
                r.update(res["summ"][i])
                for c in ISM_COLUMNS:
                    r[c] = float(ism[c][i, tidx[slot]])
                if cfg.all_alts and "fis_all" in res:
                    r.update(_maxfis_summary(res, i, v, m.seq_len, cfg.window))
                fis_disp = _display(res["fis"][i], v, cfg.flank)
                fis_disp[cfg.flank : cfg.flank + len(v.ref)] = np.nan
                mr = {
                    "variant_id": v.variant_id, "chrom": v.chrom, "ref": v.ref, "alt": v.alt, "target": tname,
                    "pos": v.pos, "tsv_row": -1,
                    "seq_ref": _display(X[i], v, cfg.flank), "seq_alt": _display(Xalt[i], v, cfg.flank),
                    "imp_ref": _display(res["Cr"][i], v, cfg.flank), "imp_alt": _display(res["Ca"][i], v, cfg.flank),
                    "fis": fis_disp, "max_abs_fis": r.get("max_abs_fis", np.nan),
                }
                if cfg.all_alts:
                    fa3 = np.full((3, 2 * cfg.flank + 1), np.nan, np.float32)
                    b3 = ["", "", ""]
                    if "fis_all" in res and res["mut_bases"][i]:
                        start = sum(len(b) for b in res["mut_bases"][:i])
                        for g, b in enumerate(res["mut_bases"][i]):
                            fa3[g] = _display(res["fis_all"][start + g], v, cfg.flank)
                            fa3[g, cfg.flank] = np.nan
                            b3[g] = b
                    mr["fis_all_alts"] = fa3
                    mr["all_alts_bases"] = b3
                fis_tracks.append(fis_disp)
            rows.append(r)
            maps_rows.append(mr)
    return rows, maps_rows, fis_tracks


def _maxfis_summary(res: dict, i: int, v: Variant, L: int, w: int) -> dict:
    """The paper's maxFIS(t) = max over the three mutants g of FIS_g(t); summary max |maxFIS| in the window."""
    bases = res["mut_bases"][i]
    if not bases:
        return {}
    start = sum(len(b) for b in res["mut_bases"][:i])
    F = res["fis_all"][start : start + len(bases)]  # (3, L)
    maxfis = F.max(0)
    pos = _window_positions(v, L, w)
    k = int(np.argmax(np.abs(maxfis[pos])))
    return {"max_abs_maxfis": float(abs(maxfis[pos][k])), "maxfis_offset": int(pos[k]) - v.offset}


def _pvalues(max_abs: np.ndarray, tslot: np.ndarray, acc, n_targets: int):
    n = len(max_abs)
    pval = np.full(n, np.nan)
    pemp = np.full(n, np.nan)
    if acc is None or n == 0:
        return pval, pemp, np.full(n, np.nan)
    from kipoi_dfim.null import bh_qvalues, empirical_pvalues, gaussian_pvalues

    for t in range(n_targets):
        sel = (tslot == t) & np.isfinite(max_abs)
        null = acc.null(t)
        null = null[np.isfinite(null)]
        if not sel.any() or len(null) < 2:
            continue
        # max |FIS| is large when significant: upper tail
        pval[sel] = gaussian_pvalues(max_abs[sel], null, two_sided=False)
        pemp[sel] = empirical_pvalues(max_abs[sel], null, two_sided=False)
    return pval, pemp, bh_qvalues(pval)


def _finish_tsv(partial: str, tsv: str | None, pval, pemp, qval) -> None:
    """Fill the file-wide p/q-values into the partial TSV and move it to ``tsv`` atomically."""
    target = tsv or partial
    with atomic_path(target) as tmp:
        with open(partial, newline="") as fin, open(tmp, "w", newline="") as fout:
            r = csv.reader(fin, delimiter="\t")
            w = csv.writer(fout, delimiter="\t", lineterminator="\n")
            header = next(r)
            ip, iq, ie = header.index("pval"), header.index("qval"), header.index("pval_empirical")
            w.writerow(header)
            for k, row in enumerate(r):
                row[ip], row[iq], row[ie] = fmt(pval[k]), fmt(qval[k]), fmt(pemp[k])
                w.writerow(row)


def _rows_by_record(tsv: str) -> Iterator[tuple[int, list[dict]]]:
    """Stream TSV rows grouped by VCF record (rows are in record order)."""
    with open(tsv, newline="") as fh:
        r = csv.DictReader(fh, delimiter="\t")
        cur, rows = None, []
        for row in r:
            rec = int(row["vcf_record"])
            row["alt_index"] = int(row["alt_index"])
            if cur is not None and rec != cur:
                yield cur, rows
                rows = []
            cur = rec
            rows.append(row)
        if cur is not None:
            yield cur, rows


def run(args) -> None:
    """``kipoi-dfim score-variants``."""
    score_variants(
        args.model, args.vcf, args.fasta, out=args.out, tsv=args.tsv, maps=args.maps, target=args.target,
        window=args.window, method=args.method, n_refs=args.n_refs, null_shuffles=args.null_shuffles,
        batch_size=args.batch_size, seed=args.seed, rc=args.rc, all_alts=args.all_alts, chunk_size=args.chunk_size,
        baseline=args.baseline, steps=args.steps,
        source=args.source, output=args.output, quiet=args.quiet, return_table=False,
        command="kipoi-dfim " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )


__all__ = ["score_variants", "run", "count_header_lines"]
