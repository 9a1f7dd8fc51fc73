"""Fixture builders for the kipoi-dfim zoo harness: one function per Kipoi zoo entry.

Each builder writes a model directory with the structure of the zoo entry (kipoi/models): the model.yaml in the
zoo's form (``type:`` or ``defined_as:``, the same args, schema, default dataloader arguments and target-name
files), an architecture built the same way (module file, Keras JSON, full-model HDF5) and seeded random
weights in the exact format the yaml expects. Only the weight URLs are replaced by local files. The facts come
from reading the zoo entries; the files are ours (nothing is copied from kipoi/models).

A builder returns a :class:`Fixture` describing what the harness should find (length, targets, alphabet) and
how to check predictions: with kipoi itself (``kipoi.get_model(dir, source="dir")``) where kipoi 0.8.6 can load
the model here, else with an independent numpy forward pass of the same random weights.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"


@dataclass
class Fixture:
    """A built zoo model directory and what the harness expects of it."""

    name: str
    model_dir: Path
    framework: str
    seq_len: int
    targets: list[str]
    alphabet: str = "ACGT"
    kipoi_oracle: bool = True  # kipoi 0.8.6 loads it here: compare with kipoi's predict_on_batch
    numpy_oracle: Callable[[np.ndarray], np.ndarray] | None = None  # model-layout input -> raw outputs
    sigmoid_output: bool = True  # raw outputs are probabilities (compare logits after a logit transform)
    load_kw: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _write_yaml(path: Path, d: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(d, sort_keys=False))


def _labels(path: Path, prefix: str, n: int) -> list[str]:
    names = [f"{prefix}_{i}" for i in range(n)]
    path.write_text("\n".join(names) + "\n")
    return names


def _randomise_torch(module, seed: int) -> None:
    """Seeded weights; batch-norm running statistics moved away from (0, 1) so they matter."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.5 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def _import(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"zoo_fixture_{abs(hash(str(path)))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _torch_weights(module_path: Path, obj: str, out: Path, seed: int, cls: bool = False) -> None:
    import torch

    mod = _import(module_path)
    m = getattr(mod, obj)() if cls else getattr(mod, obj)
    _randomise_torch(m, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(m.state_dict(), out)


def _seq_dl(length: int, **args) -> dict:
    return {"defined_as": "kipoiseq.dataloaders.SeqIntervalDl",
            "default_args": {"auto_resize_len": length, **args}}


# --------------------------------------------------------------------------------------------- PyTorch
def build_basset(root: Path, seed: int = 0) -> Fixture:
    """Basset: ``type: pytorch``, module_obj in a torch7-converted file, state dict, (4, 600, 1) input,
    ``column_labels: [target_labels.txt]``."""
    d = root / "Basset"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(TEMPLATES / "basset_module.py", d / "pretrained_model_reloaded_th.py")
    names = _labels(d / "target_labels.txt", "basset_cell", 164)
    _torch_weights(d / "pretrained_model_reloaded_th.py", "model", d / "model_files" / "weights.pth", seed)
    _write_yaml(d / "model.yaml", {
        "type": "pytorch",
        "args": {"module_file": "pretrained_model_reloaded_th.py", "module_obj": "model",
                 "weights": "model_files/weights.pth"},
        "default_dataloader": _seq_dl(600, alphabet_axis=0, dtype="np.float32", dummy_axis=2),
        "info": {"authors": [{"name": "kipoi-dfim zoo harness"}], "doc": "Basset fixture (random weights)"},
        "schema": {"inputs": {"name": "seq", "shape": "(4,600,1)", "special_type": "DNASeq", "doc": "DNA"},
                   "targets": {"name": "DHS_probs", "shape": "(164, )", "doc": "probabilities",
                               "column_labels": ["target_labels.txt"]}},
    })
    return Fixture("Basset", d, "pytorch", 600, names)


def _deepsea_common(root: Path) -> tuple[Path, list[str]]:
    d = root / "DeepSEA"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(TEMPLATES / "deepsea_module.py", d / "model_architecture.py")
    names = _labels(d / "predictor_names.txt", "deepsea_feature", 919)
    return d, names


def _deepsea_yaml(obj: str, weights: str) -> dict:
    return {
        "type": "pytorch",
        "args": {"module_file": "../model_architecture.py", "module_obj": obj, "weights": weights},
        "info": {"authors": [{"name": "kipoi-dfim zoo harness"}], "doc": "DeepSEA fixture (random weights)"},
        "default_dataloader": _seq_dl(1000, alphabet_axis=0, dummy_axis=1, dtype="np.float32"),
        "schema": {"inputs": {"name": "seq", "shape": "(4,1,1000)", "special_type": "DNASeq", "doc": "DNA"},
                   "targets": {"name": "TFBS_DHS_probs", "shape": "(919, )", "doc": "probabilities",
                               "column_labels": ["../predictor_names.txt"]}},
    }


def build_deepsea_variant_effects(root: Path, seed: int = 0) -> Fixture:
    """DeepSEA/variantEffects: ``../model_architecture.py`` veff_model (AGCT recoding inside the model,
    nn.Threshold), (4, 1, 1000), ``../predictor_names.txt``. The 188 MB state dict is generated here."""
    d, names = _deepsea_common(root)
    sub = d / "variantEffects"
    _torch_weights(d / "model_architecture.py", "veff_model", sub / "model_files" / "weights.pth", seed)
    _write_yaml(sub / "model.yaml", _deepsea_yaml("veff_model", "model_files/weights.pth"))
    return Fixture("DeepSEA/variantEffects", sub, "pytorch", 1000, names)


def build_deepsea_predict(root: Path, seed: int = 0) -> Fixture:
    """DeepSEA/predict: predict_model, which averages the sigmoid outputs of the sequence and its reverse
    complement (concatenated along the batch axis): no logit exists, the probabilities are scored."""
    d, names = _deepsea_common(root)
    sub = d / "predict"
    _torch_weights(d / "model_architecture.py", "predict_model", sub / "model_files" / "weights.pth", seed)
    _write_yaml(sub / "model.yaml", _deepsea_yaml("predict_model", "model_files/weights.pth"))
    return Fixture("DeepSEA/predict", sub, "pytorch", 1000, names, sigmoid_output=False)


def build_beluga(root: Path, seed: int = 0) -> Fixture:
    """DeepSEA/beluga: ``defined_as: kipoi.model.PyTorchModel``, module_class Beluga, AGCT alphabet given only
    in the dataloader args, (4, 1, 2000), 2002 targets. The 543 MB state dict is generated here."""
    d = root / "DeepSEA" / "beluga"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(TEMPLATES / "beluga_module.py", d / "model.py")
    names = _labels(d / "predictor_names.txt", "beluga_feature", 2002)
    _torch_weights(d / "model.py", "Beluga", d / "model_files" / "weights.pth", seed, cls=True)
    _write_yaml(d / "model.yaml", {
        "defined_as": "kipoi.model.PyTorchModel",
        "args": {"weights": "model_files/weights.pth", "module_class": "Beluga", "module_file": "model.py"},
        "info": {"authors": [{"name": "kipoi-dfim zoo harness"}], "doc": "Beluga fixture (random weights)"},
        "default_dataloader": _seq_dl(2000, alphabet_axis=0, dummy_axis=1, alphabet="AGCT", dtype="np.float32"),
        "schema": {"inputs": {"name": "seq", "shape": "(4, 1, 2000)", "special_type": "DNASeq", "doc": "DNA"},
                   "targets": {"name": "TFBS_DHS_probs", "shape": "(2002, )", "doc": "probabilities",
                               "column_labels": ["predictor_names.txt"]}},
    })
    return Fixture("DeepSEA/beluga", d, "pytorch", 2000, names, alphabet="AGCT")
