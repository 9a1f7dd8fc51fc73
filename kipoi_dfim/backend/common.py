"""Shared adapter logic: batching, target names, DeepLIFT contribution algebra (numpy only)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from kipoi_dfim.backend._deeplift_common import hypothetical_scores
from kipoi_dfim.errors import SEQ_LEN_HINT, InputError

log = logging.getLogger(__name__)

T = TypeVar("T")


class AdapterBase:
    """Framework-independent half of every adapter; subclasses implement the ``_*_batch`` methods."""

    framework = "base"
    #: Exceptions that mean "the batch did not fit in device memory" (set by each framework's adapter).
    oom_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, seq_len, layout, targets, output, activation, batch_size=64):
        if output not in ("logit", "raw"):
            raise InputError(f"output must be 'logit' or 'raw', not {output!r}")
        if seq_len is None:
            raise InputError(f"the model's input length is unknown: {SEQ_LEN_HINT}")
        self.seq_len = int(seq_len)
        self.layout = layout
        self.output = output
        # the model's final activation (removed from the scored model when output == "logit")
        self.activation = activation
        self.batch_size = int(batch_size)
        n = self._n_outputs()
        if targets is None:
            targets = [str(i) for i in range(n)]
        targets = [str(t) for t in targets]
        if len(targets) != n:
            raise InputError(f"the model has {n} outputs but {len(targets)} target names were given: {targets}")
        self.targets = targets

    # -- to implement --------------------------------------------------------------------------------
    def _n_outputs(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict_batch(self, x: np.ndarray, output: str) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _gradient_batch(self, x: np.ndarray, target: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _multipliers(self, x: np.ndarray, references: np.ndarray, target: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _free_memory(self) -> None:
        """Release cached device memory after an out-of-memory error (framework adapters override)."""

    def with_halving(self, fn: Callable[[int], T]) -> T:
        """Run ``fn(batch_size)``; on out-of-memory halve the adapter's batch size and run it again.

        The batch size that fits is kept for later calls, so a model on a small GPU settles on it after the
        first failure instead of failing. Results never depend on the batch size, so a retried call returns
        the same numbers. Raises the out-of-memory error when even one row does not fit.
        """
        while True:
            try:
                return fn(self.batch_size)
            except self.oom_errors as err:
                if self.batch_size <= 1:
                    raise
                self._free_memory()
                self.batch_size = max(1, self.batch_size // 2)
                log.warning("out of memory (%s): batch size halved to %d", type(err).__name__, self.batch_size)

    # -- protocol ------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.framework} seq_len={self.seq_len} layout={self.layout} "
            f"targets={self.targets} output={self.output}>"
        )

    def target_index(self, target: int | str) -> int:
        """Resolve a target by index (int or digit string) or by label."""
        if isinstance(target, (int, np.integer)):
            i = int(target)
        elif str(target) in self.targets:
            return self.targets.index(str(target))
        elif str(target).lstrip("-").isdigit():
            i = int(target)
        else:
            raise InputError(f"unknown target {target!r}; the model's targets are {self.targets}")
        if not -len(self.targets) <= i < len(self.targets):
            raise InputError(f"target index {i} out of range; the model has {len(self.targets)} outputs")
        return i % len(self.targets)

    def _check_x(self, x: np.ndarray, name: str = "x") -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[2] != 4:
            raise InputError(f"{name} must be one-hot (N, L, 4), got shape {x.shape}")
        if x.shape[1] != self.seq_len:
            raise InputError(f"{name} has length {x.shape[1]} but the model takes {self.seq_len}")
        return x

    def predict(self, x: np.ndarray, output: str | None = None) -> np.ndarray:
        """Outputs (N, n_targets); ``output`` ("logit"/"raw") overrides the adapter's default."""
        x = self._check_x(x)
        output = output or self.output
        if len(x) == 0:
            return np.zeros((0, len(self.targets)), np.float32)
        return self.with_halving(
            lambda bs: np.concatenate([self._predict_batch(x[i : i + bs], output) for i in range(0, len(x), bs)])
        )

    def gradient(self, x: np.ndarray, target: int | str) -> np.ndarray:
        """Gradient of the scored output ``target`` with respect to the one-hot input, (N, L, 4)."""
        x = self._check_x(x)
        t = self.target_index(target)
        if len(x) == 0:
            return np.zeros_like(x)
        return self.with_halving(
            lambda bs: np.concatenate([self._gradient_batch(x[i : i + bs], t) for i in range(0, len(x), bs)])
        )

    def gradients(self, x: np.ndarray, targets: list[int | str]) -> np.ndarray:
        """Gradients of several scored outputs, (T, N, L, 4): one forward pass per batch shared by all targets.

        Numerically ``np.stack([gradient(x, t) for t in targets])``; adapters run one backward pass per target
        on the batch's forward graph (``_gradients_batch``), the generic default one gradient call per target.
        """
        x = self._check_x(x)
        ts = [self.target_index(t) for t in targets]
        if len(x) == 0 or not ts:
            return np.zeros((len(ts), *x.shape), np.float32)
        return self.with_halving(
            lambda bs: np.concatenate([self._gradients_batch(x[i : i + bs], ts) for i in range(0, len(x), bs)], 1)
        )

    def _gradients_batch(self, x: np.ndarray, targets: list[int]) -> np.ndarray:
        """(T, B, L, 4) gradients of one batch; adapters override it to share the forward pass."""
        return np.stack([self._gradient_batch(x, t) for t in targets])

    def deeplift_multipliers(self, x: np.ndarray, references: np.ndarray, target: int | str) -> np.ndarray:
        """DeepLIFT multipliers (N, R, L, 4) of each (sequence, reference) pair."""
        x = self._check_x(x)
        references = np.asarray(references, dtype=np.float32)
        if references.ndim == 3:
            references = references[:, None]
        if references.ndim != 4 or references.shape[0] != x.shape[0] or references.shape[2:] != x.shape[1:]:
            raise InputError(f"references must be (N, R, L, 4) for x {x.shape}, got {references.shape}")
        t = self.target_index(target)
        # the engines read self.batch_size, which with_halving lowers before a retry
        return self.with_halving(lambda bs: self._multipliers(x, references, t))

    def deeplift(
        self, x: np.ndarray, references: np.ndarray, target: int | str, hypothetical: bool = False
    ) -> np.ndarray:
        """DeepLIFT/DeepSHAP contributions averaged over references, (N, L, 4).

        Contributions of pair (x, r) are m * (x - r). Hypothetical contributions give every base b at every
        position the score it would get if it were observed: m[b] - sum_c m[c] r[c], averaged over r
        (the genomics convention of DeepSHAP); multiplied by x they give the actual contributions, which are
        non-zero only at observed bases and sum per position to mean_r sum_c m[c] (x[c] - r[c]).
        Runs through :meth:`deeplift_shared` with one window per sequence, so an adapter's fast path (one
        forward pass of each sequence for all its references) serves both.
        """
        x = self._check_x(x)
        references = np.asarray(references, dtype=np.float32)
        if references.ndim == 3:
            references = references[:, None]
        if len(x):  # the shared-reference path with K = 1 (the generic default is the code below)
            hyp = self.deeplift_shared(x[:, None], references, [target])[:, 0, 0]
            return hyp if hypothetical else hyp * x

        m = self.deeplift_multipliers(x, references, target)
        hyp = hypothetical_scores(m, references)
        # actual contributions sit on the observed base; per position they sum to mean_r m * (x - r)
        return hyp if hypothetical else hyp * x

    def deeplift_shared(self, x: np.ndarray, references: np.ndarray, targets: list[int | str],
                        span: tuple[int, int] | None = None) -> np.ndarray:
        """Hypothetical DeepSHAP scores of K windows per variant that share their references, for T targets.

        DFIM explains the reference and the alternate window of a variant against the same shuffled
        references, for one or more targets; the references' forward pass is the same for all of them, so
        an engine with a fast path runs it once per variant and only the per-pair backward pass per window,
        reference and target. Numerically the same as ``deeplift(x[:, k], references, t, hypothetical=True)``
        for every k and t; summation-to-delta is checked for every (window, reference, target).

        Parameters
        ----------
        x : np.ndarray
            (N, K, L, 4) one-hot windows, K per variant.
        references : np.ndarray
            (N, R, L, 4) references of each variant, shared by its K windows.
        targets : list of int or str
            Outputs to explain (indices or labels).
        span : (int, int), optional
            Positions [a, b) the caller reads (DFIM: the target bases and the maps file's flank). An engine
            may then skip work that only reaches other positions, whose scores it leaves 0 (the PyTorch
            engine does: :mod:`kipoi_dfim.backend.deeplift_torch_crop`); the scores in [a, b) are the same.
            None: every position.

        Returns
        -------
        np.ndarray
            float32 (N, K, T, L, 4) hypothetical scores averaged over the R references.
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[3] != 4:
            raise InputError(f"x must be (N, K, L, 4) windows, got shape {x.shape}")
        if x.shape[2] != self.seq_len:
            raise InputError(f"x has length {x.shape[2]} but the model takes {self.seq_len}")
        references = np.asarray(references, dtype=np.float32)
        if references.ndim != 4 or references.shape[0] != x.shape[0] or references.shape[2:] != x.shape[2:]:
            raise InputError(f"references must be (N, R, L, 4) for x {x.shape}, got {references.shape}")
        ts = [self.target_index(t) for t in targets]
        if not ts:
            raise InputError("deeplift_shared needs at least one target")
        if len(x) == 0 or x.shape[1] == 0:
            return np.zeros((x.shape[0], x.shape[1], len(ts), *x.shape[2:]), np.float32)
        if span is not None:
            a, b = int(span[0]), int(span[1])
            if not 0 <= a < b <= x.shape[2]:
                raise InputError(f"span must be positions 0 <= a < b <= {x.shape[2]}, got {tuple(span)}")
            span = (a, b)
        return self._deeplift_shared(x, references, ts, span)

    def _fast_shared(self, engine: Callable, unavailable: type[Exception], x: np.ndarray, references: np.ndarray,
                     targets: list[int], **kw: Any) -> np.ndarray:
        """A framework's shared-reference engine (batch halved on out-of-memory; ``kw`` passed on); where it
        does not apply (``unavailable`` raised), this class's pairwise default."""
        try:
            return self.with_halving(
                lambda bs: engine(self._scored(self.output), x, references, targets, batch_size=bs, **kw))
        except unavailable as err:
            log.info("DeepLIFT: pairwise engine (%s)", err)
            return AdapterBase._deeplift_shared(self, x, references, targets)

    def _deeplift_shared(self, x: np.ndarray, references: np.ndarray, targets: list[int],
                         span: tuple[int, int] | None = None) -> np.ndarray:
        """Generic default: the pairwise multipliers of every window and target (no shared forward pass;
        every position, whatever ``span``)."""
        n, k = x.shape[:2]
        out = np.zeros((n, k, len(targets), *x.shape[2:]), np.float32)
        for w in range(k):
            for j, t in enumerate(targets):
                m = self.deeplift_multipliers(x[:, w], references, t)
                out[:, w, j] = hypothetical_scores(m, references)
        return out
