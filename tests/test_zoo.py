"""Serving the Kipoi zoo (issue 10): model.yaml forms, target files, layouts, encodings, Keras <= 2.2 files,
converter coverage, DeepLIFT for untraceable torch modules, and a fast subset of the zoo harness.

Oracles: kipoi 0.8.6 itself (``kipoi.get_model(dir, source="dir").predict_on_batch``) fed by kipoiseq's own
``ReorderedOneHot`` encoder; a plain numpy forward pass of the same weights (scripts/zoo/keras_plan.py); the
fx-graph DeepLIFT engine on a traceable twin of an untraceable module; summation-to-delta; finite differences.
The full table (Basset, DeepSEA, Beluga, ...) is `scripts/zoo/run_zoo.py --table docs/zoo.md` (slow).
"""

from __future__ import annotations

import contextlib
import io
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from kipoiseq.transforms import ReorderedOneHot
from torch import nn

import kipoi_dfim
from kipoi_dfim.backend.layouts import from_model_layout, layout_from_dataloader, layout_from_shape, to_model_layout
from kipoi_dfim.errors import UnsupportedModelError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "zoo"))

import run_zoo  # noqa: E402

L = 40

TORCH_MODULE = '''
import torch
from torch import nn


class LambdaBase(nn.Sequential):
    def __init__(self, fn, *args):
        super().__init__(*args)
        self.lambda_func = fn

    def forward_prepare(self, x):
        outs = [m(x) for m in self._modules.values()]
        return outs if outs else x


class Lambda(LambdaBase):
    def forward(self, x):
        return self.lambda_func(self.forward_prepare(x))


def _linear(n_in, n_out):
    return nn.Sequential(Lambda(lambda x: x.view(1, -1) if 1 == len(x.size()) else x), nn.Linear(n_in, n_out))


class Small(nn.Module):
    """torch7-converted style, (N, 4, 1, L) input: Lambda guards that torch.fx cannot trace."""

    def __init__(self, hidden="threshold"):
        super().__init__()
        act = {"threshold": nn.Threshold(0, 1e-6),  # torch7's ReLU
               "tanh": Lambda(lambda x: torch.tanh(x) if 1 < len(x.size()) else x),  # untraceable guard
               "tanh_traceable": Lambda(lambda x: torch.tanh(x))}[hidden]
        self.model = nn.Sequential(
            nn.Conv2d(4, 6, (1, 5)), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d((1, 3), (1, 3)),
            nn.Conv2d(6, 5, (1, 3)), act,
            Lambda(lambda x: x.view(x.size(0), -1)),
            _linear(5 * 10, 8), nn.ReLU(), _linear(8, 3), nn.Sigmoid(),
        )

    def forward(self, x):
        return self.model(x)
'''


def _write_torch_dir(d: Path, form: str, alphabet: str | None = None, hidden: str = "threshold",
                     seed: int = 0) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.py").write_text(TORCH_MODULE)
    (d / "names.txt").write_text("task_a\ntask_b\ntask_c\n")
    ns: dict = {}
    exec(compile(TORCH_MODULE, str(d / "model.py"), "exec"), ns)  # noqa: S102 - our own module text
    torch.manual_seed(seed)
    net = ns["Small"](hidden)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), d / "weights.pth")
    args = {"module_file": "model.py", "module_class": "Small", "module_kwargs": {"hidden": hidden},
            "weights": "weights.pth"}
    dl_args = {"auto_resize_len": L, "alphabet_axis": 0, "dummy_axis": 1, "dtype": "np.float32"}
    if alphabet:
        dl_args["alphabet"] = alphabet
    descr = {"type": "pytorch"} if form == "type" else {"defined_as": "kipoi.model.PyTorchModel"}
    descr.update({
        "args": args,
        "default_dataloader": {"defined_as": "kipoiseq.dataloaders.SeqIntervalDl", "default_args": dl_args},
        "info": {"authors": [{"name": "test"}], "doc": "test model"},
        "schema": {"inputs": {"name": "seq", "shape": f"(4, 1, {L})", "doc": "DNA"},
                   "targets": {"name": "p", "shape": "(3, )", "doc": "p", "column_labels": ["names.txt"]}},
    })
    (d / "model.yaml").write_text(yaml.safe_dump(descr, sort_keys=False))
    return d


def _seqs(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGT"), L)) for _ in range(n)]


def _acgt(seqs: list[str]) -> np.ndarray:
    return np.stack([ReorderedOneHot(alphabet="ACGT", dtype=np.float32)(s) for s in seqs])


def _kipoi(d: Path):
    import kipoi

    with contextlib.redirect_stdout(io.StringIO()):
        return kipoi.get_model(str(d), source="dir")


# ------------------------------------------------------------------------------ (a, b, g) yaml, names, encoding
@pytest.mark.parametrize("form", ["type", "defined_as"])
def test_both_yaml_forms_load_with_target_file_and_match_kipoi(tmp_path, form):
    d = _write_torch_dir(tmp_path / form, form)
    m = kipoi_dfim.load_model(str(d), output="raw")
    assert m.seq_len == L and m.targets == ["task_a", "task_b", "task_c"] and m.layout == "(4,1,L)"
    seqs = _seqs(5, 1)
    enc = ReorderedOneHot(alphabet="ACGT", dtype=np.float32, alphabet_axis=0, dummy_axis=1)
    expected = _kipoi(d).predict_on_batch(np.stack([enc(s) for s in seqs]))
    np.testing.assert_allclose(m.predict(_acgt(seqs)), expected, rtol=1e-6, atol=1e-7)


def test_agct_model_same_predictions_via_adapter_and_kipoi(tmp_path):
    """The dataloader declares AGCT: our ACGT input must be re-ordered exactly as kipoiseq encodes it."""
    d = _write_torch_dir(tmp_path / "agct", "defined_as", alphabet="AGCT")
    m = kipoi_dfim.load_model(str(d), output="raw")
    assert m.alphabet == "AGCT"
    seqs = _seqs(6, 2)
    enc = ReorderedOneHot(alphabet="AGCT", dtype=np.float32, alphabet_axis=0, dummy_axis=1)
    expected = _kipoi(d).predict_on_batch(np.stack([enc(s) for s in seqs]))
    np.testing.assert_array_equal(m.predict(_acgt(seqs)), expected)
    # the encoding matters for this model: ignoring it would give other numbers
    plain = kipoi_dfim.load_model(str(d), output="raw", alphabet="ACGT")
    assert np.abs(plain.predict(_acgt(seqs)) - expected).max() > 1e-3


@pytest.mark.parametrize("alphabet_axis,dummy_axis", [(1, None), (0, None), (0, 1), (0, 2), (1, 2), (1, 0),
                                                      (2, 0), (2, 1)])
def test_layouts_from_dataloader_args_match_kipoiseq(alphabet_axis, dummy_axis):
    seqs = _seqs(2, 3)
    enc = ReorderedOneHot(alphabet="ACGT", dtype=np.float32, alphabet_axis=alphabet_axis, dummy_axis=dummy_axis)
    expected = np.stack([enc(s) for s in seqs])
    layout = layout_from_dataloader(alphabet_axis, dummy_axis)
    assert layout_from_shape(expected.shape[1:]) == (layout, L)
    np.testing.assert_array_equal(to_model_layout(_acgt(seqs), layout), expected)
    np.testing.assert_array_equal(from_model_layout(expected, layout), _acgt(seqs))


def test_layout_with_several_singletons_round_trips():
    x = _acgt(_seqs(2, 4))
    for shape in [(1, 1, L, 4), (4, 1, L, 1), (1, L, 1, 4)]:
        layout, n = layout_from_shape(shape)
        assert n == L
        y = to_model_layout(x, layout)
        assert y.shape[1:] == shape
        np.testing.assert_array_equal(from_model_layout(y, layout), x)


# ------------------------------------------------------------------------------ (f) untraceable torch modules
def _twin(module: nn.Module) -> nn.Sequential:
    """The same layers with the Lambda reshapes replaced by nn.Flatten (traceable by torch.fx) and
    nn.Threshold(0, 1e-6) by nn.ReLU (the fx engine has no Threshold rule; they differ by < 1e-6)."""
    layers = []
    for sub in module.model:
        if isinstance(sub, nn.Threshold):
            layers.append(nn.ReLU())
        elif type(sub).__name__ == "Lambda":
            layers.append(nn.Flatten())
        elif isinstance(sub, nn.Sequential):
            layers.append(sub[1])
        else:
            layers.append(sub)
    return nn.Sequential(*layers)


def test_module_rule_deeplift_equals_fx_engine_on_traceable_twin(tmp_path):
    """The zoo's untraceable torch7 model: the fx engine (its Lambda guards as probed leaves) and the
    module-hook engine both equal the fx engine on a twin without the guards."""
    from kipoi_dfim.backend.deeplift_torch_modules import deeplift_multipliers_modules
    from kipoi_dfim.backend.torch_trace import trace

    d = _write_torch_dir(tmp_path / "m", "type")
    m = kipoi_dfim.load_model(str(d))
    assert trace(m._scored(m.output))[1] == {"module.model.7.0", "module.model.9.0"}  # the two guards
    assert m.activation == "sigmoid"  # the final nn.Sigmoid is found although fx cannot trace the module
    twin = _twin(m.raw_model.module)
    ref_model = kipoi_dfim.load_model(twin, seq_len=L, layout="(4,1,L)", targets=m.targets)
    x = _acgt(_seqs(3, 5))
    rng = np.random.default_rng(0)
    refs = np.stack([np.stack([s[rng.permutation(L)] for _ in range(4)]) for s in x])
    np.testing.assert_allclose(m.predict(x), ref_model.predict(x), rtol=1e-5, atol=1e-6)
    for target in (0, 2):
        got = m.deeplift_multipliers(x, refs, target)
        want = ref_model.deeplift_multipliers(x, refs, target)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        hooks = deeplift_multipliers_modules(m._scored(m.output), x, refs, target, why="test")
        np.testing.assert_allclose(hooks, want, rtol=1e-4, atol=1e-5)
        total = (got.astype(np.float64) * (x[:, None] - refs)).sum((2, 3))
        delta = m.predict(x)[:, target, None] - m.predict(refs.reshape(-1, L, 4))[:, target].reshape(3, 4)
        np.testing.assert_allclose(total, delta, rtol=1e-4, atol=1e-4)


def test_hidden_functional_nonlinearity_trips_the_check(tmp_path):
    """tanh inside a Lambda is invisible to module rules: DeepLIFT must raise, other methods still work."""
    d = _write_torch_dir(tmp_path / "tanh", "type", hidden="tanh")
    m = kipoi_dfim.load_model(str(d))
    x = _acgt(_seqs(2, 6))
    refs = np.stack([np.stack([s[::-1] for _ in range(2)]) for s in x])
    with pytest.raises(UnsupportedModelError, match=r"summation-to-delta.*Lambda"):
        m.deeplift_multipliers(x, refs, 0)
    from kipoi_dfim.attribution import importance

    assert np.isfinite(importance(m, x, 0, "grad_input")).all()
    assert np.isfinite(importance(m, x, 0, "ism")).all()


# ------------------------------------------------------------------------------ (h) custom model class
def test_custom_model_class_post_processing_is_reported(tmp_path):
    """Optimus_5Prime-style ``defined_as: model.PostProcKerasmodel``: the network is served, the skipped
    ``out * sd + mean`` is reported (warning + ``.notes``)."""
    import keras

    inp = keras.Input((50, 4))
    out = keras.layers.Dense(1)(keras.layers.Flatten()(keras.layers.Conv1D(3, 5, activation="relu")(inp)))
    keras.Model(inp, out).save(tmp_path / "w.h5")
    (tmp_path / "model.py").write_text(textwrap.dedent('''
        from kipoi.model import BaseModel


        class PostProc(BaseModel):
            def __init__(self, weights, postproc_mean, postproc_sd):
                from keras.models import load_model
                self.model = load_model(weights)
                self.mean, self.sd = postproc_mean, postproc_sd

            def predict_on_batch(self, x):
                return self.model.predict_on_batch(x) * self.sd + self.mean
    '''))
    (tmp_path / "model.yaml").write_text(yaml.safe_dump({
        "defined_as": "model.PostProc",
        "args": {"weights": "w.h5", "postproc_mean": 5.0, "postproc_sd": 1.5},
        "schema": {"inputs": {"shape": "(50, 4)"}, "targets": {"shape": "(1,)"}},
    }))
    with pytest.warns(UserWarning, match="post-processing"):
        m = kipoi_dfim.load_model(str(tmp_path))
    assert any("post-processing" in n for n in m.notes)


# ------------------------------------------------------------------------------ (d, e) Keras converter
def test_converter_error_names_an_unsupported_layer(tmp_path):
    from keras_plan import Planner, write_keras2

    p = Planner(0)
    p.conv(4, 3, 4)
    p.add("LSTM", {"units": 3}, name="my_lstm")
    write_keras2(p.plan, (20, 4), ["my_lstm"], tmp_path / "a.json", tmp_path / "w.h5")
    from kipoi_dfim.backend.keras_legacy import build_from_legacy

    with pytest.raises(UnsupportedModelError, match="my_lstm.*LSTM"):
        build_from_legacy(tmp_path / "a.json", tmp_path / "w.h5")


@pytest.mark.parametrize("name", ["DeepBind", "pwm_HOCOMOCO", "DeepSTARR"])
def test_zoo_harness_fast_subset(tmp_path, name):
    """Keras 2 JSON+h5 with a shared layer (DeepBind), a Keras 2.2 full-model h5 (pwm_HOCOMOCO), two outputs
    and tf.keras's list BatchNormalization axis (DeepSTARR): every check of the harness passes."""
    row = run_zoo.run_one(name, tmp_path)
    assert row["load_model"].startswith("ok"), row
    assert row["predictions"].startswith("ok") and "numpy: raw rel err" in row["predictions"], row
    assert row["gradient vs FD"].startswith("ok"), row
    assert row["DeepLIFT"].startswith(("ok", "raises: layer")), row
    assert row["other methods"].count(" ok") == 3, row
    # pwm_HOCOMOCO (variable length, no auto_resize_len) runs with the harness's --seq-len 100
    assert row["score-variants"].startswith("ok 7/7"), row


def test_custom_class_extending_kipoi_keras_model_loads_silently_and_matches_kipoi(tmp_path):
    """TREDNet-style ``defined_as: model.PhaseOneModel`` where the class only extends kipoi.model.KerasModel:
    served as that Keras model, no post-processing warning, same predictions as kipoi."""
    import warnings

    import keras

    inp = keras.Input((60, 4))
    h = keras.layers.MaxPooling1D(3)(keras.layers.Conv1D(5, 7, activation="relu")(inp))
    out = keras.layers.Dense(2, activation="sigmoid")(keras.layers.Flatten()(h))
    keras.Model(inp, out).save(tmp_path / "w.h5")
    (tmp_path / "model.py").write_text(
        "from kipoi.model import KerasModel\n\n\nclass PhaseOneModel(KerasModel):\n"
        "    def __init__(self, weights):\n        super().__init__(weights=weights)\n"
    )
    (tmp_path / "model.yaml").write_text(yaml.safe_dump({
        "defined_as": "model.PhaseOneModel", "args": {"weights": "w.h5"},
        "default_dataloader": {"defined_as": "kipoiseq.dataloaders.SeqIntervalDl",
                               "default_args": {"auto_resize_len": 60, "alphabet_axis": 1}},
        "info": {"authors": [{"name": "t"}], "doc": "t"},
        "schema": {"inputs": {"shape": "(60, 4)", "doc": "DNA"}, "targets": {"shape": "(2,)", "doc": "p"}},
    }))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        m = kipoi_dfim.load_model(str(tmp_path), output="raw")
    assert m.notes == [] and m.seq_len == 60
    rng = np.random.default_rng(7)
    seqs = ["".join(rng.choice(list("ACGT"), 60)) for _ in range(3)]
    x = np.stack([ReorderedOneHot(alphabet="ACGT", dtype=np.float32)(s) for s in seqs])
    np.testing.assert_allclose(m.predict(x), _kipoi(tmp_path).predict_on_batch(x), rtol=1e-5, atol=1e-6)


def _sig(v):
    return 1 / (1 + np.exp(-v))


def _gru_numpy(x, kernel, rec, bias, reset_after, hard):
    """Keras GRU (gates z, r, h) in float64 numpy; ``hard`` = Keras 2's hard_sigmoid for the gates."""
    act = (lambda v: np.clip(0.2 * v + 0.5, 0, 1)) if hard else _sig
    u = rec.shape[0]
    b_in, b_rec = (bias[0], bias[1]) if reset_after else (bias, np.zeros(3 * u))
    h = np.zeros((len(x), u))
    for t in range(x.shape[1]):
        xi = x[:, t] @ kernel + b_in
        hr = h @ rec + b_rec
        z = act(xi[:, :u] + hr[:, :u])
        r = act(xi[:, u : 2 * u] + hr[:, u : 2 * u])
        if reset_after:
            hh = np.tanh(xi[:, 2 * u :] + r * hr[:, 2 * u :])
        else:
            hh = np.tanh(xi[:, 2 * u :] + (r * h) @ rec[:, 2 * u :])
        h = z * h + (1 - z) * hh
    return h


@pytest.mark.parametrize("reset_after,hard", [(False, True), (True, False)])
def test_converted_gru_matches_numpy(tmp_path, reset_after, hard):
    """Keras 2.2 GRU (reset_after False, hard_sigmoid) and tf.keras GRU (reset_after True, sigmoid)."""
    from keras_plan import L as Layer
    from keras_plan import write_keras2

    from kipoi_dfim.backend.keras_legacy import build_from_legacy

    rng = np.random.default_rng(1)
    u = 5
    kernel, rec = rng.normal(0, 0.5, (4, 3 * u)), rng.normal(0, 0.5, (u, 3 * u))
    bias = rng.normal(0, 0.3, (2, 3 * u) if reset_after else 3 * u)
    cfg = {"units": u, "activation": "tanh", "recurrent_activation": "hard_sigmoid" if hard else "sigmoid",
           "reset_after": reset_after, "use_bias": True}
    plan = [Layer("gru_1", "GRU", cfg, ["input_1"],
                  [("gru_1/kernel:0", kernel), ("gru_1/recurrent_kernel:0", rec), ("gru_1/bias:0", bias)])]
    write_keras2(plan, (12, 4), ["gru_1"], tmp_path / "a.json", tmp_path / "w.h5")
    model = build_from_legacy(tmp_path / "a.json", tmp_path / "w.h5")
    x = _acgt(_seqs(3, 8))[:, :12]
    want = _gru_numpy(x.astype(np.float64), kernel, rec, bias, reset_after, hard)
    np.testing.assert_allclose(np.asarray(model(x)), want, rtol=1e-4, atol=1e-5)


def test_keras1_lstm_gate_order(tmp_path):
    """Keras 1 saved one (W, U, b) per gate in the order i, c, f, o: the converted LSTM equals a numpy LSTM
    with gates i, f, c, o built from the same arrays."""
    from keras_plan import L as Layer
    from keras_plan import _lstm, write_keras2

    from kipoi_dfim.backend.keras_legacy import build_from_legacy

    rng = np.random.default_rng(2)
    u = 4
    per_gate = {g: (rng.normal(0, 0.5, (4, u)), rng.normal(0, 0.5, (u, u)), rng.normal(0, 0.3, u)) for g in "icfo"}
    arrays = [(f"lstm_1_{k}_{g}", a) for g in "icfo" for k, a in zip("WUb", per_gate[g], strict=True)]
    cfg = {"output_dim": u, "activation": "tanh", "inner_activation": "hard_sigmoid", "return_sequences": False}
    plan = [Layer("lstm_1", "LSTM", cfg, ["input_1"], arrays)]
    write_keras2(plan, (10, 4), ["lstm_1"], tmp_path / "a.json", tmp_path / "w.h5")
    model = build_from_legacy(tmp_path / "a.json", tmp_path / "w.h5")
    x = _acgt(_seqs(2, 9))[:, :10].astype(np.float64)
    w = [np.concatenate([per_gate[g][j] for g in "ifco"], axis=-1) for j in range(3)]
    np.testing.assert_allclose(np.asarray(model(x.astype(np.float32))), _lstm(x, w, {}), rtol=1e-4, atol=1e-5)


def test_keras22_full_model_h5_that_keras3_cannot_read_falls_back_to_converter(tmp_path):
    """A Keras 2.2 full-model h5 with a Bidirectional LSTM (Keras 3 refuses its config): load_model rebuilds it
    from the file's model_config; predictions equal the numpy forward pass (Keras 2 hard_sigmoid gates)."""
    import keras
    from keras_plan import Planner, numpy_forward, write_keras2

    p = Planner(3)
    p.bilstm(6, 4)
    p.time_dense(1, 12, activation="sigmoid")
    p.simple("Flatten")
    f = tmp_path / "model.h5"
    write_keras2(p.plan, (15, 4), [p.last], None, f)
    with pytest.raises(Exception):  # noqa: B017 - Keras 3 raises TypeError/ValueError depending on version
        keras.models.load_model(f, compile=False)
    m = kipoi_dfim.load_model(str(f), output="raw")
    x = _acgt(_seqs(3, 11))[:, :15]
    np.testing.assert_allclose(m.predict(x), numpy_forward(p.plan, x.astype(np.float64), [p.last]),
                               rtol=1e-4, atol=1e-6)
