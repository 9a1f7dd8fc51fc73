"""Train the PyTorch CNN of the simulated GATA-TAL1 grammar and write model_specs/sim_torch/.

Usage: python scripts/train_sim_torch.py [--out model_specs/sim_torch] [--n-train 16000] [--epochs 10]

The architecture lives in model_specs/sim_torch/model.py (the Kipoi ``module_file``); this script imports it
from there so that the trained state dict and the class Kipoi instantiates cannot drift apart. Input is
channels-first (N, 4, 200). Seeded (torch, numpy, deterministic algorithms, 2 threads); a few minutes on
2 CPU cores. Prints the held-out AUROC; docs/simulation.md records it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
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
TRAIN_SEED, VALID_SEED, HELDOUT_SEED = 1, 2, 3
AUGMENT_FRACTION = 0.2  # sequences with one motif filled with background frequencies
MODEL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "model_specs", "sim_torch",
                          "model.py")


def load_module_class(path: str = MODEL_FILE):
    """Import ``SimInteractionCNN`` from the model dir's model.py (the file Kipoi will load)."""
    spec = importlib.util.spec_from_file_location("sim_torch_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimInteractionCNN


def to_channels_first(x: np.ndarray):
    """(N, L, 4) one-hot -> contiguous float32 torch tensor (N, 4, L)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float32))


def predict(model, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Sigmoid outputs (N,) of ``model`` for one-hot (N, L, 4)."""
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([model(to_channels_first(x[i:i + batch_size]))[:, 0].numpy()
                               for i in range(0, len(x), batch_size)])


def train(n_train: int, epochs: int, seed: int = 0, batch_size: int = 64, lr: float = 3e-3):
    """Fit on freshly simulated data with BCE on the pre-sigmoid output; returns (model, held-out AUROC)."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    x, y, placements = simulate_dataset(n_train, SEQ_LEN, seed=TRAIN_SEED)
    x, y = ablation_augment(x, y, placements, AUGMENT_FRACTION, seed=TRAIN_SEED)
    xv, yv, _ = simulate_dataset(2000, SEQ_LEN, seed=VALID_SEED)
    model = load_module_class()(seq_len=SEQ_LEN)
    logits = torch.nn.Sequential(*list(model)[:-1])  # same parameters, without the final nn.Sigmoid
    opt = torch.optim.Adam(model.parameters(), lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xt_all, yt_all = to_channels_first(x), torch.from_numpy(y.astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt_all), generator=gen)
        total = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss = loss_fn(logits(xt_all[idx])[:, 0], yt_all[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs} loss {total / len(perm):.4f} "
              f"val AUROC {auroc(yv, predict(model, xv)):.4f}", flush=True)
    xh, yh, _ = simulate_dataset(2000, SEQ_LEN, seed=HELDOUT_SEED)
    return model, auroc(yh, predict(model, xh))


MODEL_YAML = """\
type: pytorch
args:
  module_file: model.py
  module_class: SimInteractionCNN
  module_kwargs:
    seq_len: 200
  weights: model.pt
default_dataloader:
  defined_as: kipoiseq.dataloaders.SeqIntervalDl
  default_args:
    intervals_file: example_files/intervals.bed
    fasta_file: example_files/sim_sequences.fa
    num_chr_fasta: True
    auto_resize_len: 200
    alphabet_axis: 0
    ignore_targets: True
    dtype: np.float32
info:
  authors:
    - name: kipoi-dfim developers
  doc: >
    PyTorch CNN (channels-first input (4, 200)) trained on the simulated regulatory grammar of kipoi-dfim
    (kipoi_dfim/simulation.py, docs/simulation.md). 200 bp random background (GC 0.46). The positive class
    needs an interacting motif pair: a GATA site (WGATAR, e.g. AGATAA) and a TAL1 E-box (CAGCTG) within 7-14
    bp (centre to centre), either order and strand. Negatives carry only one of the two. CTCF-like and AP-1
    (TGASTCA) distractor motifs appear at random in both classes and carry no information. Output
    `interaction`: sigmoid probability that the sequence holds the interacting GATA-TAL1 pair (the last
    module is nn.Sigmoid). Held-out AUROC {auroc:.4f}. Retrain with scripts/train_sim_torch.py.
  version: 0.1
  license: MIT
  tags:
    - simulation
    - DFIM
dependencies:
  pip:
    - torch
schema:
  inputs:
    name: seq
    special_type: DNASeq
    shape: (4, 200)
    doc: One-hot encoded DNA sequence, channels first (ACGT along axis 0), 200 bp.
    associated_metadata: ranges
  targets:
    name: interaction
    shape: (1, )
    doc: Probability that the sequence carries the interacting GATA-TAL1 motif pair.
    column_labels:
      - interaction
"""


def write_model_dir(model, out: str, heldout_auroc: float) -> None:
    """Save the state dict (model.pt), model.yaml and offline example files; model.py must already be there."""
    import torch

    os.makedirs(out, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(out, "model.pt"))
    with open(os.path.join(out, "model.yaml"), "w") as fh:
        fh.write(MODEL_YAML.format(auroc=heldout_auroc))
    write_kipoi_examples(os.path.join(out, "example_files"), seq_len=SEQ_LEN)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("model_specs", "sim_torch"))
    parser.add_argument("--n-train", type=int, default=16000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, score = train(args.n_train, args.epochs, args.seed)
    print(f"held-out AUROC (2000 sequences, seed {HELDOUT_SEED}): {score:.4f}")
    write_model_dir(model, args.out, score)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
