"""Framework-free parts of the DeepLIFT engines: the rule constants, input checks, pair batching and the
summation-to-delta check.

Both engines (``deeplift_torch`` and ``deeplift_keras``) import this module so that the numbers that
define the rules (fallback thresholds, the conservation tolerance) exist once; see docs/deeplift.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np

from kipoi_dfim.errors import InputError

#: The Rescale rule falls back to the derivative at x where |x - r| is below this (absolute, both engines).
RESCALE_EPS = 1e-6

#: Summation-to-delta tolerance: |sum(m * (x - r)) - delta| <= CONSERVATION_RTOL * scale, where
#: scale = max(|f(x)|, |f(r)|, CONSERVATION_FLOOR). See docs/deeplift.md for why this scale.
CONSERVATION_RTOL = 1e-3
CONSERVATION_FLOOR = 1e-2

#: Elementwise nonlinearities with a Rescale rule, by canonical name. The same set in both engines.
ELEMENTWISE = (
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "selu",
    "sigmoid",
    "hard_sigmoid",
    "tanh",
    "softplus",
    "softsign",
    "exp",
)


def _cast(x: np.ndarray, references: np.ndarray, x_shape: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 contiguous copies of x (``x_shape``: (N, L, 4) or (N, K, L, 4)) and references (N, R, L, 4)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    references = np.ascontiguousarray(references, dtype=np.float32)
    ndim = x_shape.count(",") + 1
    if x.ndim != ndim:
        raise InputError(f"DeepLIFT: x must be {x_shape}, got shape {x.shape}")
    if references.ndim != 4 or references.shape[0] != x.shape[0] or references.shape[2:] != x.shape[-2:]:
        raise InputError(
            f"DeepLIFT: references must be (N, R, L, 4) matching x {x.shape}, got shape {references.shape}"
        )
    if int(batch_size) < 1:
        raise InputError(f"DeepLIFT: batch_size must be >= 1, got {batch_size}")
    return x, references


def check_inputs(x: np.ndarray, references: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate and cast the engine inputs.

    Parameters
    ----------
    x : np.ndarray
        One-hot sequences (N, L, 4).
    references : np.ndarray
        References (N, R, L, 4), R references per sequence.
    batch_size : int
        Pairs per forward/backward pass; must be positive.

    Returns
    -------
    x, references : np.ndarray
        float32 copies (contiguous), so both frameworks see the same numbers.

    Raises
    ------
    InputError
        On a shape mismatch, naming both shapes.
    """
    x, references = _cast(x, references, "(N, L, 4)", batch_size)
    return x, references


def pair_batches(n: int, r: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (sequence index, reference index) arrays covering all n * r pairs, batch_size at a time.

    Pairs are enumerated sequence-major, so a batch may mix sequences; results do not depend on batch_size
    because every pair is computed independently (the paired batch never mixes rows).
    """
    total = n * r
    for start in range(0, total, batch_size):
        flat = np.arange(start, min(start + batch_size, total))
        yield flat // r, flat % r


def conservation_violations(
    multipliers: np.ndarray, x: np.ndarray, references: np.ndarray, f_x: np.ndarray, f_ref: np.ndarray
) -> np.ndarray:
    """Boolean (N, R) mask of pairs that break summation-to-delta.

    A pair violates when |sum(m * (x - r)) - (f(x) - f(r))| > CONSERVATION_RTOL * max(|f(x)|, |f(r)|,
    CONSERVATION_FLOOR). The scale is the size of the outputs rather than of their difference because float32
    cancellation error grows with the outputs, not with delta; |delta| <= 2 * scale, so a rule that is off by
    a fraction of delta is still caught unless delta is tiny compared with the outputs.

    Parameters
    ----------
    multipliers : np.ndarray
        (N, R, L, 4).
    x : np.ndarray
        (N, L, 4).
    references : np.ndarray
        (N, R, L, 4).
    f_x, f_ref : np.ndarray
        (N, R) scored outputs of x and of each reference.
    """
    total = np.sum(multipliers.astype(np.float64) * (x[:, None] - references), axis=(2, 3))
    delta = f_x.astype(np.float64) - f_ref
    scale = np.maximum(np.maximum(np.abs(f_x), np.abs(f_ref)), CONSERVATION_FLOOR)
    return np.abs(total - delta) > CONSERVATION_RTOL * scale


def warn_violations(violations: np.ndarray, engine: str, what: str = "(sequence, reference) pairs") -> None:
    """Emit ONE RuntimeWarning with the count of pairs that break summation-to-delta (none if all hold)."""
    count = int(np.count_nonzero(violations))
    if count:
        warnings.warn(
            f"DeepLIFT ({engine}): summation-to-delta fails (relative tolerance {CONSERVATION_RTOL:g}) for "
            f"{count} of {violations.size} {what}; contributions of those pairs are not "
            "exact (numerical precision or an op whose rule does not conserve).",
            RuntimeWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------------------------------------
# Shared references (DFIM): K windows per variant against the same R references, T targets.
# --------------------------------------------------------------------------------------------------------


def check_shared_inputs(
    x: np.ndarray, references: np.ndarray, targets: list[int], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and cast the inputs of the shared-reference engines.

    Parameters
    ----------
    x : np.ndarray
        (N, K, L, 4): K windows per variant (e.g. the reference and the alternate window).
    references : np.ndarray
        (N, R, L, 4): references shared by the K windows of a variant.
    targets : list of int
        Output columns to explain (at least one).
    batch_size : int
        (pair, target) rows per backward pass; must be positive.
    """
    if not targets:
        raise InputError("DeepLIFT: at least one target is needed")
    return _cast(x, references, "(N, K, L, 4)", batch_size)


def variant_chunks(n: int, k: int, r: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of the variants whose windows and references share one forward pass.

    About ``batch_size`` (window, reference) pairs per chunk (at least one variant), so the forward pass sees
    ``chunk * (K + R)`` rows and the pair backward passes stay near ``batch_size`` rows per target.
    """
    per = max(1, int(batch_size) // max(1, k * r))
    for a in range(0, n, per):
        yield a, min(n, a + per)


def pair_rows(n: int, k: int, t: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window row, reference row and target position of every (variant, window, target, reference) row.

    Rows are enumerated in (variant, window, target, reference) order, so the multipliers of a chunk reshape
    to (n, K, T, R, L, 4). Window rows index the chunk's ``x.reshape(n * K, L, 4)``, reference rows its
    ``references.reshape(n * R, L, 4)``.
    """
    v, w, j, q = np.meshgrid(np.arange(n), np.arange(k), np.arange(t), np.arange(r), indexing="ij")
    return (v * k + w).ravel(), (v * r + q).ravel(), j.ravel()


def pair_blocks(n: int, k: int, t: int, r: int, batch_size: int) -> list[tuple[int, int, int, int]]:
    """(v0, v1, t0, t1) blocks of about ``batch_size`` pair rows of a chunk of n variants: whole variants
    (all their K windows, T targets and R references), or target slices of one variant when a variant alone
    has more than ``batch_size`` rows."""
    per_variant = k * t * r
    if per_variant <= batch_size:
        step = batch_size // per_variant
        return [(a, min(n, a + step), 0, t) for a in range(0, n, step)]
    step = max(1, batch_size // (k * r))
    return [(v, v + 1, a, min(t, a + step)) for v in range(n) for a in range(0, t, step)]


def shared_violations(
    multipliers: np.ndarray, x: np.ndarray, references: np.ndarray, f_x: np.ndarray, f_ref: np.ndarray
) -> np.ndarray:
    """Boolean (n, K, T, R) mask of (window, target, reference) triples that break summation-to-delta.

    The same criterion as :func:`conservation_violations`, for the shared layout.

    Parameters
    ----------
    multipliers : np.ndarray
        (n, K, T, R, L, 4).
    x : np.ndarray
        (n, K, L, 4).
    references : np.ndarray
        (n, R, L, 4).
    f_x : np.ndarray
        (n, K, T) scored outputs of the windows.
    f_ref : np.ndarray
        (n, R, T) scored outputs of the references.
    """
    diff = (x[:, :, None] - references[:, None]).astype(np.float64)  # (n, K, R, L, 4)
    return delta_violations(np.einsum("nktrlc,nkrlc->nktr", multipliers.astype(np.float64), diff), f_x, f_ref)


def delta_violations(total: np.ndarray, f_x: np.ndarray, f_ref: np.ndarray) -> np.ndarray:
    """Boolean (n, K, T, R) mask where the summed contributions ``total`` (n, K, T, R) of a (window, target,
    reference) triple miss f(window) - f(reference) (``f_x`` (n, K, T), ``f_ref`` (n, R, T)); the criterion of
    :func:`conservation_violations`, whatever layer the contributions were summed at."""
    fx = f_x.astype(np.float64)[:, :, :, None]
    fr = np.transpose(f_ref.astype(np.float64), (0, 2, 1))[:, None]
    scale = np.maximum(np.maximum(np.abs(fx), np.abs(fr)), CONSERVATION_FLOOR)
    return np.abs(total - (fx - fr)) > CONSERVATION_RTOL * scale


def hypothetical_mean(multipliers: np.ndarray, references: np.ndarray) -> np.ndarray:
    """DeepSHAP hypothetical scores averaged over the references, float32 (n, K, T, L, 4), from multipliers
    (n, K, T, R, L, 4) and references (n, R, L, 4): :func:`hypothetical_scores` in the shared layout."""
    return hypothetical_scores(multipliers, references[:, None, None], axis=3).astype(np.float32)


def pool_axis(length: int, kernel: int, stride: int, dilation: int, left: int, out: int) -> dict[str, int]:
    """One spatial axis of a pooling op, in the convention-free form the window index needs.

    Each framework resolves its own padding convention (PyTorch ``padding``/``ceil_mode``, Keras
    ``"same"``/``"valid"``, global pooling) into ``left`` (-inf elements before the input) and ``out`` (number
    of windows); the padded length is whatever the last window reaches.
    """
    span = dilation * (kernel - 1) + 1
    padded = max(length + left, (out - 1) * stride + span)
    return dict(length=length, kernel=kernel, stride=stride, dilation=dilation, left=left, out=out, padded=padded)


def window_index(axes: list[dict[str, int]]) -> np.ndarray:
    """Flat indices (n_windows, window_size) into the padded, flattened spatial grid of a max-pool.

    Both engines gather windows with this index and fold routed values back with a scatter-add over it, so
    the max-pool rule reads and writes exactly the same elements in PyTorch and TensorFlow (overlapping
    windows accumulate; -inf padding never wins a window).
    """
    idx = np.zeros((1, 1), dtype=np.int64)
    for ax in axes:
        starts = np.arange(ax["out"])[:, None] * ax["stride"]
        offsets = np.arange(ax["kernel"])[None, :] * ax["dilation"]
        one = starts + offsets  # (out, kernel)
        idx = idx[:, None, :, None] * ax["padded"] + one[None, :, None, :]
        idx = idx.reshape(idx.shape[0] * idx.shape[1], idx.shape[2] * idx.shape[3])
    return idx


def hypothetical_scores(m: np.ndarray, references: np.ndarray, axis: int = 1) -> np.ndarray:
    """DeepSHAP's hypothetical scores for genomics, averaged over references: ``mean_r (m[b] - sum_c m[c] r[c])``.

    ``m`` and ``references`` are (N, R, L, 4) multipliers (or path-averaged gradients) and references. Base b
    at a position gets the score it would have if it were observed; multiplied by the one-hot input this gives
    the actual contributions, whose per-position sum is ``mean_r sum_c m[c] (x[c] - r[c])``. One function for
    DeepLIFT (every engine) and integrated gradients, so both attribute alike. ``axis`` is the reference axis
    of ``m`` (``references`` broadcast to ``m``), for layouts with more axes.
    """
    return (m - (m * references).sum(-1, keepdims=True)).mean(axis)
