"""Kipoi dataloader of model_specs/tal_gata_k562 (written by scripts/convert_tal_gata.py).

kipoiseq's SeqIntervalDl with the layout the Theano model takes: (1, 4, 1000), ACGT along axis 1.
"""

import numpy as np
from kipoi.data import Dataset
from kipoiseq.dataloaders import SeqIntervalDl


class TalGataSeqDl(Dataset):
    """1 kb one-hot windows (1, 4, 1000) centred on the BED intervals."""

    def __init__(self, intervals_file, fasta_file, num_chr_fasta=False):
        self.dl = SeqIntervalDl(intervals_file, fasta_file, num_chr_fasta=num_chr_fasta, auto_resize_len=1000,
                                alphabet_axis=1, dummy_axis=0, ignore_targets=True, dtype=np.float32)

    def __len__(self):
        return len(self.dl)

    def __getitem__(self, idx):
        item = self.dl[idx]
        return {"inputs": item["inputs"], "metadata": item["metadata"]}
