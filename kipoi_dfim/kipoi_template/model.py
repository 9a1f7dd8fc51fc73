"""Kipoi model written by ``kipoi-dfim kipoi-spec``: DFIM + ISM variant scores of the wrapped model.

A thin shim: the settings are in dfim.yaml next to this file and the work is done by
kipoi_dfim.kipoi_spec.DfimPredictor (pip install kipoi-dfim), so this file never needs editing.
"""

import inspect
import os

from kipoi.model import BaseModel

# kipoi loads this file without __file__, from inside this directory
HERE = os.path.dirname(os.path.abspath(inspect.getframeinfo(inspect.currentframe()).filename))


class DfimModel(BaseModel):
    """predict_on_batch(inputs) -> {variant_id, chrom, pos, ref, alt, status, <target>: {score: (N,)}}."""

    def __init__(self):
        from kipoi_dfim.kipoi_spec import DfimPredictor

        self._predictor = DfimPredictor(HERE)

    def predict_on_batch(self, x):
        return self._predictor.predict_on_batch(x)
