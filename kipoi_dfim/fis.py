"""Feature interaction scores (FIS) and Deep Feature Interaction Maps (DFIM).

Greenside et al. (Bioinformatics 2018), eq. 1-3: the importance ``C_X`` of every observed base is computed on
a sequence ``X`` and on ``X'``, the same sequence with a *source* feature mutated; the change of importance at
a *target* feature, ``FIS = C_X - C_X'``, measures how much the target's contribution depends on the source.
It is directional (source -> target) and signed: positive when the mutation removes importance from the
target (cooperation), negative when it adds importance (competition).

Everything here works on numpy one-hot arrays ``(L, 4)`` / ``(N, L, 4)`` and calls the model only through
:func:`kipoi_dfim.attribution.importance`. A sequence and all of its mutants are scored in one call with the
*same* per-sequence seed, so stochastic references (DeepLIFT's dinucleotide shuffles) are drawn identically
for the original and the mutants and the FIS does not depend on the batch size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kipoi_dfim.attribution import METHODS, Method, importance, shuffled_references
from kipoi_dfim.progress import Progress
from kipoi_dfim.references import load_references
from kipoi_dfim.sequence import ALPHABET, background_frequencies
from kipoi_dfim.settings import REFERENCE_KINDS
from kipoi_dfim.shuffle import dinucleotide_shuffle, sequence_rngs

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

Span = tuple[int, int]


# --------------------------------------------------------------------------------------------- eq. 1
def fis(imp_x: np.ndarray, imp_mut: np.ndarray, absolute: bool = False) -> np.ndarray:
    """Feature interaction score, eq. 1: ``C_X - C_X'``.

    Parameters
    ----------
    imp_x, imp_mut : np.ndarray
        Importance of the original sequence and of the mutant, same shape (broadcastable).
    absolute : bool
        Return ``|C_X - C_X'|``. The signed score is the default because the sign tells cooperation
        (importance lost when the source is destroyed) from competition (importance gained).

    Returns
    -------
    np.ndarray
        The score, shape of the broadcast inputs.
    """
    d = np.asarray(imp_x) - np.asarray(imp_mut)
    return np.abs(d) if absolute else d


# --------------------------------------------------------------------------------------------- mutants
def _base_index(base: int | str) -> int:
    if isinstance(base, str):
        b = base.upper()
        if b not in ALPHABET:
            raise ValueError(f"base must be one of {ALPHABET}, got {base!r}")
        return ALPHABET.index(b)
    b = int(base)
    if not 0 <= b < 4:
        raise ValueError(f"base index must be 0..3, got {base}")
    return b


def observed_base(x: np.ndarray, pos: int) -> int:
    """Index (0..3) of the base observed at ``pos`` of a one-hot ``(L, 4)`` sequence; -1 for N."""
    col = np.asarray(x)[pos]
    return int(col.argmax()) if col.sum() > 0 else -1


def mutate(x: np.ndarray, pos: int, base: int | str) -> np.ndarray:
    """Copy of ``x`` (``(L, 4)`` or ``(N, L, 4)``) with position ``pos`` set to ``base`` (index or letter)."""
    out = np.array(x, dtype=np.float32, copy=True)
    out[..., pos, :] = 0
    out[..., pos, _base_index(base)] = 1
    return out


def alternatives(x: np.ndarray, pos: int) -> np.ndarray:
    """The three bases (indices, ACGT order) different from the one observed at ``pos``.

    Raises ValueError at an N position: with no observed base there is no substitution to make, and
    picking three of four letters arbitrarily would make the score depend on that choice.
    """
    b = observed_base(x, pos)
    if b < 0:
        raise ValueError(f"position {pos} is N (no observed base); it cannot be a source base")
    return np.array([i for i in range(4) if i != b], dtype=np.int64)


def mutants(x: np.ndarray, pos: int) -> np.ndarray:
    """The three single-base mutants ``(3, L, 4)`` of a one-hot ``(L, 4)`` sequence at ``pos``.

    The mutant bases are :func:`alternatives` ``(x, pos)``, in ACGT order.
    """
    x = np.asarray(x, dtype=np.float32)
    out = np.repeat(x[None], 3, axis=0)
    out[:, pos, :] = 0
    out[np.arange(3), pos, alternatives(x, pos)] = 1
    return out


def fill_span(x: np.ndarray, start: int, end: int, mode: str = "background", gc: float = 0.46) -> np.ndarray:
    """Destroy a motif: fill positions ``[start, end)`` of ``x`` with background frequencies or zeros.

    The paper mutates a source motif by replacing it with the background base frequencies
    (A, T = (1 - gc) / 2; C, G = gc / 2), which removes the motif without introducing a new one. ``"zero"``
    (all-zero columns, what the original code did) is kept for comparison with it.

    Parameters
    ----------
    x : np.ndarray
        One-hot ``(L, 4)`` or ``(N, L, 4)``.
    start, end : int
        0-based half-open span.
    mode : {"background", "zero"}
    gc : float
        GC fraction of the background (0.46 in the paper).
    """
    if mode not in ("background", "zero"):
        raise ValueError(f"fill mode must be 'background' or 'zero', got {mode!r}")
    out = np.array(x, dtype=np.float32, copy=True)
    out[..., start:end, :] = background_frequencies(gc) if mode == "background" else 0.0
    return out


# --------------------------------------------------------------------------------------------- scoring
def _method_kwargs(method: Method, kw: dict[str, Any]) -> dict[str, Any]:
    """Drop the options ``method`` does not declare, so callers can pass one set of options to any method."""
    kw = dict(kw)
    if method.references is None:
        for k in ("references", "baseline", "n_refs", "gc"):
            kw.pop(k, None)
    if not method.steps:
        kw.pop("steps", None)
    return kw


def importance_shared(
    model: Any,
    xs: np.ndarray,
    target: int | str,
    method: str,
    seed: int,
    batch_size: int,
    **kw: Any,
) -> np.ndarray:
    """Importance of ``xs``: an original sequence (``xs[0]``) followed by its mutants, all scored alike.

    Every row gets the same seed, and shuffled references/baselines (``"shuffle"``) are drawn once from the
    original (:func:`shared_references`) and used for every row, so that ``C_X - C_X'`` measures the mutation
    only. ``**kw`` are method options (``n_refs``, ``references``/``baseline``, ``gc``, ``steps``); options the
    method does not declare in the registry are ignored.
    """
    m = METHODS[method]
    kw = _method_kwargs(m, kw)
    if m.references is not None:
        spec = kw.get(m.references, m.default_references)
        if isinstance(spec, str) and spec == "shuffle":
            kw[m.references] = shared_references(xs[0], kw.get("n_refs", 10), seed)
    seeds = np.full(len(xs), int(seed), dtype=np.int64)
    return np.asarray(importance(model, xs, target, method=method, batch_size=batch_size, seed=seeds, **kw))


def shared_references(x: np.ndarray, n_refs: int, seed: int) -> np.ndarray:
    """``(n_refs, L, 4)`` dinucleotide shuffles of the original sequence ``x``, used for it and its mutants.

    Why shared: with references drawn from each mutant separately, ``C_X - C_X'`` would also contain the
    change of references (non-zero FIS even for an additive model), and a span filled with background
    frequencies cannot be shuffled at all. These are the references ``importance(x, seed=[seed])`` draws.
    """
    x = np.asarray(x, dtype=np.float32)
    return shuffled_references(x[None], int(n_refs), sequence_rngs([int(seed)], 1))[0]


# --------------------------------------------------------------------------------------------- variants
def window_references(X: np.ndarray, settings: Any, seeds: np.ndarray) -> np.ndarray | str | None:
    """References of each reference window, shared by its alternate window(s) and every target.

    Returns ``(N, R, L, 4)`` dinucleotide shuffles (``references="shuffle"``, per-window ``seeds``) or the
    user's references (a FASTA / .npy file, the same R for every window), the reference specification itself
    for constant references (``gc``, ``zeros``, ``uniform``: the same for every window), or None when the
    method takes no references.
    """
    spec = METHODS[settings.method].reference_spec(settings)
    if spec == "shuffle":
        return dinucleotide_shuffle(X, n=settings.n_refs, seed=seeds)
    if spec is not None and spec not in REFERENCE_KINDS:  # a FASTA / .npy file of references
        refs = load_references(spec, X.shape[1])
        return np.broadcast_to(refs[None], (len(X), *refs.shape))
    return spec


def windows_importance(
    model: Any, W: np.ndarray, refs: np.ndarray | str | None, targets: Sequence[int], settings: Any,
    positions: np.ndarray | None = None, progress: Progress | None = None,
) -> np.ndarray:
    """Importance of K windows per variant that share their references: ``W`` (K, N, L, 4) -> (T, K, N, L, 4).

    ``W[0]`` are the reference windows, ``W[1:]`` their mutants (alternate alleles); ``refs`` are from
    :func:`window_references`. All K windows of a variant use the same references, so that
    ``C_X - C_X'`` measures the mutation and not a change of references (the paper's FIS). ``positions``
    (N, L) bool marks the bases whose importance is read (the targets); a method that can restrict its work
    to them (ISM) does, the others ignore it. ``progress`` is told the fraction done as model batches complete.
    """
    return METHODS[settings.method].windows(model, W, refs, targets, settings, positions, progress)


def fis_tracks(C: np.ndarray) -> np.ndarray:
    """Per-position FIS ``sum_b C_X - C_X'`` of (..., K, N, L, 4) importance: (..., K - 1, N, L)."""
    return (C[..., :1, :, :, :] - C[..., 1:, :, :, :]).sum(-1)


def target_mask(L: int, offsets: np.ndarray, ref_lens: np.ndarray, window: int) -> np.ndarray:
    """(N, L) bool: the target bases of each variant, within +-window of its span, the span itself excluded."""
    pos = np.arange(L)[None, :]
    a = np.asarray(offsets)[:, None]
    b = a + np.asarray(ref_lens)[:, None]  # end of the variant span (exclusive)
    return (pos >= a - window) & (pos <= b - 1 + window) & ((pos < a) | (pos >= b))


def read_positions(mask: np.ndarray, variants: Sequence) -> np.ndarray:
    """Where importance is read, in either window: the target mask widened to the right by each variant's
    length change (an indel's alternate window holds the right-hand targets that many bases further)."""
    out = mask.copy()
    for i, v in enumerate(variants):
        d = abs(len(v.alt) - len(v.ref))
        for k in range(1, d + 1):
            out[i, k:] |= mask[i, :-k]
    return out


def max_abs_summary(fis: np.ndarray, X: np.ndarray, mask: np.ndarray, offsets: np.ndarray) -> dict[str, np.ndarray]:
    """maxAbsFIS of each variant over its target bases, and where it is reached.

    Returns arrays (N,): ``max_abs_fis``, ``max_fis_offset`` (target - variant, bp), ``max_fis_base`` (the
    observed base there, ``N`` for none) and ``fis_at_max`` (signed); NaN / -1 / '' where no target exists.
    The first position wins ties, scanning left to right.
    """
    a = np.where(mask, np.abs(fis), -np.inf)
    k = a.argmax(1)
    rows = np.arange(len(fis))
    has = mask.any(1)
    val = fis[rows, k].astype(np.float64)
    col = X[rows, k]
    base = np.where(col.sum(-1) > 0, np.array(list(ALPHABET))[col.argmax(-1)], "N")
    return {
        "max_abs_fis": np.where(has, np.abs(val), np.nan),
        "max_fis_offset": np.where(has, k - np.asarray(offsets), -1),
        "max_fis_base": np.where(has, base, ""),
        "fis_at_max": np.where(has, val, np.nan),
        "has": has,
    }


def _check_one(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != 4:
        raise ValueError(f"expected one one-hot sequence of shape (L, 4), got {x.shape}")
    return x


def per_base_alternatives(x: np.ndarray, sources: Sequence[int]) -> np.ndarray:
    """``(S, 3)`` mutant bases used by :func:`dfim_per_base` for each source (-1 rows at N positions)."""
    x = _check_one(x)
    out = np.full((len(sources), 3), -1, dtype=np.int64)
    for i, s in enumerate(sources):
        if observed_base(x, s) >= 0:
            out[i] = alternatives(x, s)
    return out


def dfim_per_base(model: Any, x: np.ndarray, target: int | str, sources: Sequence[int], method: str = "deeplift", *,
                  mask_source: bool = True, batch_size: int = 64, seed: int = 0, **kw: Any) -> np.ndarray:
    """Per-base DFIM: FIS at every target base for each of the three substitutions at each source base.

    The original sequence and all ``3 S`` mutants are scored together (one :func:`importance` call,
    batched by ``batch_size``) with one seed, so the original and its mutants share their references.

    Parameters
    ----------
    model : SequenceModel
        From :func:`kipoi_dfim.load_model`.
    x : np.ndarray
        One one-hot sequence ``(L, 4)``.
    target : int or str
        Model output scored.
    sources : sequence of int
        0-based source positions. N positions give NaN rows (nothing to substitute), with a warning.
    method : str
        Importance method (see :func:`kipoi_dfim.attribution.importance`).
    mask_source : bool
        Set the source position itself to NaN: there the substitution changes which base is observed, so
        the difference is the base's own importance, not an interaction (the original code zeroed it).
    batch_size, seed, **kw
        Passed to :func:`importance` (e.g. ``n_refs`` for DeepLIFT).

    Returns
    -------
    np.ndarray
        ``(S, 3, L, 4)`` float32: ``dfim[i, k, t, b] = C_X[t, b] - C_X'[t, b]`` where ``X'`` has base
        ``per_base_alternatives(x, sources)[i, k]`` at ``sources[i]``.
    """
    x = _check_one(x)
    sources = [int(s) for s in sources]
    L = x.shape[0]
    for s in sources:
        if not 0 <= s < L:
            raise ValueError(f"source position {s} outside the sequence (length {L})")
    ok = [i for i, s in enumerate(sources) if observed_base(x, s) >= 0]
    if len(ok) < len(sources):
        log.warning("%d source position(s) are N and get NaN maps", len(sources) - len(ok))
    out = np.full((len(sources), 3, L, 4), np.nan, dtype=np.float32)
    if not ok:
        return out
    stack = np.concatenate([x[None]] + [mutants(x, sources[i]) for i in ok])
    imp = importance_shared(model, stack, target, method, seed, batch_size, **kw)
    d = fis(imp[0][None], imp[1:]).reshape(len(ok), 3, L, 4)
    out[ok] = d
    if mask_source:
        for i, s in enumerate(sources):
            out[i, :, s, :] = np.nan
    return out


def max_fis(dfim: np.ndarray, absolute: bool = False, axis: int = 1) -> np.ndarray:
    """maxFIS: reduce the mutant axis of a per-base DFIM.

    Parameters
    ----------
    dfim : np.ndarray
        E.g. ``(S, 3, L, 4)`` from :func:`dfim_per_base`, or its per-position sum ``(S, 3, L)``.
    absolute : bool
        False (default): the signed maximum over the mutants, ``max_g FIS`` as in the paper.
        True: ``max_g |FIS|`` (maxAbsFIS), the summary used for variants.
    axis : int
        The mutant axis.

    Returns
    -------
    np.ndarray
        ``dfim`` without ``axis``; NaN where every mutant is NaN.
    """
    d = np.asarray(dfim, dtype=np.float64)
    if absolute:
        d = np.abs(d)
    with np.errstate(invalid="ignore"):
        allnan = np.all(np.isnan(d), axis=axis)
        out = np.max(np.where(np.isnan(d), -np.inf, d), axis=axis)
    out[allnan] = np.nan
    return out


# --------------------------------------------------------------------------------------------- motifs
def _spans(spans: Sequence[Span], L: int) -> list[Span]:
    out = []
    for s in spans:
        a, b = int(s[0]), int(s[1])
        if not 0 <= a < b <= L:
            raise ValueError(f"span {a}-{b} is empty or outside the sequence (length {L})")
        out.append((a, b))
    return out


def span_sum(values: np.ndarray, span: Span) -> np.ndarray:
    """Sum over positions ``[start, end)`` and bases of ``(..., L, 4)`` values: a motif's total (eq. 2)."""
    a, b = span
    return np.asarray(values)[..., a:b, :].sum(axis=(-2, -1))


def _motif_importance(
    model: Any,
    x: np.ndarray,
    target: int | str,
    source_spans: Sequence[Span],
    fill: str,
    gc: float,
    method: str,
    seed: int,
    batch_size: int,
    **kw: Any,
) -> np.ndarray:
    """Importance ``(1 + S, L, 4)`` of ``x`` and of ``x`` with each source span filled."""
    stack = np.stack([x] + [fill_span(x, a, b, fill, gc) for a, b in source_spans])
    return importance_shared(model, stack, target, method, seed, batch_size, gc=gc, **kw)


def motif_fis(model: Any, x: np.ndarray, target: int | str, source_span: Span, target_spans: Sequence[Span],
              fill: str = "background", *, gc: float = 0.46, method: str = "deeplift", batch_size: int = 64,
              seed: int = 0, **kw: Any) -> np.ndarray:
    """Motif-level FIS (eq. 2-3): mutate the source motif, sum the importance change over each target span.

    Parameters
    ----------
    x : np.ndarray
        One one-hot sequence ``(L, 4)``.
    source_span : (start, end)
        The motif destroyed by :func:`fill_span` with ``fill`` / ``gc``.
    target_spans : list of (start, end)
        Each target's FIS is ``sum_{t in span} sum_b C_X[t, b] - C_X'[t, b]``.

    Returns
    -------
    np.ndarray
        ``(T,)`` float64 FIS of each target span.
    """
    x = _check_one(x)
    (src,) = _spans([source_span], x.shape[0])
    tgts = _spans(target_spans, x.shape[0])
    imp = _motif_importance(model, x, target, [src], fill, gc, method, seed, batch_size, **kw)
    d = fis(imp[0], imp[1]).astype(np.float64)
    return np.array([span_sum(d, t) for t in tgts])


def element_map(model: Any, x: np.ndarray, target: int | str, elements: Sequence[Span], fill: str = "background", *,
                gc: float = 0.46, method: str = "deeplift", batch_size: int = 64, seed: int = 0,
                **kw: Any) -> np.ndarray:
    """Per-element DFIM: ``(E, E)`` map, row = mutated source element, column = target element.

    Every element is mutated once (``E + 1`` importance computations in one batched call) and every
    element is a target. The diagonal (an element mutated against itself) is NaN, not an interaction.
    """
    x = _check_one(x)
    els = _spans(elements, x.shape[0])
    imp = _motif_importance(model, x, target, els, fill, gc, method, seed, batch_size, **kw)
    return _element_map_from_importance(imp, els)


def _element_map_from_importance(imp: np.ndarray, els: Sequence[Span]) -> np.ndarray:
    d = fis(imp[0][None], imp[1:]).astype(np.float64)  # (E, L, 4)
    m = np.stack([[span_sum(d[i], t) for t in els] for i in range(len(els))]) if els else np.zeros((0, 0))
    np.fill_diagonal(m, np.nan)
    return m


def element_by_base_map(model: Any, x: np.ndarray, target: int | str, elements: Sequence[Span],
                        fill: str = "background", *, gc: float = 0.46, method: str = "deeplift", batch_size: int = 64,
                        seed: int = 0, per_base: bool = False, **kw: Any) -> np.ndarray:
    """Element-by-base DFIM: the FIS at every target position when each element is mutated.

    Returns ``(E, L)`` per-position FIS (summed over bases), or ``(E, L, 4)`` with ``per_base=True``;
    positions inside the mutated element itself are NaN.
    """
    x = _check_one(x)
    els = _spans(elements, x.shape[0])
    imp = _motif_importance(model, x, target, els, fill, gc, method, seed, batch_size, **kw)
    d = fis(imp[0][None], imp[1:]).astype(np.float64)
    if not per_base:
        d = d.sum(-1)
    for i, (a, b) in enumerate(els):
        d[i, a:b] = np.nan
    return d


# --------------------------------------------------------------------------------------------- aggregation
def fis_table(
    fis_map: np.ndarray,
    sources: Sequence[Any],
    targets: Sequence[Any],
    **constants: Any,
) -> pd.DataFrame:
    """Long form of a 2-D map: one row per (source, target) with column ``fis`` (NaN entries dropped).

    ``sources`` / ``targets`` label the rows / columns (positions, element names, ...); ``constants``
    become extra columns (e.g. ``seq="chr1:100-200"``, ``task="DNase"``), so that tables of many
    sequences can be concatenated and passed to :func:`aggregate_fis`.
    """
    import pandas as pd  # lazy: pandas costs ~33 MB of memory; score-variants' streaming path never needs it

    m = np.asarray(fis_map, dtype=np.float64)
    if m.shape != (len(sources), len(targets)):
        raise ValueError(f"map shape {m.shape} does not match {len(sources)} sources x {len(targets)} targets")
    i, j = np.nonzero(~np.isnan(m))
    df = pd.DataFrame({"source": np.asarray(sources, dtype=object)[i], "target": np.asarray(targets, dtype=object)[j],
                       "fis": m[i, j]})
    for k, v in constants.items():
        df[k] = v
    return df


def aggregate_fis(table: pd.DataFrame, by: Sequence[str] = ("source", "target"), value: str = "fis") -> pd.DataFrame:
    """Aggregate FIS across sequences (section 2.2): group rows with the same identity, average.

    Rows are grouped by the columns ``by`` -- e.g. the source and target element names (motif identity),
    or the source and target base positions for aligned sequences (Cbf1 library) -- and each group gets
    ``n``, ``mean_fis`` (signed: consistent cooperation/competition) and ``mean_abs_fis`` (strength
    regardless of sign, robust to interactions whose sign varies between sequences).
    """
    by = list(by)
    g = table.assign(_abs=table[value].abs()).groupby(by, sort=True, dropna=False)
    out = g.agg(n=(value, "size"), mean_fis=(value, "mean"), mean_abs_fis=("_abs", "mean")).reset_index()
    return out


def marginalise_offsets(
    table: pd.DataFrame,
    source_pos: str = "source",
    target_pos: str = "target",
    value: str = "fis",
    by: Sequence[str] = (),
) -> pd.DataFrame:
    """Marginalise a per-base DFIM over absolute positions: aggregate by relative offset target - source.

    This is the aggregate of the paper's variant analysis (Fig. 8): maps centred on different sources
    (variants) are not aligned in absolute coordinates, so the FIS of every (source, target) pair is
    pooled by the distance ``target - source`` and averaged (``n``, ``mean_fis``, ``mean_abs_fis``),
    optionally within groups ``by`` (e.g. a task or a source-base identity).
    """
    t = table.assign(offset=table[target_pos].astype(int) - table[source_pos].astype(int))
    return aggregate_fis(t, by=[*by, "offset"], value=value)


def per_base_table(dfim: np.ndarray, x: np.ndarray, sources: Sequence[int], **constants: Any) -> pd.DataFrame:
    """Long form of a per-base DFIM ``(S, 3, L, 4)``: one row per (source, mutant, target position).

    Columns: ``source``, ``source_base``, ``mut_base``, ``target``, ``target_base``, ``fis`` (summed over
    the bases of the target position, i.e. the change at the observed target base) plus ``constants``;
    the base identities let :func:`aggregate_fis` group by (source base, target base) as well as by position.
    """
    import pandas as pd  # lazy: pandas costs ~33 MB of memory; score-variants' streaming path never needs it

    x = _check_one(x)
    alts = per_base_alternatives(x, sources)
    obs = np.array([observed_base(x, t) for t in range(x.shape[0])])
    letters = np.array(list(ALPHABET + "N"))
    d = np.asarray(dfim, dtype=np.float64).sum(-1)  # (S, 3, L), NaN kept by sum
    rows = []
    for i, s in enumerate(sources):
        for k in range(3):
            if alts[i, k] < 0:
                continue
            ok = ~np.isnan(d[i, k])
            t = np.nonzero(ok)[0]
            rows.append(pd.DataFrame({
                "source": s, "source_base": letters[obs[s]], "mut_base": ALPHABET[alts[i, k]],
                "target": t, "target_base": letters[obs[t]], "fis": d[i, k, t],
            }))
    cols = ["source", "source_base", "mut_base", "target", "target_base", "fis"]
    df = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols)
    for k, v in constants.items():
        df[k] = v
    return df
