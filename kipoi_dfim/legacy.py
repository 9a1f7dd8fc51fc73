"""The original kundajelab/dfim workflow, on kipoi-dfim's engine (Python 3, no deeplift 0.4).

Same function names, arguments and ``mut_loc_dict`` format as the original package, so that a notebook
written for it runs with a changed import. The steps:

1. :func:`generate_mutants_and_key` -- mutated sequences + a key table, from ``sequences`` and ``mut_loc_dict``
2. :func:`compute_importance` -- importance of originals and mutants, per task
3. :func:`compute_delta_profiles` -- original minus mutant importance over each response window
4. :func:`compute_dfim` -- per-element maps (DataFrames) or per-base arrays
5. (null) steps 1-4 again on :func:`shuffle_seq_from_one_hot` (dinucleotide-shuffled) sequences
6. :func:`assign_pval` -- p-values of the maps against the shuffled maps

Plotting (``plot_delta_tracks``, ``plot_dfim``) lives in :mod:`kipoi_dfim.plot`; the names are forwarded here.

``mut_loc_dict`` maps a label to::

    {'seq': 0, 'mut_start': 45, 'mut_end': 55, 'mut_name': 'motifA',
     'resp_start': [0], 'resp_end': [100], 'resp_names': ['flank_size_100']}

Sequences are one-hot ``(N, L, 4)`` ACGT (the original also took ``(N, L, 4)`` and indexed ``[pos, base]``).
The differences from the original are listed in ``docs/legacy.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from kipoi_dfim import null as nullmod
from kipoi_dfim import plot
from kipoi_dfim.attribution import importance
from kipoi_dfim.backend import load_model
from kipoi_dfim.fis import fill_span, importance_shared, observed_base
from kipoi_dfim.sequence import ALPHABET
from kipoi_dfim.shuffle import dinucleotide_shuffle

log = logging.getLogger(__name__)

BASES = list(ALPHABET)

# original score_type -> our importance method (None: not available, with the reason)
SCORE_TYPES: dict[str, str | None] = {
    "gradient_input": "grad_input",
    "deeplift": "deeplift",
    "integrated_gradients": "integrated_gradients",
    "ism": "ism",
    "rescale_all_layers": None,
    "revealcancel_all_layers": None,
    "guided_backprop": None,
    "deconv": None,
}


def get_orig_letter(one_hot_vec: np.ndarray) -> str:
    """Letter of a one-hot column (the original's helper)."""
    b = observed_base(np.asarray(one_hot_vec)[None], 0)
    if b < 0:
        raise ValueError("position is N: no original letter")
    return ALPHABET[b]


def get_letter_index(letter: str) -> int:
    """Index of a letter in ACGT (the original's helper)."""
    return ALPHABET.index(letter.upper())


# --------------------------------------------------------------------------------------------- step 1
def generate_mutants_and_key(
    sequences: np.ndarray,
    mut_loc_dict: dict[str, dict[str, Any]],
    sequence_index: Sequence[int] | None = None,
    mutants: Sequence[str] = tuple(BASES),
    per_base_map: bool = False,
    fill: str = "zero",
    gc: float = 0.46,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Step 1: the original sequences and their mutants, with a key table.

    For every sequence with at least one entry in ``mut_loc_dict``: the original (label ``"original"``),
    then for each entry either the whole span ``[mut_start, mut_end)`` filled (``per_base_map=False``;
    ``fill="zero"`` as the original code, ``"background"`` as the paper) or, with ``per_base_map=True``,
    every base of the span substituted by each letter of ``mutants`` other than the observed one.

    Returns
    -------
    (mutated_seq_array, mutated_seq_key)
        ``(M, L, 4)`` array and a DataFrame with columns ``array_ind, label, seq, mut_key, mut_start,
        mut_end`` (+ ``orig_letter, mut_letter`` for per-base maps), one row per array row.
    """
    sequences = np.asarray(sequences, dtype=np.float32)
    if sequence_index is None:
        sequence_index = range(sequences.shape[0])
    arrays: list[np.ndarray] = []
    keys: list[dict[str, Any]] = []

    def add(arr: np.ndarray, **row: Any) -> None:
        row["array_ind"] = len(arrays)
        arrays.append(arr)
        keys.append(row)

    for seq in sequence_index:
        names = [m for m, d in mut_loc_dict.items() if d["seq"] == seq]
        if not names:
            continue
        base = {"orig_letter": -1, "mut_letter": -1} if per_base_map else {}
        add(sequences[seq], label="original", seq=seq, mut_key="original", mut_start=-1, mut_end=-1, **base)
        for m in names:
            a, b = int(mut_loc_dict[m]["mut_start"]), int(mut_loc_dict[m]["mut_end"])
            if b <= a:
                raise ValueError(f"mut_loc_dict[{m!r}]: mut_end ({b}) must be > mut_start ({a})")
            if per_base_map:
                for pos in range(a, b):
                    orig = get_orig_letter(sequences[seq][pos])
                    for letter in mutants:
                        if letter == orig:
                            continue
                        arr = sequences[seq].copy()
                        arr[pos] = 0
                        arr[pos, get_letter_index(letter)] = 1
                        add(arr, label=f"seq_{seq}_{orig}to{letter}_at{pos}", seq=seq, mut_key=m,
                            mut_start=pos, mut_end=b, orig_letter=orig, mut_letter=letter)
            else:
                add(fill_span(sequences[seq], a, b, fill, gc), label=f"{m};seq_{seq}_loc{a}-{b}", seq=seq,
                    mut_key=m, mut_start=a, mut_end=b)
    cols = ["array_ind", "label", "seq", "mut_key", "mut_start", "mut_end"]
    if per_base_map:
        cols += ["orig_letter", "mut_letter"]
    key = pd.DataFrame(keys, columns=cols)
    arr = np.stack(arrays) if arrays else np.zeros((0,) + sequences.shape[1:], np.float32)
    return arr, key


# --------------------------------------------------------------------------------------------- step 2
def compute_importance(
    model: Any,
    sequences: np.ndarray,
    tasks: Sequence[int | str],
    score_type: str = "gradient_input",
    reference_shuffle_type: str | None = "dinuc",
    num_refs_per_seq: int = 5,
    mutated_seq_key: pd.DataFrame | None = None,
    seed: int = 1,
    batch_size: int = 64,
    **kw: Any,
) -> dict[int | str, np.ndarray]:
    """Step 2: importance ``(M, L, 4)`` of every row of ``sequences`` for each task.

    ``score_type`` keeps the original names (``gradient_input``, ``deeplift``; also ``integrated_gradients``
    and ``ism``). DeepLIFT uses ``num_refs_per_seq`` dinucleotide-shuffled references (the original's
    ``reference_shuffle_type='dinuc'``); ``reference_gc`` constant references and the deeplift-0.4-only
    modes (``rescale_all_layers``, ``revealcancel_all_layers``, ``guided_backprop``, ``deconv``) are not
    available. ``model`` is a :func:`kipoi_dfim.load_model` model or anything it accepts.

    Pass ``mutated_seq_key`` (from step 1) to give every mutant the seed of its original sequence: the
    original and its mutants then get the same shuffled references, so the delta profiles measure the
    mutation and not a change of references.
    """
    if score_type not in SCORE_TYPES:
        raise ValueError(f"unknown score_type {score_type!r}; known: {sorted(SCORE_TYPES)}")
    method = SCORE_TYPES[score_type]
    if method is None:
        raise ValueError(f"score_type {score_type!r} needed deeplift 0.4 and is not available; use one of "
                         f"{sorted(k for k, v in SCORE_TYPES.items() if v)}")
    if method == "deeplift" and reference_shuffle_type not in ("dinuc", None):
        raise ValueError("only dinucleotide-shuffled references are available (reference_shuffle_type='dinuc')")
    if not hasattr(model, "seq_len"):
        model = load_model(model)
    sequences = np.asarray(sequences, dtype=np.float32)
    if method == "deeplift":
        kw.setdefault("n_refs", num_refs_per_seq)
    if mutated_seq_key is None:
        return {t: np.asarray(importance(model, sequences, t, method=method, batch_size=batch_size, seed=seed,
                                         **kw)) for t in tasks}
    # one call per original sequence and its mutants, all with the original's seed and references
    key = mutated_seq_key.sort_values("array_ind")
    out = {t: np.zeros(sequences.shape, np.float32) for t in tasks}
    for s, grp in key.groupby("seq", sort=False):
        orig = grp[grp["label"] == "original"]["array_ind"].to_numpy()
        rows = np.concatenate([orig, grp[grp["label"] != "original"]["array_ind"].to_numpy()]).astype(int)
        sseed = int(np.random.SeedSequence([int(seed), int(s)]).generate_state(1)[0])
        for t in tasks:
            out[t][rows] = importance_shared(model, sequences[rows], t, method, sseed, batch_size, **dict(kw))
    return out


# --------------------------------------------------------------------------------------------- step 3
def compute_delta_profiles(
    score_dict: dict[Any, np.ndarray],
    mutated_seq_key: pd.DataFrame,
    mut_loc_dict: dict[str, dict[str, Any]],
    tasks: Sequence[Any],
    sequence_index: Sequence[int],
    mutated_seq_preds: np.ndarray | None = None,
    capture_seqs_max_thresh: float | None = None,
) -> dict:
    """Step 3: ``delta_profile = orig - mutant`` importance over each response window (eq. 1).

    Returns ``delta_dict[task][seq][mutant label][resp key]`` with ``orig_profile``, ``mut_profile``,
    ``delta_profile`` (``(resp_len, 4)``; zero at the mutated positions), ``prediction_diff``, ``mut_start``,
    ``resp_start``, ``resp_end``, ``mut_key``, ``mut_name``, ``resp_name``. With ``capture_seqs_max_thresh``
    only profiles whose max ``|delta|`` exceeds it are kept.
    """
    out: dict = {}
    for task in tasks:
        out[task] = {}
        scores = score_dict[task]
        for seq in sequence_index:
            out[task][seq] = {}
            sk = mutated_seq_key[mutated_seq_key["seq"] == seq]
            orig = sk[sk["label"] == "original"]
            if orig.empty:
                continue
            oi = int(orig["array_ind"].iloc[0])
            for _, row in sk[sk["label"] != "original"].iterrows():
                m, label, mi = row["mut_key"], row["label"], int(row["array_ind"])
                entry = mut_loc_dict[m]
                ms, me = int(row["mut_start"]), int(row["mut_end"])
                if "orig_letter" in row and row["orig_letter"] != -1:
                    me = ms + 1  # per-base mutant: only this base was changed
                out[task][seq][label] = {}
                for r, (rs, re_) in enumerate(zip(entry["resp_start"], entry["resp_end"], strict=True)):
                    op = scores[oi][rs:re_]
                    mp = scores[mi][rs:re_]
                    delta = op - mp
                    a, b = max(ms, rs) - rs, min(me, re_) - rs
                    if b > a:
                        delta[a:b] = 0
                    pdiff = None
                    if mutated_seq_preds is not None:
                        pdiff = np.asarray(mutated_seq_preds[oi]) - np.asarray(mutated_seq_preds[mi])
                        pdiff = pdiff.ravel()[0]
                    if capture_seqs_max_thresh is not None and not np.abs(delta).max() > capture_seqs_max_thresh:
                        continue
                    rkey = f"resp_{entry['resp_names'][r]}_{rs}to{re_}"
                    out[task][seq][label][rkey] = {
                        "orig_profile": op, "mut_profile": mp, "delta_profile": delta,
                        "prediction_diff": pdiff, "mut_start": ms, "resp_start": rs, "resp_end": re_,
                        "mut_key": m, "mut_name": entry.get("mut_name", m), "resp_name": entry["resp_names"][r],
                    }
    return out


# --------------------------------------------------------------------------------------------- step 4
def _reduce(a: np.ndarray, operations: Sequence[Callable], axes: Sequence[int]) -> np.ndarray:
    for op, ax in zip(operations, axes, strict=True):
        a = np.apply_along_axis(op, ax, a)
    return a


def dfim_per_element(
    delta_dict: dict, task: Any, seq: int, all_mut_pos: Sequence[int], all_resp_pos: Sequence[int],
    diagonal_value: float, operations: Sequence[Callable], operation_axes: Sequence[int], absolute_value: bool,
) -> pd.DataFrame:
    """Per-element map of one sequence: rows = mutation starts, columns = response starts."""
    df = pd.DataFrame(diagonal_value, index=list(all_mut_pos), columns=list(all_resp_pos), dtype=float)
    for m in delta_dict[task][seq]:
        for d in delta_dict[task][seq][m].values():
            prof = np.abs(d["delta_profile"]) if absolute_value else d["delta_profile"]
            df.loc[d["mut_start"], d["resp_start"]] = float(_reduce(prof, operations, operation_axes))
    return df


def dfim_per_base(
    dfim_key: pd.DataFrame, resp_size: int, diagonal_value: float, delta_dict: dict, task: Any, seq: int,
    absolute_value: bool, operations: Sequence[Callable] | None, operation_axes: Sequence[int] | None,
) -> np.ndarray:
    """Per-base array of one source entry: ``(mut_positions, orig_letter, mut_letter, resp_size, resp_letter)``.

    (orig, mut) letter combinations that were not made (a base never mutates to itself) stay 0, as in the
    original; ``diagonal_value`` is accepted for signature compatibility.
    """
    starts = sorted(dfim_key["mut_start"].unique().tolist())
    arr = np.zeros((len(starts), 4, 4, resp_size, 4))
    for _, row in dfim_key.iterrows():
        resp = delta_dict[task][seq].get(row["label"], {})
        if len(resp) != 1:
            raise ValueError(f"per-base maps need exactly one response window per mutation, got {len(resp)}")
        (d,) = resp.values()
        prof = np.abs(d["delta_profile"]) if absolute_value else d["delta_profile"]
        arr[starts.index(row["mut_start"]), get_letter_index(row["orig_letter"]),
            get_letter_index(row["mut_letter"])] = prof
    if operations is not None:
        arr = _reduce(arr, operations, operation_axes)
    return arr


def compute_dfim(
    delta_dict: dict,
    sequence_index: Sequence[int],
    tasks: Sequence[Any],
    operations: Sequence[Callable] | None = (np.sum, np.max),
    operation_axes: Sequence[int] | None = (1, 0),
    absolute_value: bool = True,
    annotate: bool = False,
    mutated_seq_key: pd.DataFrame | None = None,
    diagonal_value: float = -1,
    per_base_map: bool = False,
) -> dict:
    """Step 4: DFIM per task and sequence.

    Per-element (default): a DataFrame, rows = mutation starts, columns = response starts, each cell the
    delta profile reduced by ``operations`` along ``operation_axes`` (default: sum over the 4 letters, then
    max over positions, of ``|delta|`` -- the original's defaults); pairs never computed hold
    ``diagonal_value``. With ``annotate`` the rows/columns are named by ``mut_name`` / ``resp_names``.

    Per-base (``per_base_map=True``, needs ``mutated_seq_key``): ``dfim_dict[task][seq][mut_key]`` is the 5-D
    array of :func:`dfim_per_base` (pass ``operations=None`` to keep it whole).
    """
    out: dict = {}
    for task in tasks:
        out[task] = {}
        for seq in sequence_index:
            dd = delta_dict[task].get(seq, {})
            if per_base_map:
                if mutated_seq_key is None:
                    raise ValueError("per_base_map=True needs mutated_seq_key")
                out[task][seq] = {}
                sk = mutated_seq_key[(mutated_seq_key["seq"] == seq) & (mutated_seq_key["label"] != "original")]
                for mkey in sk["mut_key"].unique():
                    sizes = {d["resp_end"] - d["resp_start"] for lab in dd for d in dd[lab].values()}
                    if len(sizes) != 1:
                        raise ValueError("per-base maps need response windows of one size")
                    out[task][seq][mkey] = dfim_per_base(
                        sk[sk["mut_key"] == mkey], sizes.pop(), diagonal_value, delta_dict, task, seq,
                        absolute_value, operations, operation_axes)
                continue
            muts = sorted({d["mut_start"] for lab in dd for d in dd[lab].values()})
            resps = sorted({d["resp_start"] for lab in dd for d in dd[lab].values()})
            df = dfim_per_element(delta_dict, task, seq, muts, resps, diagonal_value, operations, operation_axes,
                                  absolute_value)
            if annotate:
                names = {d["mut_start"]: d["mut_name"] for lab in dd for d in dd[lab].values()}
                resp_names = {d["resp_start"]: d["resp_name"] for lab in dd for d in dd[lab].values()}
                df.index = [names.get(p, p) for p in df.index]
                df.columns = [resp_names.get(p, p) for p in df.columns]
            out[task][seq] = df
    return out


# --------------------------------------------------------------------------------------------- step 5
def shuffle_seq_from_one_hot(sequences: np.ndarray, dinuc: bool = True, seed: int = 1) -> np.ndarray:
    """Step 5 input: one dinucleotide-shuffled copy of every sequence (uniform shuffle, seed per sequence).

    The original's one-hot path only had a mononucleotide permutation (the same for every sequence); the
    paper's null uses dinucleotide shuffles, which is what this does (``dinuc=False`` is refused).
    """
    if not dinuc:
        raise ValueError("only dinucleotide shuffles are available (the paper's null)")
    s = np.asarray(dinucleotide_shuffle(np.asarray(sequences, dtype=np.float32), 1, seed=seed))
    return s[:, 0]


# --------------------------------------------------------------------------------------------- step 6
def _leaves(d: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    if isinstance(d, dict):
        out = []
        for k, v in d.items():
            out.extend(_leaves(v, path + (k,)))
        return out
    return [(path, d)]


def _set(d: dict, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = value


def assign_pval(
    dfim_dict: dict,
    null_dict: dict,
    null_level: str = "per_map",
    null_type: str = "empirical",
    diagonal_value: float = 0,
) -> dict:
    """Step 6: p-values of every map in ``dfim_dict`` against the maps of shuffled sequences ``null_dict``.

    ``null_level``: ``per_map`` (each map against the null map at the same key), ``per_task`` (all null maps
    of the task), ``global`` (all null maps). ``null_type``: ``empirical`` or ``fit_gaussian``. As in the
    original the test is one-sided (large scores are significant: maps are ``|FIS|`` by default) and null
    values equal to ``diagonal_value`` (pairs never computed) are left out of the null.
    Returns a dict of the same shape, leaves of the same type (DataFrame/array) holding p-values.
    """
    if null_level not in ("per_map", "per_task", "global"):
        raise ValueError(f"null_level must be per_map, per_task or global, got {null_level!r}")
    if null_type not in ("empirical", "fit_gaussian"):
        raise ValueError(f"null_type must be empirical or fit_gaussian, got {null_type!r}")
    fn = nullmod.empirical_pvalues if null_type == "empirical" else nullmod.gaussian_pvalues
    real = _leaves(dfim_dict)
    null = dict(_leaves(null_dict))

    def values(v: Any) -> np.ndarray:
        a = np.asarray(v.values if isinstance(v, pd.DataFrame) else v, dtype=np.float64).ravel()
        return a[~np.isnan(a) & (a != diagonal_value)]

    def pool(path: tuple) -> np.ndarray:
        if null_level == "per_map":
            if path not in null:
                raise KeyError(f"no null map at {path}")
            return values(null[path])
        sel = [v for p, v in null.items() if null_level == "global" or p[0] == path[0]]
        return np.concatenate([values(v) for v in sel]) if sel else np.zeros(0)

    out: dict = {}
    for path, v in real:
        a = np.asarray(v.values if isinstance(v, pd.DataFrame) else v, dtype=np.float64)
        p = np.full(a.shape, np.nan)
        ok = ~np.isnan(a)
        if ok.any():
            p[ok] = fn(a[ok], pool(path), two_sided=False)
        leaf = pd.DataFrame(p, index=v.index, columns=v.columns) if isinstance(v, pd.DataFrame) else p
        _set(out, path, leaf)
    return out


# --------------------------------------------------------------------------------------------- plots
def plot_delta_tracks(*args: Any, **kwargs: Any) -> Any:
    """Forwarded to :func:`kipoi_dfim.plot.plot_delta_tracks` (the plotting step lives in ``plot``)."""
    return plot.plot_delta_tracks(*args, **kwargs)


def plot_dfim(*args: Any, **kwargs: Any) -> Any:
    """Forwarded to :func:`kipoi_dfim.plot.plot_dfim`."""
    return plot.plot_dfim(*args, **kwargs)
