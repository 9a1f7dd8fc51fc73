"""Kipoi dataloader written by ``kipoi-dfim kipoi-spec``: streams a VCF as one sample per (record, ALT).

Unscorable records (REF mismatches, unknown contigs, symbolic alleles, ...) come through with their status and get NaN
scores; none is dropped. The work is done by kipoi_dfim.kipoi_spec.iter_samples.
"""

import inspect
import os

from kipoi.data import SampleIterator

# kipoi loads this file without __file__, from inside this directory
HERE = os.path.dirname(os.path.abspath(inspect.getframeinfo(inspect.currentframe()).filename))


class VariantWindows(SampleIterator):
    """Reference/alternate one-hot windows at the wrapped model's input length, one per VCF (record, ALT)."""

    def __init__(self, vcf_file, fasta_file):
        from kipoi_dfim.kipoi_spec import iter_samples, read_config

        self._samples = iter_samples(vcf_file, fasta_file, int(read_config(HERE)["seq_len"]))

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._samples)
