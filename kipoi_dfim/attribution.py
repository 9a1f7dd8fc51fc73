"""Importance (attribution) of every observed base: one registry, one signature.

Every method is a function ``fn(model, x, target, *, hypothetical, batch_size, seed, **kw) -> (N, L, 4)``
registered in :data:`METHODS` (use :func:`register` to add your own), and :func:`importance` dispatches to it.
``model`` is a :class:`~kipoi_dfim.backend.base.SequenceModel`; this module only handles numpy arrays.

Conventions shared by all methods
---------------------------------
* Actual importance (``hypothetical=False``) is non-zero only at the observed base of each position (zero at
  N positions): the per-position contribution is put on the observed base. DFIM differences C_X - C_X' are
  then comparable position by position between a sequence and its mutant.
* Hypothetical importance (``hypothetical=True``) scores every base at every position: what the position
  would contribute if that base were observed, using the multipliers computed for x. For ``grad_input``,
  ``deeplift`` and ``integrated_gradients`` the actual importance equals ``hypothetical * x``; for ``ism``
  see :func:`ism`.
* Randomness (shuffled references/baselines): sequence ``i`` uses its own generator (see
  :func:`kipoi_dfim.shuffle.sequence_rngs`): an int ``seed`` means ``SeedSequence([seed, i])``, or pass one
  seed per sequence. So a sequence's references do not depend on the batch it is in, and with an int seed
  they equal ``dinucleotide_shuffle(x, n_refs, seed)[i]``.
* ``batch_size`` is the number of model inputs per call to the model (the adapter may split further).
  Results do not depend on it beyond floating-point noise of the framework kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kipoi_dfim.backend._deeplift_common import hypothetical_scores
from kipoi_dfim.errors import InputError
from kipoi_dfim.sequence import background_frequencies
from kipoi_dfim.shuffle import SeedLike, sequence_rngs, shuffle_codes

ImportanceFn = Callable[..., np.ndarray]

SeedArg = SeedLike | Sequence | np.ndarray


@dataclass(frozen=True)
class Method:
    """A registry entry: the importance function and what it needs, so callers never branch on a name.

    Attributes
    ----------
    name : str
    fn : callable
        ``fn(model, x, target, *, hypothetical, batch_size, seed, **kw) -> (N, L, 4)``.
    references : str or None
        The keyword of ``fn`` that takes references / a baseline (``"references"``, ``"baseline"``), or None
        when the method uses none.
    default_references : str or None
        What ``references`` is when the user gives none (``"shuffle"`` for DeepLIFT, ``"zeros"`` for IG).
    steps : bool
        Whether ``fn`` takes ``steps`` (path integrals).
    shared : callable or None
        Optional fast path ``shared(model, windows (N, K, L, 4), refs (N, R, L, 4), targets) -> (T, N, K, L, 4)``
        hypothetical scores, for windows that share their references (DFIM's reference and alternate
        windows); None: :func:`importance_shared_windows` loops over targets with ``fn``.
    """

    name: str
    fn: ImportanceFn
    references: str | None = None
    default_references: str | None = None
    steps: bool = False
    shared: Callable[..., np.ndarray] | None = None

    def __call__(self, *args, **kw) -> np.ndarray:
        return self.fn(*args, **kw)

    def options(self, settings, references=None) -> dict:
        """Keyword arguments of ``fn`` from a :class:`~kipoi_dfim.settings.Settings` (duck-typed).

        ``references`` (an array or a spec) overrides the settings' references, e.g. references drawn once
        and shared by a window and its mutants.
        """
        kw: dict = {}
        if self.references is not None:
            spec = references if references is not None else (settings.references or self.default_references)
            kw[self.references] = spec
            kw["n_refs"] = settings.n_refs
            kw["gc"] = settings.gc
        if self.steps:
            kw["steps"] = settings.steps
        return kw

    def reference_spec(self, settings) -> str | None:
        """The references this method uses under ``settings`` (None: the method takes none)."""
        if self.references is None:
            return None
        return settings.references or self.default_references


METHODS: dict[str, Method] = {}


def register(
    name: str,
    *,
    references: str | None = None,
    default_references: str | None = None,
    steps: bool = False,
) -> Callable[[ImportanceFn], ImportanceFn]:
    """Decorator adding an importance function to :data:`METHODS` under ``name``.

    The function must accept ``(model, x, target, *, hypothetical, batch_size, seed, **kw)`` and return a
    float32 array shaped like ``x``. ``references`` names its keyword for references/baselines (with
    ``default_references``) and ``steps`` says whether it takes a number of steps; the CLI, the settings
    and the FIS code read these declarations instead of knowing method names.
    """

    def deco(fn: ImportanceFn) -> ImportanceFn:
        METHODS[name] = Method(name, fn, references, default_references, steps)
        return fn

    return deco


def importance(
    model,
    x: np.ndarray,
    target: int | str | None,
    method: str | ImportanceFn = "deeplift",
    *,
    hypothetical: bool = False,
    batch_size: int = 64,
    seed: SeedArg = 0,
    **kw,
) -> np.ndarray:
    """Importance of each base of one-hot sequences ``x`` for output ``target`` of ``model``.

    Parameters
    ----------
    model : SequenceModel
        From :func:`kipoi_dfim.load_model`.
    x : ndarray (N, L, 4) or (L, 4)
        One-hot ACGT; all-zero columns are N.
    target : int, str or None
        Output index or name; None uses the target given to ``load_model(..., target=)``.
    method : str or callable
        A key of :data:`METHODS` (``"grad_input"``, ``"deeplift"``, ``"integrated_gradients"``, ``"ism"``)
        or a function with the registry signature.
    hypothetical : bool
        Score all four bases at every position instead of only the observed one.
    batch_size : int
        Model inputs per call.
    seed : int, Generator, or one seed per sequence
        For methods that sample (shuffled references); see the module docstring.
    **kw
        Method options (``n_refs``, ``references``, ``baseline``, ``steps``, ``gc``, ``center``).

    Returns
    -------
    ndarray float32, the shape of ``x``.
    """
    if callable(method):
        fn = method
    elif method in METHODS:
        fn = METHODS[method]
    else:
        raise InputError(f"unknown importance method {method!r}; available: {', '.join(sorted(METHODS))}")
    xa = np.asarray(x, dtype=np.float32)
    single = xa.ndim == 2
    xb = xa[None] if single else xa
    if xb.ndim != 3 or xb.shape[-1] != 4:
        raise InputError(f"x must be one-hot (N, L, 4) or (L, 4), got shape {xa.shape}")
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if single and isinstance(seed, list | tuple | np.ndarray) and len(seed) != 1:
        raise InputError("one sequence needs one seed")
    if target is None:
        target = getattr(model, "default_target", None)
        if target is None:
            raise InputError("no target given and the model has no default target (load_model(..., target=))")
    out = fn(model, xb, target, hypothetical=hypothetical, batch_size=int(batch_size), seed=seed, **kw)
    out = np.asarray(out, dtype=np.float32)
    return out[0] if single else out


# -- helpers ------------------------------------------------------------------------------------------------


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield i, min(n, i + size)


def _gradient(model, x: np.ndarray, target, batch_size: int) -> np.ndarray:
    """model.gradient over ``x`` in calls of at most ``batch_size`` inputs."""
    if len(x) == 0:
        return np.zeros_like(x, dtype=np.float32)
    return np.concatenate([model.gradient(x[a:b], target) for a, b in _chunks(len(x), batch_size)])


def predict_fixed(model, x: np.ndarray, batch_size: int, output: str | None = None) -> np.ndarray:
    """model.predict over ``x`` in calls of exactly ``batch_size`` inputs (the last one padded with zeros).

    Why: CPU kernels (oneDNN, Eigen) pick their blocking from the batch shape, so the same sequence can come
    back with a different last digit in a call of 3 rows than in one of 64. With every call the same shape, a
    variant's prediction does not depend on how many variants share its chunk (``--chunk-size``).
    """
    if len(x) == 0:
        return np.zeros((0, len(model.targets)), dtype=np.float32)
    out = []
    for a, b in _chunks(len(x), batch_size):
        xb = x[a:b]
        if b - a < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - (b - a),) + x.shape[1:], x.dtype)])
        out.append(np.asarray(model.predict(xb, output=output) if output else model.predict(xb))[: b - a])
    return np.concatenate(out)


def _predict(model, x: np.ndarray, col: int, batch_size: int) -> np.ndarray:
    """Scored output ``col`` of model.predict over ``x`` in fixed-shape calls of ``batch_size`` inputs."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.float32)
    return predict_fixed(model, x, batch_size)[:, col]


def _codes(x: np.ndarray) -> np.ndarray:
    """Codes 0..3, 4 for N; rejects non-one-hot input (shuffling needs one-hot)."""
    ok = np.isin(x, (0, 1)).all() and (x.sum(-1) <= 1).all()
    if not ok:
        raise InputError("x must be one-hot here (0/1, at most one base per position)")
    return np.where(x.sum(-1) > 0, x.argmax(-1), 4).astype(np.int8)


def shuffled_references(x: np.ndarray, n_refs: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """(n, L, 4) one-hot and their generators -> (n, n_refs, L, 4) uniform dinucleotide shuffles."""
    sh = shuffle_codes(_codes(x), n_refs, rngs)
    return (sh[..., None] == np.arange(4, dtype=np.int8)).astype(np.float32)


def gc_background(length: int, gc: float = 0.46) -> np.ndarray:
    """The expected one-hot of a GC-``gc`` background, (L, 4): A,T = (1-gc)/2, C,G = gc/2 at every position."""
    return np.broadcast_to(background_frequencies(gc), (length, 4)).astype(np.float32)


class _References:
    """Resolves a reference/baseline specification into per-sequence arrays (N_chunk, R, L, 4) on demand.

    Shuffles are drawn per sequence from its own generator, so a chunk's references do not depend on which
    other sequences are in the chunk.
    """

    def __init__(self, spec, x: np.ndarray, seed: SeedArg, n_refs: int, gc: float, what: str):
        self.x = x
        N, L, _ = x.shape
        self.kind = spec if isinstance(spec, str) else "array"
        if self.kind == "array":
            arr = np.asarray(spec, dtype=np.float32)
            if arr.ndim == 3:
                arr = np.broadcast_to(arr[None], (N, *arr.shape))
            if arr.ndim != 4 or arr.shape[0] != N or arr.shape[2:] != (L, 4):
                raise InputError(f"{what} array must be (N, R, L, 4) or (R, L, 4) for x {x.shape}, got {arr.shape}")
            self.arr = arr
            self.R = arr.shape[1]
        elif self.kind == "shuffle":
            if int(n_refs) < 1:
                raise InputError(f"n_refs must be >= 1, got {n_refs}")
            self.R = int(n_refs)
            self.rngs = sequence_rngs(seed, N)
        elif self.kind in ("zeros", "uniform", "gc"):
            self.R = 1
            fill = {
                "zeros": np.zeros(4, np.float32),
                "uniform": np.full(4, 0.25, np.float32),
                "gc": background_frequencies(gc),
            }[self.kind]
            self.const = np.broadcast_to(fill, (L, 4)).astype(np.float32)
        else:
            raise InputError(f"unknown {what} {spec!r}; use 'shuffle', 'gc', 'zeros', 'uniform' or an array")

    def get(self, a: int, b: int) -> np.ndarray:
        if self.kind == "array":
            return np.asarray(self.arr[a:b])
        if self.kind == "shuffle":
            return shuffled_references(self.x[a:b], self.R, self.rngs[a:b])
        return np.broadcast_to(self.const, (b - a, 1, *self.const.shape))


def _project(hyp: np.ndarray, x: np.ndarray, hypothetical: bool) -> np.ndarray:
    return (hyp if hypothetical else hyp * x).astype(np.float32)


# -- methods ------------------------------------------------------------------------------------------------


@register("grad_input")
def grad_input(
    model,
    x: np.ndarray,
    target,
    *,
    hypothetical: bool = False,
    batch_size: int = 64,
    seed: SeedArg = 0,
    center: bool = False,
) -> np.ndarray:
    """Gradient x input.

    Hypothetical scores are the gradient itself (the contribution base b would have if observed), so
    ``actual == hypothetical * x``. With ``center=True`` the gradient is first mean-centred across the four
    bases at each position (removes the component that leaves the one-hot simplex; Majdandzic et al. 2023);
    the default keeps the plain gradient, the paper's definition.
    """
    g = _gradient(model, x, target, batch_size)
    if center:
        g = g - g.mean(-1, keepdims=True)
    return _project(g, x, hypothetical)


@register("deeplift", references="references", default_references="shuffle")
def deeplift(
    model,
    x: np.ndarray,
    target,
    *,
    hypothetical: bool = False,
    batch_size: int = 64,
    seed: SeedArg = 0,
    references: str | np.ndarray = "shuffle",
    n_refs: int = 10,
    gc: float = 0.46,
) -> np.ndarray:
    """DeepLIFT / DeepSHAP (rescale rule) through ``model.deeplift``, averaged over references.

    ``references``: ``"shuffle"`` (``n_refs`` uniform dinucleotide shuffles of each sequence, seeded per
    sequence), ``"gc"`` (the expected one-hot of a GC-``gc`` background), ``"zeros"``, ``"uniform"``, or an
    array (N, R, L, 4) / (R, L, 4). Hypothetical scores are DeepSHAP's for genomics,
    ``m[b] - sum_c m[c] r[c]`` averaged over references; actual = hypothetical * x (tangermeme's convention).
    ``batch_size`` counts (sequence, reference) pairs.
    """
    refs = _References(references, x, seed, n_refs, gc, "references")
    per_chunk = max(1, batch_size // refs.R)
    out = []
    for a, b in _chunks(len(x), per_chunk):
        h = model.deeplift(x[a:b], refs.get(a, b), target, hypothetical=True)
        out.append(_project(np.asarray(h), x[a:b], hypothetical))
    return np.concatenate(out) if out else np.zeros_like(x)


@register("integrated_gradients", references="baseline", default_references="zeros", steps=True)
def integrated_gradients(
    model,
    x: np.ndarray,
    target,
    *,
    hypothetical: bool = False,
    batch_size: int = 64,
    seed: SeedArg = 0,
    baseline: str | np.ndarray = "zeros",
    steps: int = 50,
    n_refs: int = 10,
    gc: float = 0.46,
) -> np.ndarray:
    """Integrated gradients (Sundararajan et al. 2017) along the straight path from a baseline.

    The path integral uses the Riemann midpoint rule: gradients at ``alpha_k = (k + 1/2) / steps``,
    k = 0..steps-1, averaged (error O(1/steps^2) for smooth models). ``baseline``: ``"zeros"``,
    ``"uniform"`` (0.25), ``"gc"`` (GC-``gc`` background), ``"shuffle"`` (``n_refs`` dinucleotide shuffles,
    attributions averaged), or an array (N, R, L, 4) / (R, L, 4).

    Completeness: the attributions of a sequence sum to ``f(x) - mean_r f(baseline_r)`` (up to the
    quadrature error). IG of a one-hot input is non-zero at unobserved bases when the baseline is; per the
    package convention the per-position sum is put on the observed base. Hypothetical:
    ``gbar[b] - sum_c gbar[c] baseline[c]`` (the DeepSHAP form with IG's path-averaged gradient ``gbar``),
    averaged over baselines, so actual = hypothetical * x. Points (sequence x baseline x step) are batched.
    """
    steps = int(steps)
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    refs = _References(baseline, x, seed, n_refs, gc, "baseline")
    alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)
    per_seq = refs.R * steps
    per_chunk = max(1, batch_size // per_seq)
    L = x.shape[1]
    out = []
    for a, b in _chunks(len(x), per_chunk):
        xc, base = x[a:b], refs.get(a, b)  # (n, L, 4), (n, R, L, 4)
        n = len(xc)
        pts = base[:, :, None] + alphas[None, None, :, None, None] * (xc[:, None, None] - base[:, :, None])
        g = _gradient(model, pts.reshape(-1, L, 4), target, batch_size).reshape(n, refs.R, steps, L, 4)
        gbar = g.mean(2)
        hyp = hypothetical_scores(gbar, base)
        out.append(_project(hyp, xc, hypothetical))
    return np.concatenate(out) if out else np.zeros_like(x)


@register("ism")
def ism(
    model,
    x: np.ndarray,
    target,
    *,
    hypothetical: bool = False,
    batch_size: int = 64,
    seed: SeedArg = 0,
) -> np.ndarray:
    """In-silico mutagenesis importance (no gradients; works for any model).

    Actual: ``C[t, x_t] = f(x) - mean over the 3 mutants of f(x with t mutated)`` (0 elsewhere and at N).
    Hypothetical: ``H[t, b] = f(x with b at t) - mean over the 4 bases of f(x with that base at t)``. At the
    observed base ``H[t, x_t] = 3/4 * C[t, x_t]``: unlike the gradient methods, actual != hypothetical * x,
    because the hypothetical score is centred over four bases and the actual one over the three mutants.
    At an N position all four bases are mutants. ``f`` is the scored output (logit by default). Mutants
    are built ``batch_size`` at a time, never all at once.
    """
    col = model.target_index(target)
    _codes(x)  # mutagenesis needs one-hot input
    N, L, _ = x.shape
    f0 = _predict(model, x, col, batch_size)  # (N,)
    observed = x.sum(-1) > 0
    obs_base = x.argmax(-1)
    # every (i, t, b) with b not the observed base
    i_idx, t_idx, b_idx = np.nonzero(~(x.astype(bool)))
    F = np.zeros((N, L, 4), dtype=np.float64)
    ii, tt = np.nonzero(observed)
    F[ii, tt, obs_base[ii, tt]] = f0[ii]
    vals = np.empty(len(i_idx), dtype=np.float64)
    for a, b in _chunks(len(i_idx), batch_size):
        xm = x[i_idx[a:b]].copy()
        rows = np.arange(b - a)
        xm[rows, t_idx[a:b]] = 0.0
        xm[rows, t_idx[a:b], b_idx[a:b]] = 1.0
        vals[a:b] = model.predict(xm)[:, col]
    F[i_idx, t_idx, b_idx] = vals
    # observed entries of F hold f(x); mutant entries hold the mutant predictions
    if hypothetical:
        return (F - F.mean(-1, keepdims=True)).astype(np.float32)
    mut_mean = (F.sum(-1) - f0[:, None]) / 3.0
    c = np.where(observed, f0[:, None] - mut_mean, 0.0)
    out = np.zeros((N, L, 4), dtype=np.float32)
    out[observed, obs_base[observed]] = c[observed]
    return out
