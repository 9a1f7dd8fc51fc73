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

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kipoi_dfim.backend._deeplift_common import hypothetical_scores
from kipoi_dfim.errors import InputError
from kipoi_dfim.progress import Progress, report, share
from kipoi_dfim.references import load_references
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
        Optional fast path ``shared(model, W (K, N, L, 4), refs, targets, settings, positions=None,
        progress=None) -> (T, K, N, L, 4)`` actual importance of K windows per variant that share their
        references (DFIM's reference and alternate windows) for several targets at once (it returns None where
        it does not apply); None: :func:`kipoi_dfim.fis.windows_importance` loops over targets with ``fn``.
    positions : bool
        ``fn`` takes ``positions`` (N, L) bool and computes importance only there (ISM: the target bases).
    progress : bool
        ``fn`` takes ``progress`` (a :data:`kipoi_dfim.progress.Progress` hook) and reports the fraction of
        its work done as its model batches complete; otherwise the work is reported when ``fn`` returns.
    """

    name: str
    fn: ImportanceFn
    references: str | None = None
    default_references: str | None = None
    steps: bool = False
    shared: Callable[..., np.ndarray] | None = None
    positions: bool = False
    progress: bool = False

    def with_shared(self, shared: Callable[..., np.ndarray]) -> Method:
        """This entry with a fast path for windows that share references (see ``shared``)."""
        return dataclasses.replace(self, shared=shared)

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

    def windows(self, model, W: np.ndarray, refs, targets: Sequence, settings, positions=None,
                progress: Progress | None = None) -> np.ndarray:
        """Actual importance (T, K, N, L, 4) of K windows per variant ``W`` (K, N, L, 4) sharing ``refs``.

        Uses the method's fast path (``shared``) when it has one and it applies, else one :func:`importance`
        call per target over all K x N windows (the references repeated for each window). ``progress``: a hook
        told the fraction of the work done as model batches complete (:mod:`kipoi_dfim.progress`).
        """
        K, N, L, _ = W.shape
        pos = positions if self.positions else None
        if self.shared is not None:  # a fast path may use the read positions even if fn does not take them
            out = self.shared(model, W, refs, targets, settings, positions=positions, progress=progress)
            if out is not None:
                return out
        flat = W.reshape(K * N, L, 4)
        r = np.concatenate([refs] * K) if isinstance(refs, np.ndarray) else None
        kw = self.options(settings, r)
        if pos is not None:
            kw["positions"] = np.concatenate([pos] * K)
        out = []
        for t in targets:
            part = share(progress, 1 / len(targets))
            if self.progress:
                kw["progress"] = part
            out.append(importance(model, flat, t, self.name, batch_size=settings.batch_size, **kw))
            if not self.progress:
                report(part, 1, 1)
        return np.stack(out).reshape(len(targets), K, N, L, 4) if out else np.zeros((0, K, N, L, 4), np.float32)

    def window_cost(self, settings) -> float:
        """The expected model work of one window's importance, in forward passes of one sequence (a backward
        pass counted as two): what the progress of a run is weighted by, not a measurement."""
        if self.positions:  # ISM: three mutants of each target base
            return 1.0 + 3.0 * (2 * settings.window + 1)
        R = 1
        if self.references is not None:
            R = settings.n_refs if self.reference_spec(settings) == "shuffle" else 1
        return 3.0 * R * (settings.steps if self.steps else 1)

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
    positions: bool = False,
    progress: bool = False,
) -> Callable[[ImportanceFn], ImportanceFn]:
    """Decorator adding an importance function to :data:`METHODS` under ``name``.

    The function must accept ``(model, x, target, *, hypothetical, batch_size, seed, **kw)`` and return a
    float32 array shaped like ``x``. ``references`` names its keyword for references/baselines (with
    ``default_references``) and ``steps`` says whether it takes a number of steps; the CLI, the settings
    and the FIS code read these declarations instead of knowing method names. ``progress``: the function takes a
    ``progress`` hook (:mod:`kipoi_dfim.progress`) and reports on it as its model batches complete.
    """

    def deco(fn: ImportanceFn) -> ImportanceFn:
        METHODS[name] = Method(name, fn, references, default_references, steps, positions=positions,
                               progress=progress)
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
        Method options (``n_refs``, ``references``, ``baseline``, ``steps``, ``gc``, ``center``; ``progress``
        for a method declaring it).

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


def _gradient(model, x: np.ndarray, target, batch_size: int, progress: Progress | None = None) -> np.ndarray:
    """model.gradient over ``x`` in calls of at most ``batch_size`` inputs (each reported to ``progress``)."""
    if len(x) == 0:
        return np.zeros_like(x, dtype=np.float32)
    out = []
    for a, b in _chunks(len(x), batch_size):
        out.append(model.gradient(x[a:b], target))
        report(progress, b - a, len(x))
    return np.concatenate(out)


def predict_fixed(model, x: np.ndarray, batch_size: int, output: str | None = None,
                  progress: Progress | None = None) -> np.ndarray:
    """model.predict over ``x`` in calls of exactly ``batch_size`` inputs (the last one padded with zeros).

    Why: CPU kernels (oneDNN, Eigen) pick their blocking from the batch shape, so the same sequence can come
    back with a different last digit in a call of 3 rows than in one of 64. With every call the same shape, a
    variant's prediction does not depend on how many variants share its chunk (``--chunk-size``).
    ``progress`` is told each call's share of the work.
    """
    if len(x) == 0:
        return np.zeros((0, len(model.targets)), dtype=np.float32)
    out = []
    for a, b in _chunks(len(x), batch_size):
        xb = x[a:b]
        if b - a < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - (b - a),) + x.shape[1:], x.dtype)])
        out.append(np.asarray(model.predict(xb, output=output) if output else model.predict(xb))[: b - a])
        report(progress, b - a, len(x))
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
        if isinstance(spec, str | os.PathLike) and str(spec) not in ("shuffle", "zeros", "uniform", "gc"):
            spec = load_references(spec, L)  # a FASTA / .npy file of references
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


@register("grad_input", progress=True)
def grad_input(model, x: np.ndarray, target, *, hypothetical: bool = False, batch_size: int = 64, seed: SeedArg = 0,
               center: bool = False, progress: Progress | None = None) -> np.ndarray:
    """Gradient x input.

    Hypothetical scores are the gradient itself (the contribution base b would have if observed), so
    ``actual == hypothetical * x``. With ``center=True`` the gradient is first mean-centred across the four
    bases at each position (removes the component that leaves the one-hot simplex; Majdandzic et al. 2023);
    the default keeps the plain gradient, the paper's definition. ``progress``: see :mod:`kipoi_dfim.progress`.
    """
    g = _gradient(model, x, target, batch_size, progress)
    if center:
        g = g - g.mean(-1, keepdims=True)
    return _project(g, x, hypothetical)


@register("deeplift", references="references", default_references="shuffle", progress=True)
def deeplift(model, x: np.ndarray, target, *, hypothetical: bool = False, batch_size: int = 64, seed: SeedArg = 0,
             references: str | np.ndarray = "shuffle", n_refs: int = 10, gc: float = 0.46,
             progress: Progress | None = None) -> np.ndarray:
    """DeepLIFT / DeepSHAP (rescale rule) through ``model.deeplift``, averaged over references.

    ``references``: ``"shuffle"`` (``n_refs`` uniform dinucleotide shuffles of each sequence, seeded per
    sequence), ``"gc"`` (the expected one-hot of a GC-``gc`` background), ``"zeros"``, ``"uniform"``, or an
    array (N, R, L, 4) / (R, L, 4). Hypothetical scores are DeepSHAP's for genomics,
    ``m[b] - sum_c m[c] r[c]`` averaged over references; actual = hypothetical * x (tangermeme's convention).
    ``batch_size`` counts (sequence, reference) pairs. ``progress``: see :mod:`kipoi_dfim.progress`.
    """
    refs = _References(references, x, seed, n_refs, gc, "references")
    per_chunk = max(1, batch_size // refs.R)
    out = []
    for a, b in _chunks(len(x), per_chunk):
        h = model.deeplift(x[a:b], refs.get(a, b), target, hypothetical=True)
        out.append(_project(np.asarray(h), x[a:b], hypothetical))
        report(progress, b - a, len(x))
    return np.concatenate(out) if out else np.zeros_like(x)


@register("integrated_gradients", references="baseline", default_references="zeros", steps=True, progress=True)
def integrated_gradients(model, x: np.ndarray, target, *, hypothetical: bool = False, batch_size: int = 64,
                         seed: SeedArg = 0, baseline: str | np.ndarray = "zeros", steps: int = 50, n_refs: int = 10,
                         gc: float = 0.46, progress: Progress | None = None) -> np.ndarray:
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
    ``progress``: see :mod:`kipoi_dfim.progress`.
    """
    steps = int(steps)
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    refs = _References(baseline, x, seed, n_refs, gc, "baseline")
    if len(x) == 0:
        return np.zeros_like(x)
    base = refs.get(0, len(x))
    hyp = hypothetical_scores(_path_gradients(model, x, base, [target], steps, batch_size, progress)[0], base)
    return _project(hyp, x, hypothetical)


def _path_gradients(model, x: np.ndarray, base: np.ndarray, targets: Sequence, steps: int,
                    batch_size: int, progress: Progress | None = None) -> np.ndarray:
    """Path-averaged gradients of integrated gradients, (T, N, R, L, 4), for x (N, L, 4), baselines base (N, R,
    L, 4) (or (N, 1, L, 4) broadcast) and several targets.

    The N x R x steps path points of all sequences form one stream cut into model calls of ``batch_size``
    points (each call's forward pass shared by the targets when the model has ``gradients``), so calls are
    full whatever N, R and steps are; points are built call by call, never all at once. Gradients are summed
    per (sequence, baseline) in float64, so the result does not depend on where the calls cut the stream.
    """
    N, R, L, _ = base.shape
    alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)
    gsum = np.zeros((len(targets), N * R, L, 4), np.float64)
    for a, b in _chunks(N * R * steps, batch_size):
        idx = np.arange(a, b)
        seg = idx // steps  # (sequence, baseline) of each point
        i, r = seg // R, seg % R
        bb = base[i, r]
        pts = bb + alphas[idx % steps, None, None] * (x[i] - bb)
        if hasattr(model, "gradients"):
            g = model.gradients(pts, list(targets))
        else:
            g = np.stack([model.gradient(pts, t) for t in targets])
        starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
        gsum[:, seg[starts]] += np.add.reduceat(g.astype(np.float64), starts, axis=1)
        report(progress, b - a, N * R * steps)
    return (gsum / steps).astype(np.float32).reshape(len(targets), N, R, L, 4)


def _ism_outputs(model, x: np.ndarray, cols: Sequence[int], batch_size: int, positions: np.ndarray | None,
                 progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scored outputs ``cols`` of every single-base mutant: F (T, N, L, 4) (f(x) at observed bases) and f0 (T, N).

    Only positions where ``positions`` (N, L) is True are mutated (all when None); mutants of all sequences
    and positions are batched together, ``batch_size`` at a time, and every target reads the same calls.
    ``progress`` is told each call's share of the predictions.
    """
    N, L, _ = x.shape
    cols = list(cols)
    f0 = np.zeros((len(cols), 0))
    if N:
        f0 = np.concatenate([model.predict(x[a:b])[:, cols] for a, b in _chunks(N, batch_size)]).T
    observed = x.sum(-1) > 0
    obs_base = x.argmax(-1)
    todo = ~(x.astype(bool))
    if positions is not None:
        todo &= np.asarray(positions, bool)[..., None]
    i_idx, t_idx, b_idx = np.nonzero(todo)  # every (i, t, b) with b not the observed base
    F = np.zeros((len(cols), N, L, 4), dtype=np.float64)
    ii, tt = np.nonzero(observed)
    F[:, ii, tt, obs_base[ii, tt]] = f0[:, ii]
    report(progress, N, N + len(i_idx))
    for a, b in _chunks(len(i_idx), batch_size):
        xm = x[i_idx[a:b]].copy()
        rows = np.arange(b - a)
        xm[rows, t_idx[a:b]] = 0.0
        xm[rows, t_idx[a:b], b_idx[a:b]] = 1.0
        F[:, i_idx[a:b], t_idx[a:b], b_idx[a:b]] = model.predict(xm)[:, cols].T
        report(progress, b - a, N + len(i_idx))
    return F, f0


def _ism_scores(F: np.ndarray, f0: np.ndarray, x: np.ndarray, hypothetical: bool,
                positions: np.ndarray | None) -> np.ndarray:
    """ISM importance of one target from its mutant outputs F (N, L, 4) and f0 (N,)."""
    N, L, _ = x.shape
    observed = x.sum(-1) > 0
    done = np.ones((N, L), bool) if positions is None else np.asarray(positions, bool)
    if hypothetical:
        return np.where(done[..., None], F - F.mean(-1, keepdims=True), 0.0).astype(np.float32)
    obs_base = x.argmax(-1)
    mut_mean = (F.sum(-1) - f0[:, None]) / 3.0
    keep = observed & done
    c = np.where(keep, f0[:, None] - mut_mean, 0.0)
    out = np.zeros((N, L, 4), dtype=np.float32)
    out[keep, obs_base[keep]] = c[keep]
    return out


@register("ism", positions=True, progress=True)
def ism(model, x: np.ndarray, target, *, hypothetical: bool = False, batch_size: int = 64, seed: SeedArg = 0,
        positions: np.ndarray | None = None, progress: Progress | None = None) -> np.ndarray:
    """In-silico mutagenesis importance (no gradients; works for any model).

    Actual: ``C[t, x_t] = f(x) - mean over the 3 mutants of f(x with t mutated)`` (0 elsewhere and at N).
    Hypothetical: ``H[t, b] = f(x with b at t) - mean over the 4 bases of f(x with that base at t)``. At the
    observed base ``H[t, x_t] = 3/4 * C[t, x_t]``: unlike the gradient methods, actual != hypothetical * x,
    because the hypothetical score is centred over four bases and the actual one over the three mutants.
    At an N position all four bases are mutants. ``f`` is the scored output (logit by default). Mutants
    are built ``batch_size`` at a time, never all at once. ``positions`` (N, L) bool: mutate only these
    positions (importance 0 elsewhere) -- DFIM reads importance only at the +-N target bases, so a variant
    costs 3 x (2N + 1) forward passes per window instead of 3 x L. ``progress``: see :mod:`kipoi_dfim.progress`.
    """
    _codes(x)  # mutagenesis needs one-hot input
    F, f0 = _ism_outputs(model, x, [model.target_index(target)], batch_size, positions, progress)
    return _ism_scores(F[0], f0[0], x, hypothetical, positions)


def ism_shared(model, W: np.ndarray, refs, targets: Sequence[int], settings, positions=None,
               progress: Progress | None = None) -> np.ndarray:
    """ISM of K windows per variant for several targets at once: the mutants are predicted once for all."""
    K, N, L, _ = W.shape
    flat = W.reshape(K * N, L, 4)
    _codes(flat)
    pos = None if positions is None else np.concatenate([positions] * K)
    F, f0 = _ism_outputs(model, flat, [model.target_index(t) for t in targets], settings.batch_size, pos, progress)
    out = [_ism_scores(F[j], f0[j], flat, False, pos) for j in range(len(targets))]
    return np.stack(out).reshape(len(targets), K, N, L, 4)


METHODS["ism"] = METHODS["ism"].with_shared(ism_shared)


def deeplift_shared(model, W: np.ndarray, refs: np.ndarray, targets: Sequence, settings, positions=None,
                    progress: Progress | None = None) -> np.ndarray | None:
    """DeepLIFT of K windows per variant sharing their references, all targets at once, through the backend's
    ``deeplift_shared`` (the references' forward pass runs once per variant). None when the backend has none.
    ``progress`` is told each model call's share of the variants. ``positions`` (N, L) bool: where importance
    is read; the backend may then leave it 0 further than the maps file's flank from them (:func:`read_span`).
    Each variant's span is its own (variants of a model call with different spans go in separate calls),
    so a variant's numbers do not depend on which variants share its chunk.
    """
    if not hasattr(model, "deeplift_shared") or not isinstance(refs, np.ndarray):
        return None
    K, N, L, _ = W.shape
    x = np.ascontiguousarray(np.moveaxis(W, 0, 1))  # (N, K, L, 4)
    per_chunk = max(1, settings.batch_size // (K * refs.shape[1]))
    out = np.zeros((len(targets), K, N, L, 4), np.float32)
    spans = [None] * N if positions is None else [read_span(positions[i: i + 1], settings.window) for i in range(N)]
    for a, b in _chunks(N, per_chunk):
        for span in dict.fromkeys(spans[a:b]):
            idx = np.array([i for i in range(a, b) if spans[i] == span])
            h = np.asarray(model.deeplift_shared(x[idx], refs[idx], list(targets), span=span), np.float32)
            out[:, :, idx] = np.moveaxis(h * x[idx, :, None], (0, 1, 2), (2, 1, 0))
        report(progress, b - a, N)
    return out


METHODS["deeplift"] = METHODS["deeplift"].with_shared(deeplift_shared)


def read_span(positions: np.ndarray, window: int) -> tuple[int, int] | None:
    """The positions [a, b) a chunk's importance must cover: every read position (``positions`` (n, L) bool,
    the +-``window`` target bases), widened on both sides to the maps file's tracks (at least 50 bp from the
    variant: :func:`kipoi_dfim.scoring.maps_flank`), within the sequence. None when nothing is read.
    """
    cols = np.flatnonzero(np.asarray(positions, bool).any(0))
    if not len(cols):
        return None
    length = positions.shape[1]
    extra = max(0, maps_flank(window, length) - window)
    return max(0, int(cols[0]) - extra), min(length, int(cols[-1]) + 1 + extra)


def maps_flank(window: int, seq_len: int) -> int:
    """Half-width of the tracks stored in the maps file: at least 50 bp (for figures), at most the window."""
    return min(max(window, 50), (seq_len - 1) // 2)


def _all_targets_gradients(model, x: np.ndarray, targets: Sequence, batch_size: int,
                           progress: Progress | None = None) -> np.ndarray:
    """(T, N, L, 4) gradients of every target, calls of ``batch_size`` inputs, the forward shared by targets
    (each call reported to ``progress``)."""
    if len(x) == 0:
        return np.zeros((len(targets), *x.shape), np.float32)
    out = []
    for a, b in _chunks(len(x), batch_size):
        out.append(model.gradients(x[a:b], list(targets)))
        report(progress, b - a, len(x))
    return np.concatenate(out, 1)


def grad_input_shared(model, W: np.ndarray, refs, targets: Sequence, settings, positions=None,
                      progress: Progress | None = None) -> np.ndarray | None:
    """Gradient x input of the K x N windows for every target: all windows in full batches, one forward pass
    per batch for all targets (``model.gradients``). None when the model has no ``gradients``."""
    if not hasattr(model, "gradients") or not len(targets):
        return None
    K, N, L, _ = W.shape
    flat = W.reshape(K * N, L, 4)
    g = _all_targets_gradients(model, flat, targets, settings.batch_size, progress)
    return (g * flat).astype(np.float32).reshape(len(targets), K, N, L, 4)


METHODS["grad_input"] = METHODS["grad_input"].with_shared(grad_input_shared)


def integrated_gradients_shared(model, W: np.ndarray, refs, targets: Sequence, settings,
                                positions=None, progress: Progress | None = None) -> np.ndarray | None:
    """Integrated gradients of the K x N windows for every target in one stream of path points (all windows,
    all baselines, all steps; :func:`_path_gradients`), the baselines of a variant shared by its K windows.
    None when the model has no ``gradients``."""
    if not hasattr(model, "gradients") or not len(targets):
        return None
    K, N, L, _ = W.shape
    flat = W.reshape(K * N, L, 4)
    spec = np.concatenate([refs] * K) if isinstance(refs, np.ndarray) else (refs or settings.references or "zeros")
    base = _References(spec, flat, 0, settings.n_refs, settings.gc, "baseline").get(0, K * N)
    gbar = _path_gradients(model, flat, base, targets, settings.steps, settings.batch_size, progress)
    hyp = np.stack([hypothetical_scores(gbar[j], base) for j in range(len(targets))])
    return (hyp * flat).astype(np.float32).reshape(len(targets), K, N, L, 4)


METHODS["integrated_gradients"] = METHODS["integrated_gradients"].with_shared(integrated_gradients_shared)
