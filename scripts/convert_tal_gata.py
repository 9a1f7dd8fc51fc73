"""Write model_specs/tal_gata_k562/: the DFIM paper's GATA1/GATA2/TAL1 K562 model as a Keras 3 Kipoi model.

The paper's model (Greenside et al., Bioinformatics 2018) was saved by Keras 0.3/1 as a Theano 'th' Graph
(architecture JSON + weights HDF5), which Keras 3 cannot load. This script rebuilds it with
:func:`kipoi_dfim.backend.keras_legacy.build_from_legacy`, saves it as ``model.keras`` and writes a Kipoi
model directory around it: model.yaml, a local dataloader (kipoiseq's SeqIntervalDl giving (1, 4, 1000)),
small example files (a few SPI1 bQTL windows as FASTA + BED, so ``kipoi test`` needs no network) and the
original JSON/HDF5 under ``original/``.

Usage::

    python scripts/convert_tal_gata.py [--out model_specs/tal_gata_k562] [--spi1-npy PATH --spi1-txt PATH]

The SPI1 files are only read to write the example files; the model comes from tests/data/legacy_keras.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LEGACY = REPO / "tests" / "data" / "legacy_keras" / "tal_gata"
ARCH = "tal_gata_dnase_model_architecture.json"
WEIGHTS = "tal_gata_dnase_model_weights.hd5"
SHARED = Path("/work/shared/data/dfim_paper")
TARGETS = ("GATA1", "GATA2", "TAL1")
SEQ_LEN = 1000
N_EXAMPLES = 4

MODEL_YAML = """\
# Written by scripts/convert_tal_gata.py: do not edit by hand.
type: keras
args:
  weights: model.keras
info:
  authors:
    - name: Peyton Greenside
    - name: Tyler Shimko
    - name: Polly Fordyce
    - name: Anshul Kundaje
  contributors:
    - name: kipoi-dfim (Keras 3 conversion)
  doc: >
    Multi-task CNN predicting GATA1, GATA2 and TAL1 binding in K562 (DNase peaks) from 1 kb of DNA, the
    model of Greenside, Shimko, Fordyce and Kundaje, "Discovering epistatic feature interactions from
    neural network models of regulatory DNA sequences", Bioinformatics 34(17):i629-i637 (2018), ECCB
    proceedings, used there to show the GATA-TAL1 interaction with Deep Feature Interaction Maps (DFIM).
    Five Convolution2D layers (25 filters; the first 4x10, then 1x10, ReLU), max-pooling (1, 25) and one
    Dense(1) + sigmoid head per factor. Trained with Keras 0.3/1 on Theano ('th' dim ordering); rebuilt in
    Keras 3 by kipoi_dfim.backend.keras_legacy (Theano kernels flipped, channels-first order kept for the
    input and the Flatten). The model has three outputs (N, 1) in the order GATA1, GATA2, TAL1 (output0,
    output1, output2 of the original Graph); the pre-sigmoid logits are the outputs of layers dense0-2. The
    original files are in original/.
  cite_as: https://doi.org/10.1093/bioinformatics/bty575
  trained_on: K562 DNase-seq peaks labelled with GATA1, GATA2 and TAL1 ChIP-seq peaks (see the paper)
  training_procedure: Adam, binary cross-entropy per task (original Keras Graph model)
  version: 0.1
  license: unspecified (the original kundajelab/dfim repository ships no license file)
  tags:
    - DNA binding
dependencies:
  pip:
    - tensorflow
    - keras>=3
default_dataloader: .
schema:
  inputs:
    name: seq
    shape: (1, 4, 1000)
    special_type: DNASeq
    doc: One-hot DNA, ACGT along axis 1 and position along axis 2 (Theano 'th' layout of the original).
    associated_metadata: ranges
  targets:
    - name: GATA1
      shape: (1, )
      doc: Probability of GATA1 binding in K562 (output0)
    - name: GATA2
      shape: (1, )
      doc: Probability of GATA2 binding in K562 (output1)
    - name: TAL1
      shape: (1, )
      doc: Probability of TAL1 binding in K562 (output2)
"""

DATALOADER_YAML = """\
# Written by scripts/convert_tal_gata.py: do not edit by hand.
type: Dataset
defined_as: dataloader.py::TalGataSeqDl
args:
  intervals_file:
    doc: BED3+ file of regions; each is resized to 1000 bp around its centre
    example: example_files/intervals.bed
  fasta_file:
    doc: Reference genome FASTA (indexed with .fai)
    example: example_files/sequences.fa
  num_chr_fasta:
    doc: True to prepend 'chr' to the BED contig names
    optional: True
info:
  authors:
    - name: kipoi-dfim
  doc: One-hot 1 kb sequences in the (1, 4, 1000) layout of the Theano model (kipoiseq SeqIntervalDl).
  version: 0.1
  license: MIT
dependencies:
  pip:
    - kipoiseq
output_schema:
  inputs:
    name: seq
    shape: (1, 4, 1000)
    special_type: DNASeq
    doc: One-hot DNA, ACGT along axis 1, position along axis 2
    associated_metadata: ranges
  metadata:
    ranges:
      type: GenomicRanges
      doc: The 1 kb interval of each input
"""

DATALOADER_PY = '''\
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
'''

README = """\
# tal_gata_k562

The GATA1 / GATA2 / TAL1 K562 model of the DFIM paper (Greenside et al., Bioinformatics 2018,
https://doi.org/10.1093/bioinformatics/bty575), converted from Keras 0.3/1 (Theano, 'th') to Keras 3 by
`scripts/convert_tal_gata.py` with `kipoi_dfim.backend.keras_legacy.build_from_legacy`.

- `model.keras`: the Keras 3 model. Input (N, 1, 4, 1000) one-hot ACGT; three outputs (N, 1): GATA1, GATA2,
  TAL1 (sigmoid layers `sigmoid0-2`; logits are the outputs of `dense0-2`).
- `original/`: the architecture JSON and weights HDF5 as published in kundajelab/dfim
  (data/tal_gata_interaction_data/), and `kipoi_model.yaml`, the old-style Kipoi model.yaml (`arch`, `weights`,
  `backend: theano`, `image_dim_ordering: th`) that describes them.
- `example_files/`: four SPI1 binding-QTL windows (hg19, Tehranchi et al. 2016) as FASTA contigs + BED.

Check: `kipoi test model_specs/tal_gata_k562 --source dir`.
"""


def _write_examples(out: Path, npy: Path, txt: Path) -> None:
    """A few SPI1 bQTL 1 kb windows as FASTA contigs (named after the QTL) + a BED over each contig."""
    import pyfaidx

    seqs = np.load(npy)[:N_EXAMPLES]
    rows = [ln.split("\t") for ln in txt.read_text().splitlines()[:N_EXAMPLES]]
    ex = out / "example_files"
    ex.mkdir(parents=True, exist_ok=True)
    fasta, bed = [], []
    for onehot, row in zip(seqs, rows, strict=True):
        name = f"{row[0]}_{row[2]}"  # hg19 chrom and 1-based QTL position; window = [end-500, end+499]
        idx = np.where(onehot.sum(1) > 0, onehot.argmax(1), 4)
        seq = "".join("ACGTN"[i] for i in idx)
        fasta.append(f">{name}\n" + "\n".join(textwrap.wrap(seq, 60)))
        bed.append(f"{name}\t0\t{SEQ_LEN}")
    (ex / "sequences.fa").write_text("\n".join(fasta) + "\n")
    (ex / "intervals.bed").write_text("\n".join(bed) + "\n")
    fai = ex / "sequences.fa.fai"
    fai.unlink(missing_ok=True)
    pyfaidx.Faidx(str(ex / "sequences.fa")).close()


def main(argv: list[str] | None = None) -> int:
    """Build the Keras 3 model and write the Kipoi directory."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "model_specs" / "tal_gata_k562"))
    p.add_argument("--spi1-npy", default=str(SHARED / "SPI1_bQTLs_centered_sequences.npy"))
    p.add_argument("--spi1-txt", default=str(SHARED / "SPI1_bQTLs_significant_only.txt"))
    args = p.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from kipoi_dfim.backend.keras_legacy import build_from_legacy

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = build_from_legacy(LEGACY / ARCH, LEGACY / WEIGHTS, backend="theano", image_dim_ordering="th")
    model.save(out / "model.keras")
    orig = out / "original"
    orig.mkdir(exist_ok=True)
    for name in (ARCH, WEIGHTS, "model.yaml"):
        shutil.copyfile(LEGACY / name, orig / ("kipoi_model.yaml" if name == "model.yaml" else name))
    (out / "model.yaml").write_text(MODEL_YAML)
    (out / "dataloader.yaml").write_text(DATALOADER_YAML)
    (out / "dataloader.py").write_text(DATALOADER_PY)
    (out / "README.md").write_text(README)
    _write_examples(out, Path(args.spi1_npy), Path(args.spi1_txt))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
