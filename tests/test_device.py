"""Devices for PyTorch models and the batch size that halves on out-of-memory.

No GPU here: CUDA/MPS requests must fail with a one-line InputError naming --device, "auto" must resolve to
the CPU, and out-of-memory is injected into real small models (a forward pre-hook on a real nn.Conv1d, a
real Keras layer) that raise the frameworks' own out-of-memory exceptions above a row count. The oracle
for the halved runs is the same model at a small batch size, which never fails.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
from torch import nn

from kipoi_dfim.backend import load_model
from kipoi_dfim.backend.torch_ import resolve_device
from kipoi_dfim.errors import InputError

L = 20


def torch_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(4, 6, 5), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(6 * 8, 2))


def onehot(n: int, seed: int = 0) -> np.ndarray:
    return np.eye(4, dtype=np.float32)[np.random.default_rng(seed).integers(0, 4, (n, L))]


def test_auto_resolves_to_what_exists():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    m = load_model(torch_net(), seq_len=L, layout="(4,L)", device="cpu")
    assert m.device == torch.device("cpu") and next(m.raw_model.parameters()).device == m.device


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", "tpu", "gpu0"])
def test_unavailable_or_unknown_devices_are_input_errors(device):
    with pytest.raises(InputError, match=r"--device"):
        load_model(torch_net(), seq_len=L, layout="(4,L)", device=device)


def _oom_above(limit: int):
    def hook(module, args):
        if args[0].shape[0] > limit:
            raise torch.cuda.OutOfMemoryError(f"injected: {args[0].shape[0]} rows > {limit}")

    return hook


def test_torch_batch_size_halves_on_out_of_memory():
    x = onehot(40)
    oracle = load_model(torch_net(), seq_len=L, layout="(4,L)", batch_size=4, device="cpu")
    net = torch_net()
    net[0].register_forward_pre_hook(_oom_above(16))
    m = load_model(net, seq_len=L, layout="(4,L)", batch_size=64, device="cpu")
    np.testing.assert_allclose(m.predict(x), oracle.predict(x), rtol=1e-6, atol=1e-7)
    assert m.batch_size == 16  # 64 -> 32 -> 16 rows per pass
    np.testing.assert_allclose(m.gradient(x, 1), oracle.gradient(x, 1), rtol=1e-6, atol=1e-7)

    # DeepLIFT: the shared forward pass of 4 variants x (2 windows + 3 references) = 20 rows fails at first
    xs = np.stack([x[:4], x[4:8]], 1)
    refs = x[8:20].reshape(4, 3, L, 4)
    m.batch_size = 64
    got = m.deeplift_shared(xs, refs, [0, 1])
    assert m.batch_size == 16
    np.testing.assert_allclose(got, oracle.deeplift_shared(xs, refs, [0, 1]), rtol=1e-5, atol=1e-7)


def test_out_of_memory_with_one_row_is_raised():
    net = torch_net()
    m = load_model(net, seq_len=L, layout="(4,L)", batch_size=8, device="cpu")
    net[0].register_forward_pre_hook(_oom_above(0))  # after loading, which runs one row to count outputs
    with pytest.raises(torch.cuda.OutOfMemoryError):
        m.predict(onehot(3))
    assert m.batch_size == 1


class OomAbove(keras.layers.Layer):
    """Identity that raises TensorFlow's out-of-memory error for batches above ``limit`` rows."""

    def __init__(self, limit: int, **kw):
        super().__init__(**kw)
        self.limit = limit

    def call(self, x):
        if x.shape[0] is not None and x.shape[0] > self.limit:
            raise tf.errors.ResourceExhaustedError(None, None, f"injected: {x.shape[0]} rows")
        return x


def test_keras_batch_size_halves_on_resource_exhausted():
    keras.utils.set_random_seed(0)
    inp = keras.Input((L, 4))
    out = keras.layers.Dense(2)(keras.layers.Flatten()(OomAbove(10)(keras.layers.Conv1D(3, 5)(inp))))
    m = load_model(keras.Model(inp, out), batch_size=64)
    x = onehot(30, seed=1)
    got = m.predict(x)
    assert m.batch_size == 8
    m.batch_size = 4
    np.testing.assert_allclose(got, m.predict(x), rtol=1e-6, atol=1e-7)
