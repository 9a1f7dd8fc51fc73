"""PyTorch CNN of the simulated GATA-TAL1 grammar (kipoi-dfim), channels-first input (N, 4, 200).

Only module-based layers (no functional calls in forward), so hook-based attribution (DeepLIFT/DeepSHAP
rules keyed on nn.ReLU, nn.MaxPool1d, nn.Sigmoid) sees every nonlinearity.
"""

from torch import nn


class SimInteractionCNN(nn.Sequential):
    """Motif conv -> ReLU -> max-pool -> grammar conv -> ReLU -> global max-pool -> linear -> sigmoid.

    The grammar conv sees about 23 bp, enough to span the GATA-TAL1 pair, and its ReLU threshold implements
    the AND of the two motifs.
    """

    def __init__(self, seq_len=200, n_motif=16, n_grammar=16, motif_width=7, grammar_width=9):
        pooled = (seq_len - motif_width + 1) // 2
        super().__init__(
            nn.Conv1d(4, n_motif, motif_width),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(n_motif, n_grammar, grammar_width),
            nn.ReLU(),
            nn.MaxPool1d(pooled - grammar_width + 1),
            nn.Flatten(),
            nn.Linear(n_grammar, 1),
            nn.Sigmoid(),
        )
