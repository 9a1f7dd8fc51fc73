"""The model protocol every backend implements.

Everything above the backend layer works on numpy arrays: one-hot ``(N, L, 4)`` in ACGT order, whatever the
model's own input layout or framework. A backend turns that into the model's layout, runs the model and
returns numpy arrays again.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class SequenceModel(Protocol):
    """What DFIM needs from a model.

    Attributes
    ----------
    seq_len : int
        The input length L the model takes.
    targets : list of str
        Names of the model outputs (tasks), in output order.
    output : str
        ``"logit"`` (scored values are pre-sigmoid/pre-softmax) or ``"raw"`` (the model output as is).
    activation : str or None
        The final activation the backend removed to score logits (``"sigmoid"``, ``"softmax"``), or None.
    """

    seq_len: int
    targets: list[str]
    output: str
    activation: str | None

    def predict(self, x: np.ndarray, output: str | None = None) -> np.ndarray:
        """Model outputs (N, n_targets) for one-hot x (N, L, 4); ``output`` overrides the scored kind."""
        ...

    def gradient(self, x: np.ndarray, target: int | str) -> np.ndarray:
        """d output[target] / d x, (N, L, 4), of the scored output (logit by default)."""
        ...

    def gradients(self, x: np.ndarray, targets: list[int | str]) -> np.ndarray:
        """Gradients (T, N, L, 4) of several scored outputs, the forward pass shared by the targets."""
        ...

    def deeplift(
        self, x: np.ndarray, references: np.ndarray, target: int | str, hypothetical: bool = False
    ) -> np.ndarray:
        """DeepLIFT/DeepSHAP contributions (N, L, 4) of x against references (N, R, L, 4), averaged over R.

        With ``hypothetical=True`` returns the hypothetical contributions of every base at every position
        (the multipliers applied to each possible base), as in DeepSHAP for genomics.
        """
        ...

    def deeplift_shared(self, x: np.ndarray, references: np.ndarray, targets: list[int | str],
                        span: tuple[int, int] | None = None) -> np.ndarray:
        """Hypothetical DeepSHAP scores (N, K, T, L, 4) of K windows per variant, x (N, K, L, 4), that share
        the references (N, R, L, 4), for each of the T targets, averaged over R. ``span`` (a, b): the
        positions the caller reads; scores elsewhere may be left 0.

        The same numbers as ``deeplift(x[:, k], references, t, hypothetical=True)`` for every k and t. DFIM
        explains the reference and the alternate window of a variant against the same references, so a fast
        engine runs the references' forward pass once per variant for all windows and targets.
        """
        ...

    def target_index(self, target: int | str) -> int:
        """Resolve a target given by index or by label."""
        ...
