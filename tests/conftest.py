import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_onehot(rng, n, L):
    return np.eye(4, dtype=np.float32)[rng.integers(0, 4, (n, L))]


@pytest.fixture(autouse=True)
def _kipoi_dfim_loggers_enabled():
    """Importing kipoi_veff (a test oracle) runs logging.config with disable_existing_loggers=True, which
    silences every logger created before it; tests that check our warnings need them on."""
    import logging

    for name, lg in logging.root.manager.loggerDict.items():
        if name.startswith("kipoi_dfim") and isinstance(lg, logging.Logger):
            lg.disabled = False
