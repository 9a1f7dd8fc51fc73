"""Train the Keras 3 CNN of the simulated GATA-TAL1 grammar and write model_specs/sim_keras/.

Usage: python scripts/train_sim_keras.py [--out model_specs/sim_keras] [--n-train 16000] [--epochs 10]

Seeded end to end (numpy, Python, TensorFlow op determinism): rerunning gives the same weights on the same
machine. Takes about a minute on 2 CPU cores. Prints the held-out AUROC; docs/simulation.md records it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kipoi_dfim.simulation import (  # noqa: E402
    ablation_augment,
    auroc,
    simulate_dataset,
    write_kipoi_examples,
)

SEQ_LEN = 200
TARGET = "interaction"
TRAIN_SEED, VALID_SEED, HELDOUT_SEED = 1, 2, 3
AUGMENT_FRACTION = 0.2  # sequences with one motif filled with background frequencies


def build_model(seq_len: int = SEQ_LEN):
    """Motif conv (ReLU) -> max-pool -> grammar conv (ReLU) -> global max-pool -> dense sigmoid ``interaction``.

    The second convolution sees about 23 bp, enough for both motifs of the pair (at most 20 bp together), and
    its ReLU threshold makes it fire only when both are present: the AND of the grammar, a non-additive
    interaction local to +-15 bp, which is what DFIM should recover. The global max-pool is written as an
    ordinary MaxPooling1D over the whole track so attribution rules only need the max-pool rule.
    (A dense ReLU hidden layer after flattening, the obvious alternative, died during training.)
    """
    import keras
    from keras import layers

    inp = keras.Input((seq_len, 4), name="seq")
    h = layers.Conv1D(16, 7, activation="relu", name="motif_conv")(inp)
    h = layers.MaxPooling1D(2, name="pool")(h)
    h = layers.Conv1D(16, 9, activation="relu", name="grammar_conv")(h)
    h = layers.MaxPooling1D(h.shape[1], name="global_pool")(h)
    h = layers.Flatten(name="flatten")(h)
    out = layers.Dense(1, activation="sigmoid", name=TARGET)(h)
    return keras.Model(inp, out, name="sim_gata_tal1_cnn")


def train(n_train: int, epochs: int, seed: int = 0):
    """Fit the model on freshly simulated data; returns (model, held-out AUROC)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    x, y, placements = simulate_dataset(n_train, SEQ_LEN, seed=TRAIN_SEED)
    x, y = ablation_augment(x, y, placements, AUGMENT_FRACTION, seed=TRAIN_SEED)
    xv, yv, _ = simulate_dataset(2000, SEQ_LEN, seed=VALID_SEED)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["AUC"])
    model.fit(x, y.astype("float32"), validation_data=(xv, yv.astype("float32")), epochs=epochs,
              batch_size=64, verbose=2, shuffle=True)
    xt, yt, _ = simulate_dataset(2000, SEQ_LEN, seed=HELDOUT_SEED)
    return model, auroc(yt, model.predict(xt, verbose=0)[:, 0])


MODEL_YAML = """\
type: keras
args:
  weights: model.keras
default_dataloader:
  defined_as: kipoiseq.dataloaders.SeqIntervalDl
  default_args:
    intervals_file: example_files/intervals.bed
    fasta_file: example_files/sim_sequences.fa
    num_chr_fasta: True
    auto_resize_len: 200
    ignore_targets: True
    dtype: np.float32
info:
  authors:
    - name: kipoi-dfim developers
  doc: >
    Keras 3 CNN trained on the simulated regulatory grammar of kipoi-dfim (kipoi_dfim/simulation.py,
    docs/simulation.md). 200 bp random background (GC 0.46). The positive class needs an interacting motif
    pair: a GATA site (WGATAR, e.g. AGATAA) and a TAL1 E-box (CAGCTG) within 7-14 bp (centre to centre),
    either order and strand. Negatives carry only one of the two. CTCF-like and AP-1 (TGASTCA) distractor
    motifs appear at random in both classes and carry no information. Output `interaction`: sigmoid probability that the
    sequence holds the interacting GATA-TAL1 pair. Held-out AUROC {auroc:.4f}. Retrain with
    scripts/train_sim_keras.py.
  version: 0.1
  license: MIT
  tags:
    - simulation
    - DFIM
dependencies:
  pip:
    - tensorflow-cpu
    - keras>=3
schema:
  inputs:
    name: seq
    special_type: DNASeq
    shape: (200, 4)
    doc: One-hot encoded DNA sequence (ACGT order), 200 bp.
    associated_metadata: ranges
  targets:
    name: interaction
    shape: (1, )
    doc: Probability that the sequence carries the interacting GATA-TAL1 motif pair.
    column_labels:
      - interaction
"""


def write_model_dir(model, out: str, heldout_auroc: float) -> None:
    """Save the model as a Keras 3 ``.keras`` file plus model.yaml and offline example files."""
    os.makedirs(out, exist_ok=True)
    shutil.rmtree(os.path.join(out, "downloaded"), ignore_errors=True)
    model.save(os.path.join(out, "model.keras"))
    with open(os.path.join(out, "model.yaml"), "w") as fh:
        fh.write(MODEL_YAML.format(auroc=heldout_auroc))
    write_kipoi_examples(os.path.join(out, "example_files"), seq_len=SEQ_LEN)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("model_specs", "sim_keras"))
    parser.add_argument("--n-train", type=int, default=16000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, score = train(args.n_train, args.epochs, args.seed)
    print(f"held-out AUROC (2000 sequences, seed {HELDOUT_SEED}): {score:.4f}")
    write_model_dir(model, args.out, score)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
