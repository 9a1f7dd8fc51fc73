"""NeuronMotif (Wei et al., PNAS 2023): demix convolutional neurons into motifs and motif grammars.

numpy only; the model is reached through :mod:`kipoi_dfim.backend.introspect`.
"""

from kipoi_dfim.neuronmotif.interpret import CRM, NeuronResult, Settings, interpret_neurons

__all__ = ["CRM", "NeuronResult", "Settings", "interpret_neurons"]
