"""Statistics of the shuffled null. Work in progress (signatures final)."""

from __future__ import annotations

import numpy as np


def gaussian_pvalues(scores, null, two_sided=True, pool="global", groups=None) -> np.ndarray:
    raise NotImplementedError


def empirical_pvalues(scores, null, two_sided=True, pool="global", groups=None) -> np.ndarray:
    raise NotImplementedError


def bh_qvalues(pvalues) -> np.ndarray:
    raise NotImplementedError
