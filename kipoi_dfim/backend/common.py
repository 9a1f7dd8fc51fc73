"""Shared adapter logic: batching, target names, DeepLIFT contribution algebra (numpy only)."""

from __future__ import annotations

import numpy as np

from kipoi_dfim.backend._deeplift_common import hypothetical_scores
from kipoi_dfim.errors import InputError


class AdapterBase:
    """Framework-independent half of every adapter; subclasses implement the ``_*_batch`` methods."""

    framework = "base"

    def __init__(self, seq_len, layout, targets, output, activation, batch_size=64):
        if output not in ("logit", "raw"):
            raise InputError(f"output must be 'logit' or 'raw', not {output!r}")
        if seq_len is None:
            raise InputError("the model's input length is unknown: pass seq_len=...")
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
        return np.concatenate(
            [self._predict_batch(x[i : i + self.batch_size], output) for i in range(0, len(x), self.batch_size)]
        )

    def gradient(self, x: np.ndarray, target: int | str) -> np.ndarray:
        """Gradient of the scored output ``target`` with respect to the one-hot input, (N, L, 4)."""
        x = self._check_x(x)
        t = self.target_index(target)
        if len(x) == 0:
            return np.zeros_like(x)
        return np.concatenate(
            [self._gradient_batch(x[i : i + self.batch_size], t) for i in range(0, len(x), self.batch_size)]
        )

    def deeplift_multipliers(self, x: np.ndarray, references: np.ndarray, target: int | str) -> np.ndarray:
        """DeepLIFT multipliers (N, R, L, 4) of each (sequence, reference) pair."""
        x = self._check_x(x)
        references = np.asarray(references, dtype=np.float32)
        if references.ndim == 3:
            references = references[:, None]
        if references.ndim != 4 or references.shape[0] != x.shape[0] or references.shape[2:] != x.shape[1:]:
            raise InputError(f"references must be (N, R, L, 4) for x {x.shape}, got {references.shape}")
        return self._multipliers(x, references, self.target_index(target))

    def deeplift(
        self, x: np.ndarray, references: np.ndarray, target: int | str, hypothetical: bool = False
    ) -> np.ndarray:
        """DeepLIFT/DeepSHAP contributions averaged over references, (N, L, 4).

        Contributions of pair (x, r) are m * (x - r). Hypothetical contributions give every base b at every
        position the score it would get if it were observed: m[b] - sum_c m[c] r[c], averaged over r
        (the genomics convention of DeepSHAP); multiplied by x they give the actual contributions, which are
        non-zero only at observed bases and sum per position to mean_r sum_c m[c] (x[c] - r[c]).
        """
        x = self._check_x(x)
        references = np.asarray(references, dtype=np.float32)
        if references.ndim == 3:
            references = references[:, None]
        m = self.deeplift_multipliers(x, references, target)
        hyp = hypothetical_scores(m, references)
        # actual contributions sit on the observed base; per position they sum to mean_r m * (x - r)
        return hyp if hypothetical else hyp * x
