"""Importance (attribution) methods: one registry, one signature. Work in progress (signatures final)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

METHODS: dict[str, Callable[..., np.ndarray]] = {}


def importance(model, x, target, method="deeplift", *, hypothetical=False, batch_size=64, seed=0, **kw):
    """Importance (N, L, 4) of x under ``model`` for ``target``; see METHODS."""
    raise NotImplementedError
