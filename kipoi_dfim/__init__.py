"""kipoi-dfim: Deep Feature Interaction Maps for variants in Kipoi sequence models.

Heavy imports (TensorFlow, torch) happen only when a function that needs them is called.
"""

from __future__ import annotations

import importlib
import os

# quiet TensorFlow's C++ start-up chatter and make Keras 3 use TensorFlow, before anything imports them
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

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
