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

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
    return {"defined_as": "kipoiseq.dataloaders.SeqIntervalDl", "default_args": {"auto_resize_len": length, **args}}


# --------------------------------------------------------------------------------------------- PyTorch
def build_basset(root: Path, seed: int = 0) -> Fixture:
    """Basset: ``type: pytorch``, module_obj in a torch7-converted file, state dict, (4, 600, 1) input,
    ``column_labels: [target_labels.txt]``."""
    d = root / "Basset"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(TEMPLATES / "basset_module.py", d / "pretrained_model_reloaded_th.py")
    names = _labels(d / "target_labels.txt", "basset_cell", 164)
    _torch_weights(d / "pretrained_model_reloaded_th.py", "model", d / "model_files" / "weights.pth", seed)
    _write_yaml(
        d / "model.yaml",
        {
            "type": "pytorch",
            "args": {
                "module_file": "pretrained_model_reloaded_th.py",
                "module_obj": "model",
                "weights": "model_files/weights.pth",
            },
            "default_dataloader": _seq_dl(600, alphabet_axis=0, dtype="np.float32", dummy_axis=2),
            "info": {"authors": [{"name": "kipoi-dfim zoo harness"}], "doc": "Basset fixture (random weights)"},
            "schema": {
                "inputs": {"name": "seq", "shape": "(4,600,1)", "special_type": "DNASeq", "doc": "DNA"},
                "targets": {
                    "name": "DHS_probs",
                    "shape": "(164, )",
                    "doc": "probabilities",
                    "column_labels": ["target_labels.txt"],
                },
            },
        },
    )
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
        "schema": {
            "inputs": {"name": "seq", "shape": "(4,1,1000)", "special_type": "DNASeq", "doc": "DNA"},
            "targets": {
                "name": "TFBS_DHS_probs",
                "shape": "(919, )",
                "doc": "probabilities",
                "column_labels": ["../predictor_names.txt"],
            },
        },
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
    _write_yaml(
        d / "model.yaml",
        {
            "defined_as": "kipoi.model.PyTorchModel",
            "args": {"weights": "model_files/weights.pth", "module_class": "Beluga", "module_file": "model.py"},
            "info": {"authors": [{"name": "kipoi-dfim zoo harness"}], "doc": "Beluga fixture (random weights)"},
            "default_dataloader": _seq_dl(2000, alphabet_axis=0, dummy_axis=1, alphabet="AGCT", dtype="np.float32"),
            "schema": {
                "inputs": {"name": "seq", "shape": "(4, 1, 2000)", "special_type": "DNASeq", "doc": "DNA"},
                "targets": {
                    "name": "TFBS_DHS_probs",
                    "shape": "(2002, )",
                    "doc": "probabilities",
                    "column_labels": ["predictor_names.txt"],
                },
            },
        },
    )
    return Fixture("DeepSEA/beluga", d, "pytorch", 2000, names, alphabet="AGCT")


# ----------------------------------------------------------------------------------------------- Keras
def build_deepstarr(root: Path, seed: int = 0) -> Fixture:
    """DeepSTARR (de Almeida et al. 2022): ``defined_as: kipoi.model.KerasModel``, Keras 2.7 arch JSON
    (``Functional``) + save_weights HDF5; 4 x (Conv1D same, BatchNormalization with tf.keras's list axis
    ``[2]``, ReLU, MaxPooling1D 2), Flatten, 2 x (Dense 256, BN ``[1]``, ReLU, Dropout), two linear heads
    (developmental, housekeeping enhancer activity): a model with two outputs. Schema (249, 4, 1)."""
    from keras_plan import Planner, numpy_forward, write_keras2

    d = root / "DeepSTARR"
    d.mkdir(parents=True, exist_ok=True)
    p = Planner(seed)
    c_in = 4
    for filters, k in ((256, 7), (60, 3), (60, 5), (120, 3)):
        p.conv(filters, k, c_in, padding="same")
        p.bn(filters, axis=[2])
        p.simple("Activation", activation="relu")
        p.simple("MaxPooling1D", pool_size=[2], strides=[2], padding="valid", data_format="channels_last")
        c_in = filters
    p.simple("Flatten")
    n_in = 15 * 120
    for _ in range(2):
        p.dense(256, n_in)
        p.bn(256, axis=[1])
        p.simple("Activation", activation="relu")
        p.simple("Dropout", rate=0.4)
        n_in = 256
    trunk = p.last
    dev = p.dense(1, 256, inputs=[trunk], name="Dense_Dev")
    hk = p.dense(1, 256, inputs=[trunk], name="Dense_Hk")
    outputs = [dev, hk]
    write_keras2(
        p.plan,
        (249, 4),
        outputs,
        d / "model_files" / "DeepSTARR.model.json",
        d / "model_files" / "DeepSTARR.model.h5",
        keras_class="Functional",
    )
    _write_yaml(
        d / "model.yaml",
        {
            "defined_as": "kipoi.model.KerasModel",
            "args": {"arch": "model_files/DeepSTARR.model.json", "weights": "model_files/DeepSTARR.model.h5"},
            "default_dataloader": _seq_dl(249, alphabet_axis=1, dummy_axis=2, alphabet="ACGT", ignore_targets=False),
            "info": {"authors": [{"name": "kipoi-dfim zoo harness"}], "doc": "DeepSTARR fixture (random weights)"},
            "schema": {
                "inputs": {"shape": "(249,4,1)", "doc": "DNA sequence"},
                "targets": {"shape": "(2,)", "doc": "Developmental and housekeeping enhancer activity"},
            },
        },
    )
    plan = p.plan
    return Fixture(
        "DeepSTARR",
        d,
        "keras",
        249,
        ["0", "1"],
        numpy_oracle=lambda x: numpy_forward(plan, x, outputs),
        sigmoid_output=False,
        notes=["Keras 2.7 JSON + h5, 2 outputs"],
    )


def build_deepbind(root: Path, seed: int = 0) -> Fixture:
    """DeepBind (Alipanahi et al. 2015) as converted for the zoo: ``type: keras``, Keras 2 arch JSON + weights
    HDF5, ``custom_objects`` file, ``backend: tensorflow``; input (101, 4); one motif-scanning Conv1D applied
    to the sequence and (shared weights) to a second strand, rectified, global max-pooled, merged by Maximum,
    then Dense 32 ReLU and a sigmoid output. The second strand here is a second convolution output rather than
    a ``Lambda`` reverse complement (a Lambda's marshalled Python code cannot be rebuilt by any converter)."""
    from keras_plan import Planner, numpy_forward, write_keras2

    d = root / "DeepBind" / "Homo_sapiens" / "TF" / "D00817.001_ChIP-seq_TBP"
    d.mkdir(parents=True, exist_ok=True)
    (d / "custom_keras_objects.py").write_text("import tensorflow as tf\n\nOBJECTS = {'tf': tf}\n")
    p = Planner(seed)
    strand = p.conv(4, 1, 4, name="strand_mix")  # a 1x1 linear map standing in for the second strand
    motif = p.conv(16, 24, 4, activation="relu", inputs=["input_1"], name="motif_scan")
    p.simple("GlobalMaxPooling1D", inputs=[motif], name="pool_fwd")
    p.add("Conv1D", {}, inputs=[strand], name="motif_scan__call1")
    p.simple("GlobalMaxPooling1D", inputs=["motif_scan__call1"], name="pool_rev")
    p.simple("Maximum", inputs=["pool_fwd", "pool_rev"], name="strand_max")
    p.dense(32, 16, activation="relu")
    p.dense(1, 32, activation="sigmoid")
    outputs = [p.last]
    write_keras2(p.plan, (101, 4), outputs, d / "model_files" / "arch.json", d / "model_files" / "weights.h5")
    _write_yaml(
        d / "model.yaml",
        {
            "type": "keras",
            "args": {
                "arch": "model_files/arch.json",
                "weights": "model_files/weights.h5",
                "custom_objects": "custom_keras_objects.py",
                "backend": "tensorflow",
                "image_dim_ordering": "tf",
            },
            "default_dataloader": _seq_dl(101),
            "info": {"authors": [{"name": "kipoi-dfim zoo harness"}], "doc": "DeepBind fixture (random weights)"},
            "schema": {
                "inputs": {"name": "seq", "special_type": "DNASeq", "shape": "(101, 4)", "doc": "DNA"},
                "targets": {"name": "binding_prob", "shape": "(1, )", "doc": "binding probability"},
            },
        },
    )
    plan = p.plan
    return Fixture(
        "DeepBind",
        d,
        "keras",
        101,
        ["0"],
        numpy_oracle=lambda x: numpy_forward(plan, x, outputs),
        notes=["Keras 2 JSON + h5, shared layer"],
    )


def build_pwm_hocomoco(root: Path, seed: int = 0) -> Fixture:
    """pwm_HOCOMOCO: ``type: keras`` with only ``weights``, a Keras 2.2 full-model HDF5 (Keras 3 cannot read
    it; the loader rebuilds it from the file's ``model_config``); a PWM log-odds Conv1D and its reverse
    complement, Maximum, GlobalMaxPooling1D; input (None, 4) and a SeqIntervalDl without ``auto_resize_len``:
    the API needs ``seq_len=`` and the CLI ``--seq-len`` (the harness passes 100 to both)."""
    from keras_plan import Planner, numpy_forward, write_keras2

    d = root / "pwm_HOCOMOCO" / "human" / "AHR"
    d.mkdir(parents=True, exist_ok=True)
    p = Planner(seed)
    pwm = np.log(p.rng.dirichlet(np.ones(4), 9) / 0.25).astype(np.float32)  # (9, 4) log-odds
    w = pwm[:, :, None]
    w_rc = pwm[::-1, ::-1].copy()[:, :, None]
    cfg = {
        "filters": 1,
        "kernel_size": [9],
        "strides": [1],
        "padding": "valid",
        "data_format": "channels_last",
        "dilation_rate": [1],
        "activation": "linear",
        "use_bias": False,
    }
    p.add("Conv1D", cfg, [w], name="pwm_fwd", wnames=("kernel",))
    p.add("Conv1D", cfg, [w_rc], inputs=["input_1"], name="pwm_rc", wnames=("kernel",))
    p.simple("Maximum", inputs=["pwm_fwd", "pwm_rc"], name="best_strand")
    p.simple("GlobalMaxPooling1D", name="best_match")
    outputs = [p.last]
    write_keras2(p.plan, (None, 4), outputs, None, d / "model_files" / "model.h5")
    _write_yaml(
        d / "model.yaml",
        {
            "type": "keras",
            "args": {"weights": "model_files/model.h5", "backend": "tensorflow", "image_dim_ordering": "tf"},
            "default_dataloader": {"defined_as": "kipoiseq.dataloaders.SeqIntervalDl"},
            "info": {"authors": [{"name": "kipoi-dfim zoo harness"}], "doc": "pwm_HOCOMOCO fixture"},
            "schema": {
                "inputs": {"name": "seq", "special_type": "DNASeq", "shape": "(None, 4)", "doc": "DNA"},
                "targets": {"name": "pwm_match", "shape": "(1, )", "doc": "best PWM match log-odds"},
            },
        },
    )
    plan = p.plan
    return Fixture(
        "pwm_HOCOMOCO",
        d,
        "keras",
        100,
        ["0"],
        numpy_oracle=lambda x: numpy_forward(plan, x, outputs),
        sigmoid_output=False,
        load_kw={"seq_len": 100},
        notes=["Keras 2.2 full-model h5, (None, 4)"],
    )


KERAS_BUILDERS = {
    "DeepSTARR": build_deepstarr,
    "DeepBind": build_deepbind,
    "pwm_HOCOMOCO": build_pwm_hocomoco,
}


def _keras_fixture(
    name: str,
    d: Path,
    p,
    input_shape: tuple,
    outputs: list[str],
    descr: dict,
    targets: list[str],
    note: str,
    full_model: bool = False,
    sigmoid: bool = True,
    keras_class: str = "Model",
    **kw,
) -> Fixture:
    """Write the plan as JSON + weights (or a full-model h5) and return the fixture with its numpy oracle."""
    from keras_plan import numpy_forward, write_keras2

    files = d / "model_files"
    arch = None if full_model else files / "model.json"
    write_keras2(p.plan, input_shape, outputs, arch, files / ("model.h5" if full_model else "weights.h5"),
                 keras_class=keras_class)
    _write_yaml(d / "model.yaml", descr)
    plan = p.plan
    return Fixture(
        name,
        d,
        "keras",
        kw.pop("seq_len", input_shape[0]),
        targets,
        numpy_oracle=lambda x: numpy_forward(plan, x, outputs),
        sigmoid_output=sigmoid,
        notes=[note],
        **kw,
    )


def _info(name: str) -> dict:
    return {"authors": [{"name": "kipoi-dfim zoo harness"}], "doc": f"{name} fixture (random weights)"}


def build_deepflybrain(root: Path, seed: int = 0) -> Fixture:
    """DeepFlyBrain (Janssens et al. 2022): ``defined_as: kipoi.model.KerasModel``, Keras 2 arch JSON + HDF5,
    input (500, 4), ``default_dataloader: .`` (a dataloader.py one-hot encoding ACGT); Conv1D 1024 x 24 ReLU,
    MaxPooling1D 12, TimeDistributed(Dense 128 ReLU), Bidirectional(LSTM 128, return_sequences), Flatten,
    Dense 256 ReLU, Dense 81 sigmoid (topics)."""
    from keras_plan import Planner

    d = root / "DeepFlyBrain"
    d.mkdir(parents=True, exist_ok=True)
    p = Planner(seed)
    p.conv(1024, 24, 4, activation="relu")
    p.simple("MaxPooling1D", pool_size=[12], strides=[12], padding="valid")
    p.simple("Dropout", rate=0.5)
    p.time_dense(128, 1024, activation="relu")
    p.bilstm(128, 128)
    p.simple("Dropout", rate=0.5)
    p.simple("Flatten")
    p.dense(256, 39 * 256, activation="relu")
    p.simple("Dropout", rate=0.5)
    p.dense(81, 256, activation="sigmoid")
    (d / "dataloader.yaml").write_text(
        yaml.safe_dump(
            {
                "defined_as": "dataloader.MyDataset",
                "args": {"intervals_file": {"doc": "bed3"}, "fasta_file": {"doc": "fasta"}},
                "output_schema": {"inputs": [{"shape": "(500, 4)", "doc": "one-hot DNA"}]},
            }
        )
    )
    descr = {
        "defined_as": "kipoi.model.KerasModel",
        "args": {"arch": "model_files/model.json", "weights": "model_files/weights.h5"},
        "default_dataloader": ".",
        "info": _info("DeepFlyBrain"),
        "schema": {
            "inputs": [{"shape": "(500, 4)", "doc": "DNA sequence"}],
            "targets": {"name": "topic", "shape": "(81,)", "doc": "topics"},
        },
    }
    return _keras_fixture(
        "DeepFlyBrain", d, p, (500, 4), [p.last], descr, [str(i) for i in range(81)], "Keras 2 JSON + h5, BiLSTM"
    )


def build_labranchor(root: Path, seed: int = 0) -> Fixture:
    """labranchor (Paggi & Bejerano 2018): ``type: keras`` with only ``weights`` (a Keras 2.0 full-model h5),
    input named ``bidirectional_1_input`` (70, 4); Bidirectional(LSTM 32, return_sequences), Dropout,
    TimeDistributed(Dense 1 sigmoid): a branchpoint probability for each of the 70 positions."""
    from keras_plan import Planner

    d = root / "labranchor"
    d.mkdir(parents=True, exist_ok=True)
    p = Planner(seed)
    p.bilstm(32, 4)
    p.simple("Dropout", rate=0.2)
    p.time_dense(1, 64, activation="sigmoid")
    p.simple("Flatten")
    descr = {
        "type": "keras",
        "args": {"weights": "model_files/model.h5", "backend": "tensorflow", "image_dim_ordering": "tf"},
        "info": _info("labranchor"),
        "schema": {
            "inputs": {"bidirectional_1_input": {"shape": "(70, 4)", "special_type": "DNASeq", "doc": "one-hot RNA"}},
            "targets": {"shape": "(70, )", "doc": "branchpoint probability per position"},
        },
    }
    fx = _keras_fixture(
        "labranchor",
        d,
        p,
        (70, 4),
        [p.last],
        descr,
        [str(i) for i in range(70)],
        "Keras 2.0 full-model h5, BiLSTM",
        full_model=True,
    )
    return fx


def build_mpra_dragonn(root: Path, seed: int = 0) -> Fixture:
    """MPRA-DragoNN/ConvModel (Movva et al. 2019): ``defined_as: kipoi.model.KerasModel``, Keras 2 JSON + h5,
    (145, 4), SeqIntervalDl ACGT alphabet_axis 1; 3 x (Conv1D 120 x 5, BatchNormalization, ReLU, Dropout),
    Flatten, Dense 12 linear (12 MPRA tasks)."""
    from keras_plan import Planner

    d = root / "MPRA-DragoNN" / "ConvModel"
    d.mkdir(parents=True, exist_ok=True)
    p = Planner(seed)
    c_in, n = 4, 145
    for _ in range(3):
        p.conv(120, 5, c_in)
        p.bn(120, axis=-1)
        p.simple("Activation", activation="relu")
        p.simple("Dropout", rate=0.1)
        c_in, n = 120, n - 4
    p.simple("Flatten")
    p.dense(12, n * 120)
    descr = {
        "defined_as": "kipoi.model.KerasModel",
        "args": {"arch": "model_files/model.json", "weights": "model_files/weights.h5"},
        "default_dataloader": _seq_dl(145, alphabet="ACGT", alphabet_axis=1, ignore_targets=False),
        "info": _info("MPRA-DragoNN"),
        "schema": {
            "inputs": {"shape": "(145,4)", "doc": "one-hot ACGT"},
            "targets": {"shape": "(12,)", "doc": "12 MPRA tasks"},
        },
    }
    return _keras_fixture(
        "MPRA-DragoNN/ConvModel",
        d,
        p,
        (145, 4),
        [p.last],
        descr,
        [str(i) for i in range(12)],
        "Keras 2 JSON + h5",
        sigmoid=False,
    )


OPTIMUS_CLASS = '''from kipoi.model import BaseModel
from keras.models import load_model


class PostProcKerasmodel(BaseModel):
    """A Keras model followed by the inverse of a standard scaler (the zoo's Optimus_5Prime class)."""

    def __init__(self, weights, postproc_mean, postproc_sd):
        self.model = load_model(weights)
        self.postproc_mean = postproc_mean
        self.postproc_sd = postproc_sd

    def predict_on_batch(self, inputs):
        return self.model.predict_on_batch(inputs) * self.postproc_sd + self.postproc_mean
'''


def build_optimus(root: Path, seed: int = 0) -> Fixture:
    """Optimus_5Prime (Sample et al. 2019): ``defined_as: model.PostProcKerasmodel`` (the zoo's own class that
    rescales the network output by ``* sd + mean``), a Keras 2.1 full-model h5, input (50, 4); 3 x Conv1D
    120 x 8 same ReLU, Flatten, Dense 40 ReLU, Dropout, Dense 1. The network is served and the skipped
    post-processing is reported."""
    from keras_plan import Planner

    d = root / "Optimus_5Prime"
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.py").write_text(OPTIMUS_CLASS)
    p = Planner(seed)
    c_in = 4
    for _ in range(3):
        p.conv(120, 8, c_in, padding="same", activation="relu")
        c_in = 120
    p.simple("Flatten")
    p.dense(40, 50 * 120, activation="relu")
    p.simple("Dropout", rate=0.2)
    p.dense(1, 40)
    descr = {
        "defined_as": "model.PostProcKerasmodel",
        "args": {"weights": "model_files/model.h5", "postproc_mean": 5.58621521, "postproc_sd": 1.34657403},
        "default_dataloader": ".",
        "info": _info("Optimus_5Prime"),
        "schema": {
            "inputs": {"shape": "(50, 4)", "doc": "one-hot 5' UTR"},
            "targets": {"shape": "(1,)", "doc": "mean ribosome load"},
        },
    }
    return _keras_fixture(
        "Optimus_5Prime",
        d,
        p,
        (50, 4),
        [p.last],
        descr,
        ["0"],
        "custom class + Keras 2.1 full-model h5",
        full_model=True,
        sigmoid=False,
    )


def build_deepcpg_dna(root: Path, seed: int = 0) -> Fixture:
    """DeepCpG_DNA (Angermueller et al. 2017): ``type: keras``, Keras 2 JSON + weights h5, input ``dna``
    (1001, 4); Conv1D 128 x 11 ReLU, MaxPooling1D 4, Conv1D 256 x 3 ReLU, MaxPooling1D 2, Flatten, Dense 128
    ReLU, Dropout, one Dense 1 sigmoid output per cell (``cpg/<cell>``), the schema naming each output."""
    from keras_plan import Planner

    d = root / "DeepCpG_DNA" / "Hou2016_HepG2_dna"
    d.mkdir(parents=True, exist_ok=True)
    p = Planner(seed)
    p.conv(128, 11, 4, activation="relu")
    p.simple("MaxPooling1D", pool_size=[4], strides=[4], padding="valid")
    p.conv(256, 3, 128, activation="relu")
    p.simple("MaxPooling1D", pool_size=[2], strides=[2], padding="valid")
    p.simple("Flatten")
    p.dense(128, 122 * 256, activation="relu")
    p.simple("Dropout", rate=0.3)
    trunk = p.last
    cells = ["HepG2_1", "HepG2_2", "HepG2_3"]
    outs = [p.dense(1, 128, activation="sigmoid", inputs=[trunk], name=f"cpg_{c}") for c in cells]
    descr = {
        "type": "keras",
        "args": {
            "arch": "model_files/model.json",
            "weights": "model_files/weights.h5",
            "backend": "tensorflow",
            "image_dim_ordering": "tf",
        },
        "default_dataloader": ".",
        "info": _info("DeepCpG_DNA"),
        "schema": {
            "inputs": {"dna": {"shape": "(1001, 4)", "special_type": "DNASeq", "doc": "DNA"}},
            "targets": {f"cpg/{c}": {"shape": "(1,)", "doc": "methylation"} for c in cells},
        },
    }
    return _keras_fixture(
        "DeepCpG_DNA", d, p, (1001, 4), outs, descr, [f"cpg/{c}" for c in cells], "Keras 2 JSON + h5, 3 named outputs"
    )


KERAS_BUILDERS.update(
    {
        "DeepFlyBrain": build_deepflybrain,
        "labranchor": build_labranchor,
        "MPRA-DragoNN/ConvModel": build_mpra_dragonn,
        "Optimus_5Prime": build_optimus,
        "DeepCpG_DNA": build_deepcpg_dna,
    }
)


def build_scbasset(root: Path, seed: int = 0) -> Fixture:
    """scbasset (Yuan & Kelley 2022): ``type: keras``, tf.keras 2.8 ``Functional`` JSON (model.json) + weights,
    ``custom_objects: custom_objects.py`` (GELU, StochasticReverseComplement with two outputs, StochasticShift,
    SwitchReverse reading output 1 of the reverse-complement layer); input (1344, 4); 7 conv blocks (GELU,
    Conv1D same without bias, BatchNormalization axis [2], MaxPooling1D same), a 1x1 conv block, Reshape
    (1, 1792), Dense 32 block, Dense 2034 sigmoid; target names from ``column_labels: [buen_cells.csv]``."""
    from keras_plan import Planner

    d = root / "scbasset"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(TEMPLATES / "scbasset_custom_objects.py", d / "custom_objects.py")
    names = _labels(d / "buen_cells.csv", "BM1077-cell", 2034)
    p = Planner(seed)
    rc = p.simple("StochasticReverseComplement", name="stochastic_reverse_complement")
    p.simple("StochasticShift", shift_max=3, pad="uniform", name="stochastic_shift")
    c_in, n = 4, 1344
    blocks = [(288, 17, 3), (288, 5, 2), (323, 5, 2), (363, 5, 2), (407, 5, 2), (456, 5, 2), (512, 5, 2)]
    for filters, k, pool in blocks:
        p.simple("GELU")
        p.conv(filters, k, c_in, padding="same")
        p.plan[-1].config["use_bias"] = False
        p.plan[-1].weights = p.plan[-1].weights[:1]
        p.bn(filters, axis=[2])
        p.simple("MaxPooling1D", pool_size=[pool], strides=[pool], padding="same")
        c_in, n = filters, -(-n // pool)
    p.simple("GELU")
    p.conv(256, 1, c_in, padding="same")
    p.plan[-1].config["use_bias"] = False
    p.plan[-1].weights = p.plan[-1].weights[:1]
    p.bn(256, axis=[2])
    p.simple("GELU")
    p.simple("Reshape", target_shape=[1, n * 256])
    p.dense(32, n * 256)
    p.plan[-1].config["use_bias"] = False
    p.plan[-1].weights = p.plan[-1].weights[:1]
    p.bn(32, axis=[2])
    p.simple("Dropout", rate=0.2)
    p.simple("GELU")
    p.dense(2034, 32, activation="sigmoid")
    p.simple("SwitchReverse", inputs=[p.last, f"{rc}#1"], name="switch_reverse")
    p.simple("Flatten")
    descr = {
        "type": "keras",
        "args": {
            "arch": "model_files/model.json",
            "weights": "model_files/weights.h5",
            "custom_objects": "custom_objects.py",
        },
        "default_dataloader": _seq_dl(1344, alphabet_axis=1, dtype="np.float32"),
        "info": _info("scbasset"),
        "schema": {
            "inputs": {"name": "seq", "shape": "(1344,4)", "special_type": "DNASeq", "doc": "DNA"},
            "targets": {
                "name": "reads",
                "shape": "(2034, )",
                "doc": "accessibility",
                "column_labels": ["buen_cells.csv"],
            },
        },
    }
    return _keras_fixture(
        "scbasset", d, p, (1344, 4), [p.last], descr, names, "tf.keras 2.8 JSON + h5, custom layers",
        keras_class="Functional",
    )


KERAS_BUILDERS["scbasset"] = build_scbasset


def build_deepmel(root: Path, seed: int = 0) -> Fixture:
    """DeepMEL (Minnoye et al. 2020): ``defined_as: kipoi.model.KerasModel``, Keras 2 JSON + HDF5, TWO inputs
    (500, 4): the sequence and its reverse complement (the zoo's dataloader.py feeds ``seq[::-1, ::-1]``);
    one strand tower shared by both (Conv1D 128 x 20 ReLU, MaxPooling1D 10, TimeDistributed(Dense 128 ReLU),
    Bidirectional(LSTM 128), Flatten, Dense 256 ReLU), the two towers concatenated, Dense 24 sigmoid."""
    from keras_plan import Planner, numpy_forward, write_keras2

    d = root / "DeepMEL" / "DeepMEL"
    d.mkdir(parents=True, exist_ok=True)
    p = Planner(seed)
    for strand, src in ((0, "input_1"), (1, "input_2")):
        sfx = "" if strand == 0 else "__call1"
        if strand == 0:
            p.conv(128, 20, 4, activation="relu", inputs=[src], name="conv1d_1")
            p.simple("MaxPooling1D", pool_size=[10], strides=[10], padding="valid", name="max_pooling1d_1")
            p.time_dense(128, 128, activation="relu", name="time_distributed_1")
            p.bilstm(128, 128, name="bidirectional_1")
            p.simple("Flatten", name="flatten_1")
            p.dense(256, 48 * 256, activation="relu", name="dense_1")
        else:
            prev = src
            for layer in ("conv1d_1", "max_pooling1d_1", "time_distributed_1", "bidirectional_1", "flatten_1",
                          "dense_1"):
                p.add(next(q.cls for q in p.plan if q.name == layer),
                      next(q.config for q in p.plan if q.name == layer), inputs=[prev], name=layer + sfx)
                prev = layer + sfx
    p.simple("Concatenate", axis=-1, inputs=["dense_1", "dense_1__call1"], name="concatenate_1")
    p.dense(24, 512, activation="sigmoid", name="dense_2")
    outputs = [p.last]
    write_keras2(p.plan, [(500, 4), (500, 4)], outputs, d / "model_files" / "model.json",
                 d / "model_files" / "weights.h5")
    (d / "dataloader.yaml").write_text(yaml.safe_dump({
        "defined_as": "dataloader.MyDataset",
        "args": {"intervals_file": {"doc": "bed3"}, "fasta_file": {"doc": "fasta"}},
        "output_schema": {"inputs": [{"shape": "(500, 4)", "doc": "DNA"}, {"shape": "(500, 4)", "doc": "RC"}]}}))
    _write_yaml(d / "model.yaml", {
        "defined_as": "kipoi.model.KerasModel",
        "args": {"arch": "model_files/model.json", "weights": "model_files/weights.h5"},
        "default_dataloader": ".", "info": _info("DeepMEL"),
        "schema": {"inputs": [{"shape": "(500, 4)", "doc": "DNA sequence"},
                              {"shape": "(500, 4)", "doc": "Reverse-complemented DNA sequence"}],
                   "targets": {"name": "topic", "shape": "(24,)", "doc": "Topic Prediction (4-MEL, 7-MES)"}},
    })
    plan = p.plan
    return Fixture("DeepMEL", d, "keras", 500, [str(i) for i in range(24)],
                   numpy_oracle=lambda x: numpy_forward(plan, [x, x[:, ::-1, ::-1]], outputs),
                   notes=["Keras 2 JSON + h5, (fwd, rc) inputs, shared BiLSTM tower"])


KERAS_BUILDERS["DeepMEL"] = build_deepmel


# ------------------------------------------------------------------------- the zoo's own files (optional)
ZOO_TORCH = {  # entry -> top-level directory to copy (module files and label files live one level up)
    "Basset": "Basset",
    "DeepSEA/predict": "DeepSEA",
    "DeepSEA/variantEffects": "DeepSEA",
    "DeepSEA/beluga": "DeepSEA",
}


def build_from_zoo(zoo: Path, name: str, root: Path, seed: int = 0) -> Fixture:
    """A PyTorch zoo entry from a local kipoi/models checkout (``KIPOI_MODELS_DIR``), verbatim except that the
    weight URL becomes a local state dict of seeded random weights made by the zoo's own module file.

    The expectations (length, target names, alphabet) are read the way kipoi reads them, so the harness
    checks that kipoi-dfim reads the zoo's own yaml as kipoi does.
    """
    top = ZOO_TORCH[name]
    dst = root / "zoo_files" / top
    if not dst.exists():
        shutil.copytree(zoo / top, dst, ignore=shutil.ignore_patterns("*.ipynb", "test*", "*.h5"))
    d = root / "zoo_files" / name
    descr = yaml.safe_load((d / "model.yaml").read_text())
    args = descr["args"]
    args["weights"] = "model_files/random_weights.pth"
    mod = _import(d / args["module_file"])
    obj = getattr(mod, args.get("module_obj") or args["module_class"])
    if args.get("module_class"):
        obj = obj(**(args.get("module_kwargs") or {}))
    _randomise_torch(obj, seed)
    (d / "model_files").mkdir(exist_ok=True)
    import torch

    torch.save(obj.state_dict(), d / args["weights"])
    _write_yaml(d / "model.yaml", descr)
    schema = descr["schema"]
    shape = [int(v) for v in str(schema["inputs"]["shape"]).strip("() ").split(",") if v.strip()]
    labels_file = d / schema["targets"]["column_labels"][0]
    targets = [ln.rstrip() for ln in labels_file.read_text().splitlines() if ln.strip()]
    alphabet = (descr.get("default_dataloader") or {}).get("default_args", {}).get("alphabet", "ACGT")
    return Fixture(f"{name} (zoo files)", d, "pytorch", max(s for s in shape if s != 4), targets,
                   alphabet=alphabet, sigmoid_output=name != "DeepSEA/predict",
                   notes=["zoo's own yaml + module file"])
