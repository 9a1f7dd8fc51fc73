"""kipoi-dfim: Deep Feature Interaction Maps for variants in Kipoi sequence models.

Heavy imports (TensorFlow, torch) happen only when a function that needs them is called.
"""

from __future__ import annotations

import importlib
import logging
import os

# Quiet TensorFlow's start-up chatter and make Keras 3 use TensorFlow, before anything imports them.
# TF_CPP_MIN_LOG_LEVEL hides TF's C++ INFO/WARNING lines; it cannot hide the "oneDNN custom operations are on"
# line (and absl's "All log messages before absl::InitializeLog()" header) that TF 2.21 prints twice on import,
# before its logging is set up. Only turning the oneDNN custom ops off does; on the sim models this changed
# logits by < 3e-5 and run time not at all, and the plain kernels do not depend on batch blocking.
# setdefault: a user who exports another value keeps it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# OpenMP threads sleep rather than spin while they wait. PyTorch's CPU ops run as OpenMP regions of all its
# intra-op threads; by default a waiting thread spins, so when the cores are shared (other jobs, Dask workers on
# the same node) one descheduled thread makes every region wait while the others burn CPU. Measured on the
# DeepLIFT benchmark under three busy loops on 2 cores: PyTorch DFIM about 2x faster, the same on free cores
# (benchmarks/README.md). libgomp reads it once, when torch is imported: from here it reaches the CLI, Python
# users who import kipoi_dfim before torch, and child processes (Dask workers).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Python-side TF/absl loggers (e.g. "WARNING:absl:Compiled the loaded model, but ...") say nothing a user can act on
for _name in ("absl", "tensorflow"):
    logging.getLogger(_name).setLevel(logging.ERROR)

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "kipoi_dfim.backend",
    "score_variants": "kipoi_dfim.scoring",
    "feature_interactions": "kipoi_dfim.interactions",
    "dinucleotide_shuffle": "kipoi_dfim.shuffle",
    "importance": "kipoi_dfim.attribution",
    "plot_delta_tracks": "kipoi_dfim.plot",
    "plot_dfim": "kipoi_dfim.plot",
    "one_hot": "kipoi_dfim.sequence",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kipoi_dfim' has no attribute {name!r}")
