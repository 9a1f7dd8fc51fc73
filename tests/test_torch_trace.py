"""DeepLIFT on PyTorch modules torch.fx cannot trace as a whole (kipoi_dfim.backend.torch_trace): the zoo's
torch7-converted models, whose ``Lambda`` guards branch on ``len(x.size())``.

Oracles: the module-hook engine (rules keyed by module type, no fx graph: deeplift_torch_modules), a twin
written without the guards (plain fx), summation-to-delta, and the shared engine without a crop.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from test_deeplift_shared import inputs as shared_inputs  # tests/ is on sys.path under pytest

from kipoi_dfim.backend import deeplift_torch as dlt
from kipoi_dfim.backend import load_model
from kipoi_dfim.backend.deeplift_torch_modules import deeplift_multipliers_modules
from kipoi_dfim.backend.torch_trace import OpaqueLeafError, trace
from kipoi_dfim.errors import UnsupportedModelError

L = 60


class Lambda(nn.Module):
    """torch7's converter wrapper around a Python lambda."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def guard() -> Lambda:
    return Lambda(lambda x: x.view(1, -1) if 1 == len(x.size()) else x)  # untraceable: len() of a Proxy


def torch7_basset(act: type = nn.ReLU) -> nn.Module:
    """Basset as the zoo ships it, small: (B, 4, L, 1) input, (k, 1) convolutions and pools, batch norm,
    Lambda reshapes and guards, final sigmoid. ``act=Threshold``: DeepSEA's torch7 relu (not fused with
    the pools: the crop's plain pool links)."""
    torch.manual_seed(3)

    def relu():
        return nn.Threshold(0, 1e-6) if act is nn.Threshold else act()

    net = nn.Sequential(
        nn.Conv2d(4, 10, (7, 1)), nn.BatchNorm2d(10), relu(), nn.MaxPool2d((3, 1), (3, 1)),
        nn.Conv2d(10, 8, (5, 1)), relu(), nn.MaxPool2d((2, 1), (2, 1)),
        Lambda(lambda x: x.view(x.size(0), -1)),
        nn.Sequential(guard(), nn.Linear(8 * 7, 12)), nn.ReLU(),
        nn.Sequential(guard(), nn.Linear(12, 3)), nn.Sigmoid(),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def adapter(net: nn.Module, layout: str = "(4,L,1)"):
    model = load_model(net, seq_len=L, layout=layout, batch_size=16)
    return model, model._scored(model.output)


def hook_engine(module: nn.Module, x: np.ndarray, refs: np.ndarray, targets: list[int]) -> np.ndarray:
    """Hypothetical scores (N, K, T, L, 4) from the module-hook engine's multipliers."""
    from kipoi_dfim.attribution import hypothetical_scores

    n, k = x.shape[:2]
    out = np.zeros((n, k, len(targets), L, 4), np.float32)
    for w in range(k):
        for j, t in enumerate(targets):
            m = deeplift_multipliers_modules(module, x[:, w], refs, t, why="oracle")
            out[:, w, j] = hypothetical_scores(m, refs)
    return out


def test_guards_become_leaves_and_shared_engine_matches_hook_engine():
    model, module = adapter(torch7_basset())
    gm, opaque = trace(module)
    assert opaque == {"module.8.0", "module.10.0"}  # the guards; the flatten lambda traces
    x, refs = shared_inputs(3, 4, 0, length=L)
    want = hook_engine(module, x, refs, [0, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # summation-to-delta holds for every pair
        got = dlt.deeplift_shared_torch(module, x, refs, [0, 2], batch_size=16)
    scale = np.abs(want).max()
    assert scale > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(model.deeplift_shared(x, refs, [0, 2]), want, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("act", [nn.ReLU, nn.Threshold], ids=["relu", "threshold"])
@pytest.mark.parametrize("span", [(20, 40), (0, 7), (55, 60)])
def test_crop_on_the_torch7_layout(span, act):
    """Positions on axis 2 of (B, C, L, 1): the (k, 1) convolutions and relu -> (k, 1) pools (or threshold,
    then a plain tiled pool) are cropped, with the same numbers inside the span as the full walk."""
    _, module = adapter(torch7_basset(act))
    x, refs = shared_inputs(2, 3, 1, length=L)
    plan = dlt._shared_plan(module, torch.from_numpy(x[:1, 0]))
    crop = plan.crop(span)
    kinds = [link.kind for link in crop.links]
    pool = "relupool" if act is nn.ReLU else "pool"
    assert kinds.count("conv") == 2 and kinds.count(pool) >= 1 and crop.links[-1].axis_out == 2
    assert act is nn.ReLU or "rescale" in kinds
    full = dlt.deeplift_shared_torch(module, x, refs, [1], batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cropped = dlt.deeplift_shared_torch(module, x, refs, [1], batch_size=8, span=span)
    a, b = span
    scale = np.abs(full[..., a:b, :]).max()
    np.testing.assert_allclose(cropped[..., a:b, :], full[..., a:b, :], rtol=0, atol=1e-5 * scale)
    assert not cropped[..., :a, :].any() and not cropped[..., b:, :].any()


def test_k1_pool_is_the_tiled_rule():
    """A (3, 1) pool over (B, C, L, 1) is described by one pooled axis, windows side by side."""
    w = dlt.maxpool_windows_torch((2, 5, 30, 1), (3, 1), (3, 1), (0, 0), (1, 1), False)
    assert w.axes == [2] and dlt.tiled_pool(w)
    z = torch.randn(2, 5, 30, 1)
    np.testing.assert_array_equal(w.pooled(z).numpy(), nn.MaxPool2d((3, 1), (3, 1))(z).numpy())


class RCAverage(nn.Module):
    """DeepSEA/predict's pattern with untraceable modules: the reverse complement appended along the batch
    axis, the two halves averaged at the end (row-mixing leaves)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.add_rc = Lambda(lambda x: torch.cat([x, x.flip(1, 2)]) if x.dim() == 3 else x)
        self.body = nn.Sequential(nn.Conv1d(4, 6, 5), nn.ReLU(), nn.MaxPool1d(4), nn.Flatten(), nn.Linear(6 * 14, 2))
        self.average = Lambda(lambda y: y[: int(y.shape[0] / 2)] / 2 + y[int(y.shape[0] / 2):] / 2)

    def forward(self, x):
        return self.average(self.body(self.add_rc(x)))


class RCTwin(nn.Module):
    """The same function without batch mixing (fx traces it)."""

    def __init__(self, rc: RCAverage):
        super().__init__()
        self.body = rc.body

    def forward(self, x):
        return self.body(x) / 2 + self.body(x.flip(1, 2)) / 2


def test_row_mixing_leaf_falls_back_to_the_hook_engine():
    net = RCAverage().eval()
    model, module = adapter(net, "(4,L)")
    with pytest.raises(OpaqueLeafError, match=r"'module.add_rc' \(Lambda\) mixes batch rows"):
        dlt.trace_rules(module, torch.zeros(1, L, 4))
    twin, _ = adapter(RCTwin(net).eval(), "(4,L)")
    x, refs = shared_inputs(2, 3, 2, length=L)
    want = twin.deeplift_shared(x, refs, [1])
    got = model.deeplift_shared(x, refs, [1])  # shared engine unavailable -> pairwise -> hook engine
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_hidden_nonlinearity_and_hooks_are_not_taken_for_linear():
    relu_guard = Lambda(lambda x: torch.relu(x) if 1 < len(x.size()) else x)
    net = nn.Sequential(nn.Conv1d(4, 3, 5), relu_guard, nn.Flatten(), nn.Linear(3 * 56, 2)).eval()
    _, module = adapter(net, "(4,L)")
    with pytest.raises(OpaqueLeafError, match=r"'module.1' \(Lambda\) is not linear"):
        dlt.trace_rules(module, torch.zeros(1, L, 4))
    with pytest.raises(UnsupportedModelError, match="example input"):
        dlt.trace_rules(module)
    inner = nn.Sequential(nn.Conv1d(4, 3, 5), nn.ReLU())
    inner.register_forward_hook(lambda m, i, o: o * 2)  # fx would trace through the hook and drop it
    hooked = nn.Sequential(inner, nn.Flatten(), nn.Linear(3 * 56, 2)).eval()
    _, opaque = trace(hooked)
    assert opaque == {"0"}
    with pytest.raises(OpaqueLeafError, match="'0' .*not linear"):
        dlt.trace_rules(hooked, torch.zeros(1, 4, L))


class OneHotCheck(nn.Module):
    """Untraceable (branches on values) and refuses non-one-hot input, such as the probe's."""

    def forward(self, x):
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("expects one-hot input")
        return x


def test_leaf_refusing_the_probe_and_offset_nonlinearity_are_refused():
    net = nn.Sequential(OneHotCheck(), nn.Conv1d(4, 5, 5), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 56, 2)).eval()
    model, module = adapter(net, "(4,L)")
    with pytest.raises(OpaqueLeafError, match="fails on the probe's inputs .*one-hot"):
        dlt.trace_rules(module, torch.zeros(1, L, 4))
    x, refs = shared_inputs(2, 3, 5, length=L)
    twin, _ = adapter(nn.Sequential(*list(net)[1:]).eval(), "(4,L)")
    want = twin.deeplift_shared(x, refs, [0])
    np.testing.assert_allclose(model.deeplift_shared(x, refs, [0]), want, rtol=0, atol=1e-5 * np.abs(want).max())
    # a large constant after a hidden relu must not widen the probe's tolerance over the relu
    offset = Lambda(lambda t: torch.relu(t) + 1e5 if 1 < len(t.size()) else t)
    net = nn.Sequential(nn.Conv1d(4, 3, 5), offset, nn.Flatten(), nn.Linear(3 * 56, 2)).eval()
    with pytest.raises(OpaqueLeafError, match="not linear"):
        dlt.trace_rules(adapter(net, "(4,L)")[1], torch.zeros(1, L, 4))


class Head(nn.Module):
    """An untraceable head whose last op is the final sigmoid."""

    def __init__(self):
        super().__init__()
        self.fc, self.act = nn.Linear(5 * 28, 2), nn.Sigmoid()

    def forward(self, x):
        x = x.view(1, -1) if 1 == len(x.size()) else x
        return self.act(self.fc(x))


class HeadNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.body = nn.Sequential(nn.Conv1d(4, 5, 5), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten())
        self.head = Head()

    def forward(self, x):
        return self.head(self.body(x))


def test_final_sigmoid_inside_an_untraceable_leaf_is_still_split_off():
    net = HeadNet().eval()
    model = load_model(net, seq_len=L, layout="(4,L)")
    assert model.activation == "sigmoid"
    x, _ = shared_inputs(1, 1, 6, length=L)
    p = load_model(net, seq_len=L, layout="(4,L)", output="raw").predict(x[:, 0])
    np.testing.assert_allclose(model.predict(x[:, 0]), np.log(p / (1 - p)), rtol=1e-4, atol=1e-4)


class GlobalMax(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.c, self.d = nn.Conv1d(4, 6, 5), nn.Linear(6, 2)

    def forward(self, x):
        return self.d(torch.amax(torch.relu(self.c(x)), dim=-1))  # no keepdim: the position axis is gone


def test_span_with_a_global_max_that_drops_the_position_axis():
    model, module = adapter(GlobalMax().eval(), "(4,L)")
    x, refs = shared_inputs(2, 3, 7, length=L)
    full = dlt.deeplift_shared_torch(module, x, refs, [1])
    cropped = dlt.deeplift_shared_torch(module, x, refs, [1], span=(10, 20))
    np.testing.assert_allclose(cropped[..., 10:20, :], full[..., 10:20, :], rtol=0, atol=1e-5 * np.abs(full).max())


class DeepSEALike(nn.Module):
    """DeepSEA/variantEffects as the zoo ships it, small: ACGT -> AGCT recoding inside the model (four
    ``x[:, i]`` stacked back: a fan-out and merge), (B, 4, 1, L) input, torch7's Threshold, (1, k) pools."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(8)
        self.net = nn.Sequential(
            nn.Conv2d(4, 8, (1, 5)), nn.Threshold(0, 1e-6), nn.MaxPool2d((1, 4), (1, 4)), nn.Dropout(0.2),
            nn.Conv2d(8, 6, (1, 3)), nn.Threshold(0, 1e-6), nn.Dropout(0.5),
            Lambda(lambda x: x.view(x.size(0), -1)), nn.Sequential(guard(), nn.Linear(6 * 12, 3)))

    def forward(self, x):
        return self.net(torch.stack([x[:, i, ...] for i in [0, 2, 1, 3]], dim=1))


@pytest.mark.parametrize("alphabet", ["ACGT", "AGCT"])
def test_crop_through_alphabet_reordering(alphabet):
    """The recoding inside the model (a region of four getitems and a stack) and the adapter's own
    reordering for an AGCT model (x[:, :, idx]) are position-local layout links: the crop reaches the
    convolutions, with the full walk's numbers inside the span."""
    model = load_model(DeepSEALike().eval(), seq_len=L, layout="(4,1,L)", alphabet=alphabet, batch_size=16)
    module = model._scored(model.output)
    x, refs = shared_inputs(2, 3, 9, length=L)
    crop = dlt._shared_plan(module, torch.from_numpy(x[:1, 0])).crop((25, 40))
    assert crop is not None and any(len(link.members) == 5 for link in crop.links)  # 4 getitems + stack
    assert [link.kind for link in crop.links].count("pool") == 1
    full = dlt.deeplift_shared_torch(module, x, refs, [0, 2], batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cropped = model.deeplift_shared(x, refs, [0, 2], span=(25, 40))
    scale = np.abs(full[..., 25:40, :]).max()
    np.testing.assert_allclose(cropped[..., 25:40, :], full[..., 25:40, :], rtol=0, atol=1e-5 * scale)
    want = hook_engine(module, x, refs, [0, 2])
    np.testing.assert_allclose(full, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_leaf_input_not_batch_major_is_refused():
    """A leaf that receives (L, B, C) (a transpose before it) would be probed along the wrong axis."""
    mix = Lambda(lambda t: t.mean(1, keepdim=True).expand_as(t) if 1 < len(t.size()) else t)  # mixes axis 1
    net = nn.Sequential(Lambda(lambda t: t.transpose(0, 2)), mix, Lambda(lambda t: t.transpose(0, 2)),
                        nn.Conv1d(4, 3, 5), nn.Flatten(), nn.Linear(3 * 56, 2)).eval()
    with pytest.raises(OpaqueLeafError, match="'module.1' .*first axis is not the batch"):
        dlt.trace_rules(adapter(net, "(4,L)")[1], torch.zeros(1, L, 4))
