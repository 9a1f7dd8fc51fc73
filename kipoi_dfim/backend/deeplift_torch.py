"""DeepLIFT/DeepSHAP multipliers for PyTorch models, with the rule set shared with ``deeplift_keras``.

Why an own engine rather than ``tangermeme.deep_lift_shap``: tangermeme attaches its rules to ``nn.Module``
hooks, so a nonlinearity written as a function call inside ``forward()`` (``F.relu``, ``torch.sigmoid``,
``F.max_pool1d``) is silently differentiated as if it were linear. Here the module is traced with
``torch.fx``; every op that depends on the input is classified as linear, elementwise-nonlinear (Rescale
rule), max-pooling (the shared max-pool rule) or unsupported (``UnsupportedModelError`` naming it), and the
traced graph is run on the paired batch ``[x; ref]`` with custom autograd functions at the nonlinear ops.
The rules themselves are described in docs/deeplift.md.
"""

from __future__ import annotations

import contextlib
import operator
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from kipoi_dfim.backend._deeplift_common import (
    RESCALE_EPS,
    check_inputs,
    check_shared_inputs,
    conservation_violations,
    delta_violations,
    hypothetical_mean,
    pair_batches,
    pair_blocks,
    pool_axis,
    shared_violations,
    variant_chunks,
    warn_violations,
    window_index,
)
from kipoi_dfim.backend.torch_trace import OpaqueLeafError, check_opaque_leaves, trace
from kipoi_dfim.errors import InputError, UnsupportedModelError

__all__ = ["deeplift_multipliers_torch", "deeplift_shared_torch", "maxpool_windows_torch", "window_max_torch"]

# --------------------------------------------------------------------------------------------------------
# What is linear, what has a rule. Anything that depends on the input and is not listed raises.
# --------------------------------------------------------------------------------------------------------

_LINEAR_MODULES: tuple[type, ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.Linear,
    nn.Identity,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.AlphaDropout,
    nn.Flatten,
    nn.Unflatten,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ReflectionPad1d,
    nn.ReplicationPad1d,
)

_ELEMENTWISE_MODULES: tuple[type, ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.Sigmoid,
    nn.Hardsigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Threshold,  # torch7's ReLU in the zoo's converted models (DeepSEA, Beluga)
    nn.Hardtanh,
)

_ELEMENTWISE_FUNCTIONS: set[Any] = {
    torch.relu,
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.selu,
    torch.selu,
    torch.sigmoid,
    F.sigmoid,
    F.hardsigmoid,
    torch.tanh,
    F.tanh,
    F.softplus,
    F.softsign,
    torch.exp,
}

_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "exp"}

_MAXPOOL_FUNCTIONS = {F.max_pool1d: 1, F.max_pool2d: 2}

_LINEAR_FUNCTIONS: set[Any] = {
    operator.add,
    operator.sub,
    operator.neg,
    operator.pos,
    operator.getitem,
    operator.iadd,
    operator.isub,
    torch.add,
    torch.sub,
    torch.neg,
    torch.cat,
    torch.concat,
    torch.stack,
    torch.flatten,
    torch.reshape,
    torch.transpose,
    torch.permute,
    torch.squeeze,
    torch.unsqueeze,
    torch.narrow,
    torch.split,
    torch.chunk,
    torch.flip,
    torch.roll,
    torch.sum,
    torch.mean,
    F.conv1d,
    F.conv2d,
    F.conv_transpose1d,
    F.linear,
    F.avg_pool1d,
    F.avg_pool2d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.pad,
    F.dropout,
    F.batch_norm,
}

#: Products/quotients: linear when only one operand (the numerator, for division) depends on the input.
_BILINEAR_FUNCTIONS: set[Any] = {
    operator.mul,
    operator.imul,
    operator.truediv,
    operator.matmul,
    torch.mul,
    torch.div,
    torch.matmul,
}

_LINEAR_METHODS = {
    "view",
    "view_as",
    "reshape",
    "reshape_as",
    "permute",
    "transpose",
    "t",
    "flatten",
    "unflatten",
    "squeeze",
    "unsqueeze",
    "contiguous",
    "clone",
    "float",
    "double",
    "to",
    "type",
    "type_as",
    "expand",
    "expand_as",
    "repeat",
    "narrow",
    "select",
    "chunk",
    "split",
    "flip",
    "roll",
    "sum",
    "mean",
    "neg",
    "add",
    "sub",
    "__getitem__",
}

_BILINEAR_METHODS = {"mul", "div", "matmul"}

#: Ops whose output does not carry the input's values (shapes), so they break dependence.
_SHAPE_METHODS = {"size", "dim", "numel"}


@dataclass(frozen=True)
class _Rule:
    """How one fx node is attributed: kind is "linear", "rescale" or "maxpool"."""

    kind: str


_LINEAR = _Rule("linear")
_RESCALE = _Rule("rescale")
_MAXPOOL = _Rule("maxpool")


# --------------------------------------------------------------------------------------------------------
# The two rules, as autograd functions on the paired batch [x; ref] (first half x, second half ref).
# --------------------------------------------------------------------------------------------------------


class _Rescale(torch.autograd.Function):
    """Rescale rule for an elementwise function fn: multiplier (fn(x) - fn(r)) / (x - r).

    For smooth functions the secant is computed in float64 from the float32 activations, so that the two
    engines, whose float32 activations agree to ~1e-7, give the same multipliers even where x - r is small;
    for relu/relu6 the float32 secant is already exact. Where |x - r| < RESCALE_EPS the derivative at x is
    used (the limit of the secant). Both halves of the returned gradient carry the x-half multiplier, so the
    pair stays consistent through every later rule.
    """

    @staticmethod
    def forward(
        ctx: Any, z: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], exact: bool
    ) -> torch.Tensor:
        y = fn(z)
        ctx.save_for_backward(z, y)
        ctx.fn, ctx.exact = fn, exact
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        z, y = ctx.saved_tensors
        half = z.shape[0] // 2
        if ctx.exact:
            multiplier = rescale_multiplier_torch(ctx.fn, z[:half], z[half:], y[:half], y[half:])
        else:
            multiplier = rescale_multiplier_torch(ctx.fn, z[:half].double(), z[half:].double())
        h = grad[:half] * multiplier.to(grad.dtype)
        return torch.cat([h, h]), None, None


def rescale_multiplier_torch(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, r: torch.Tensor,
                             f_x: torch.Tensor | None = None, f_r: torch.Tensor | None = None) -> torch.Tensor:
    """Rescale multiplier (fn(x) - fn(r)) / (x - r), derivative at x where |x - r| < RESCALE_EPS.

    Parameters
    ----------
    fn : callable
        Elementwise function.
    x, r : torch.Tensor
        Activations of the sequence and of the reference (same shape).
    f_x, f_r : torch.Tensor, optional
        fn(x) and fn(r) if already known (saves two evaluations).
    """
    f_x = fn(x) if f_x is None else f_x
    f_r = fn(r) if f_r is None else f_r
    delta = x - r
    small = delta.abs() < RESCALE_EPS
    out = (f_x - f_r) / torch.where(small, torch.ones_like(delta), delta)
    if bool(small.any()):
        with torch.enable_grad():
            xs = x[small].detach().requires_grad_(True)
            (derivative,) = torch.autograd.grad(fn(xs).sum(), xs)
        out[small] = derivative.to(out.dtype)
    return out


class _Windows:
    """A max-pool over ``axes`` of tensors of one shape, as gather/scatter over explicit windows.

    The tensor is laid out as a grid (padded spatial positions flattened, everything else flattened), windows
    are gathered with the shared ``window_index`` and routed values are folded back with ``index_add_``
    (overlaps accumulate). ``deeplift_keras._Windows`` is the same construction in TensorFlow.
    """

    def __init__(self, shape: tuple[int, ...], axes: list[int], spec: list[dict[str, int]]):
        self.shape = tuple(shape)
        self.axes = list(axes)
        others = [i for i in range(len(shape)) if i not in self.axes]
        self.perm = self.axes + others
        self.inverse = [self.perm.index(i) for i in range(len(shape))]
        self.spec = spec
        self.rest = [shape[i] for i in others]
        self.n_rest = int(np.prod(self.rest, dtype=np.int64))
        self.idx = torch.from_numpy(window_index(spec))
        self.grid_size = int(np.prod([a["padded"] for a in spec]))
        # One axis, windows side by side (stride == kernel, no dilation): windows are a reshape of the grid
        # and folding is a reshape back, the same numbers as gather/scatter at a fraction of the cost.
        a = spec[0]
        self.tiled = len(spec) == 1 and a["stride"] == a["kernel"] and a["dilation"] == 1

    def grid(self, z: torch.Tensor) -> torch.Tensor:
        """(padded spatial positions, rest) view of z, -inf in the padding."""
        t = z.permute(self.perm).reshape([a["length"] for a in self.spec] + [self.n_rest])
        for axis, a in enumerate(self.spec):
            right = a["padded"] - a["length"] - a["left"]
            parts = [t]
            for size, where in ((a["left"], 0), (right, 1)):
                if size > 0:
                    shape = list(t.shape)
                    shape[axis] = size
                    pad = torch.full(shape, -torch.inf, dtype=t.dtype, device=t.device)
                    parts.insert(0 if where == 0 else len(parts), pad)
            t = torch.cat(parts, dim=axis) if len(parts) > 1 else t
        return t.reshape(self.grid_size, self.n_rest)

    def crop(self, t: torch.Tensor) -> torch.Tensor:
        """Inverse of ``grid`` (padding dropped), back to the tensor's own shape."""
        t = t.reshape([a["padded"] for a in self.spec] + [self.n_rest])
        for axis, a in enumerate(self.spec):
            t = t.narrow(axis, a["left"], a["length"])
        t = t.reshape([a["length"] for a in self.spec] + self.rest)
        return t.permute(self.inverse)

    def windows(self, grid: torch.Tensor) -> torch.Tensor:
        """(windows, window size, rest) values of a grid."""
        if self.tiled:
            a = self.spec[0]
            return grid[: a["out"] * a["kernel"]].reshape(a["out"], a["kernel"], self.n_rest)
        return grid[self.idx.to(grid.device)]

    def fold(self, values: torch.Tensor) -> torch.Tensor:
        """Scatter-add (windows, window size, rest) values back onto the grid."""
        flat = values.reshape(-1, self.n_rest)
        if self.tiled:
            tail = torch.zeros(self.grid_size - flat.shape[0], self.n_rest, dtype=flat.dtype, device=flat.device)
            return torch.cat([flat, tail])
        out = torch.zeros(self.grid_size, self.n_rest, dtype=values.dtype, device=values.device)
        return out.index_add_(0, self.idx.to(values.device).reshape(-1), flat)

    def rows(self, y: torch.Tensor) -> torch.Tensor:
        """A pooled tensor (pooled axes kept, any layout that reshapes to it) as (windows, rest)."""
        out = [self.shape[i] if i not in self.axes else self.spec[self.axes.index(i)]["out"] for i in
               range(len(self.shape))]
        return y.reshape(out).permute(self.perm).reshape(-1, self.n_rest)

    def pooled(self, z: torch.Tensor) -> torch.Tensor:
        """The pooling itself, pooled axes kept in place (size ``out``)."""
        values = self.windows(self.grid(z)).amax(1)
        out = [a["out"] for a in self.spec] + self.rest
        return values.reshape(out).permute(self.inverse)


def maxpool_multiplier_torch(windows: _Windows, x: torch.Tensor, r: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Upstream multipliers ``grad`` pushed through a max-pool by the shared rule.

    With c = max(y_x, y_r) per window, (c - y_r) goes to the argmax of x and (y_x - c) to the argmax of the
    reference, ties split evenly; each input's routed total is divided by its own x - r, and where x == r the
    gradient at x (tie-split) is used. The pieces sum to y_x - y_r, so summation-to-delta holds exactly.

    Parameters
    ----------
    windows : _Windows
        The pooling geometry for tensors shaped like x (see ``maxpool_windows_torch``).
    x, r : torch.Tensor
        Pool inputs of the sequences and of their references.
    grad : torch.Tensor
        Multipliers of the pool outputs (x half), any shape that reshapes to the pooled shape.
    """
    wx, wr = windows.windows(windows.grid(x)), windows.windows(windows.grid(r))
    yx, yr = wx.amax(1), wr.amax(1)
    share_x = (wx == yx[:, None]).to(x.dtype)
    share_x = share_x / share_x.sum(1, keepdim=True)
    share_r = (wr == yr[:, None]).to(x.dtype)
    share_r = share_r / share_r.sum(1, keepdim=True)
    g = windows.rows(grad)
    cross = torch.maximum(yx, yr)
    routed = windows.crop(windows.fold(share_x * (g * (cross - yr))[:, None] + share_r * (g * (yx - cross))[:, None]))
    delta = x - r
    zero = delta == 0
    out = routed / torch.where(zero, torch.ones_like(delta), delta)
    if bool(zero.any()):
        out = torch.where(zero, windows.crop(windows.fold(share_x * g[:, None])), out)
    return out


class _MaxPool(torch.autograd.Function):
    """The shared max-pool rule (docs/deeplift.md) on the paired batch.

    ``forward_fn`` is the model's own pooling op; ``make_windows(shape)`` re-expresses it over explicit
    windows. The forward checks that both give the same numbers, so a pooling configuration the
    re-expression gets wrong cannot slip through.
    """

    @staticmethod
    def forward(
        ctx: Any,
        z: torch.Tensor,
        forward_fn: Callable[[torch.Tensor], torch.Tensor],
        make_windows: Callable[[tuple[int, ...]], _Windows],
        name: str | None,
    ) -> torch.Tensor:
        y = forward_fn(z)
        if name is not None:  # checked on the first batch of a call
            mine = make_windows(tuple(z.shape)).pooled(z)
            if mine.numel() != y.numel() or not torch.equal(y, mine.reshape(y.shape)):
                raise UnsupportedModelError(
                    f"DeepLIFT: max-pooling {name}: this pooling configuration is not supported"
                )
        ctx.save_for_backward(z)
        ctx.make_windows = make_windows
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (z,) = ctx.saved_tensors
        half = z.shape[0] // 2
        x, r = z[:half], z[half:]
        m = maxpool_multiplier_torch(ctx.make_windows(tuple(x.shape)), x, r, grad[:half]).to(grad.dtype)
        return torch.cat([m, m]), None, None, None


# --------------------------------------------------------------------------------------------------------
# Pooling geometry: PyTorch conventions -> the shared window description.
# --------------------------------------------------------------------------------------------------------


def _as_tuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value),) * n


def maxpool_windows_torch(
    shape: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    ceil_mode: bool,
) -> _Windows:
    """Window description of ``nn.MaxPool1d/2d`` over the last ``len(kernel)`` axes of tensors of ``shape``.

    Output length and padding follow PyTorch: -inf padding of ``padding`` on both sides, ``ceil_mode``
    adds a partial last window unless it would start in the right padding.
    """
    nd = len(kernel)
    axes, spec = [], []
    for i, axis in enumerate(range(len(shape) - nd, len(shape))):
        length, k, s, p, d = shape[axis], kernel[i], stride[i], padding[i], dilation[i]
        if length == k == s == 1 and p == 0:
            continue  # a pooled axis of size 1 pooled by 1 (torch7's (k, 1) pools on (C, L, 1)): not pooled
        span = d * (k - 1) + 1
        out = (length + 2 * p - span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= length + p:
            out -= 1
        axes.append(axis)
        spec.append(pool_axis(length, k, s, d, p, out))
    if not axes:  # every axis trivial: windows of one element along the last axis
        axes, spec = [len(shape) - 1], [pool_axis(shape[-1], 1, 1, 1, 0, shape[-1])]
    return _Windows(shape, axes, spec)


def _global_windows(shape: tuple[int, ...], axes: list[int]) -> _Windows:
    """Max over whole axes (global max-pooling, amax) as one window per remaining position."""
    spec = [pool_axis(shape[a], shape[a], shape[a], 1, 0, 1) for a in axes]
    return _Windows(shape, axes, spec)


def window_max_torch(
    z: torch.Tensor,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    ceil_mode: bool,
) -> torch.Tensor:
    """PyTorch max-pooling recomputed from the explicit windows the rule uses (for checks and tests)."""
    return maxpool_windows_torch(tuple(z.shape), kernel, stride, padding, dilation, ceil_mode).pooled(z)


def _maxpool_fns(
    node: fx.Node, module: nn.Module | None, args: tuple, kwargs: dict
) -> tuple[Callable, Callable[[tuple[int, ...]], _Windows]]:
    """(model's own pooling op, shape -> window description) for a max-pool node."""
    if isinstance(module, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
        nd = 1 if isinstance(module, nn.AdaptiveMaxPool1d) else 2
        return module, lambda shape: _global_windows(shape, list(range(len(shape) - nd, len(shape))))
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)):
        nd = 1 if isinstance(module, nn.MaxPool1d) else 2
        params = dict(
            kernel_size=module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            ceil_mode=module.ceil_mode,
        )
        forward_fn: Callable = module
    elif node.op == "call_function" and node.target in _MAXPOOL_FUNCTIONS:
        nd = _MAXPOOL_FUNCTIONS[node.target]
        names = ["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
        params = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}
        params.update(dict(zip(names, args[1:], strict=False)))
        params.update(kwargs)
        params.pop("return_indices", None)
        target, rest = node.target, args[1:]

        def forward_fn(t: torch.Tensor) -> torch.Tensor:
            return target(t, *rest, **kwargs)
    else:  # amax over some axes
        bound = dict(zip(["dim", "keepdim"], args[1:], strict=False))
        bound.update(kwargs)
        dims = bound.get("dim", ())
        dims = [dims] if isinstance(dims, int) else list(dims)
        rest, method = args[1:], node.op == "call_method"

        def amax(t: torch.Tensor) -> torch.Tensor:
            return t.amax(*rest, **kwargs) if method else torch.amax(t, *rest, **kwargs)

        def make(shape: tuple[int, ...]) -> _Windows:
            axes = sorted(d % len(shape) for d in dims)
            if not axes or 0 in axes:
                raise UnsupportedModelError(f"DeepLIFT: {_describe(node, None)} reduces over the batch axis")
            return _global_windows(shape, axes)

        return amax, make
    kernel = _as_tuple(params["kernel_size"], nd)
    stride = _as_tuple(params["stride"] if params["stride"] not in (None, [], ()) else kernel, nd)
    padding, dilation = _as_tuple(params["padding"], nd), _as_tuple(params["dilation"], nd)
    ceil_mode = bool(params["ceil_mode"])
    return forward_fn, lambda shape: maxpool_windows_torch(shape, kernel, stride, padding, dilation, ceil_mode)


# --------------------------------------------------------------------------------------------------------
# Tracing and classification.
# --------------------------------------------------------------------------------------------------------


def _describe(node: fx.Node, gm: fx.GraphModule | None) -> str:
    """Human name of an fx node for error messages."""
    if node.op == "call_module" and gm is not None:
        return f"layer '{node.target}' ({type(gm.get_submodule(node.target)).__name__})"
    if node.op == "call_method":
        return f"tensor method .{node.target}() (node '{node.name}')"
    name = getattr(node.target, "__name__", repr(node.target))
    module = getattr(node.target, "__module__", None) or ""
    return f"function {module + '.' if module else ''}{name} (node '{node.name}')"


def _unsupported(node: fx.Node, gm: fx.GraphModule, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"DeepLIFT: {_describe(node, gm)} {why}; supported are linear layers/ops, the elementwise "
        "nonlinearities relu, relu6, leaky_relu, elu, selu, sigmoid, hard_sigmoid, tanh, softplus, softsign, "
        "threshold, hardtanh, exp, and max-pooling (see docs/deeplift.md)"
    )


def _only_first_dependent(node: fx.Node, dependent: set[str]) -> bool:
    deps = [a for a in node.all_input_nodes if a.name in dependent]
    return len(deps) == 1 and bool(node.args) and node.args[0] is deps[0]


def _classify(node: fx.Node, gm: fx.GraphModule, dependent: set[str]) -> _Rule:
    """The rule for one input-dependent node, or UnsupportedModelError naming it."""
    deps = [a for a in node.all_input_nodes if a.name in dependent]
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if isinstance(mod, _LINEAR_MODULES):
            return _LINEAR
        if isinstance(mod, _ELEMENTWISE_MODULES):
            return _RESCALE
        if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d)):
            if mod.return_indices:
                raise _unsupported(node, gm, "returns indices")
            return _MAXPOOL
        if isinstance(mod, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
            sizes = _as_tuple(mod.output_size, 1 if isinstance(mod, nn.AdaptiveMaxPool1d) else 2)
            if set(sizes) == {1} and not mod.return_indices:
                return _MAXPOOL
            raise _unsupported(node, gm, "is only supported as global max-pooling (output_size=1)")
        raise _unsupported(node, gm, "has no DeepLIFT rule")
    if node.op == "call_function":
        target = node.target
        if target is getattr and len(node.args) > 1 and node.args[1] in ("shape", "dtype", "device"):
            return _LINEAR
        if target in _ELEMENTWISE_FUNCTIONS or target in _MAXPOOL_FUNCTIONS or target is torch.amax:
            if not _only_first_dependent(node, dependent):
                raise _unsupported(node, gm, "has an input-dependent argument other than its input")
            if target in _MAXPOOL_FUNCTIONS and node.kwargs.get("return_indices", False):
                raise _unsupported(node, gm, "returns indices")
            return _RESCALE if target in _ELEMENTWISE_FUNCTIONS else _MAXPOOL
        if target in _LINEAR_FUNCTIONS:
            if target is F.batch_norm and (node.kwargs.get("training") or (len(node.args) > 5 and node.args[5])):
                raise _unsupported(node, gm, "runs in training mode")
            return _LINEAR
        if target in _BILINEAR_FUNCTIONS:
            if len(deps) == 1 and (target not in (operator.truediv, torch.div) or node.args[0] is deps[0]):
                return _LINEAR
            raise _unsupported(node, gm, "multiplies/divides two input-dependent tensors")
        raise _unsupported(node, gm, "has no DeepLIFT rule")
    if node.op == "call_method":
        name = node.target
        if name in _SHAPE_METHODS:
            return _LINEAR
        if name in _ELEMENTWISE_METHODS or name == "amax":
            if not _only_first_dependent(node, dependent):
                raise _unsupported(node, gm, "has an input-dependent argument other than its input")
            return _RESCALE if name in _ELEMENTWISE_METHODS else _MAXPOOL
        if name in _LINEAR_METHODS:
            return _LINEAR
        if name in _BILINEAR_METHODS:
            if len(deps) == 1 and (name != "div" or node.args[0] is deps[0]):
                return _LINEAR
            raise _unsupported(node, gm, "multiplies/divides two input-dependent tensors")
        raise _unsupported(node, gm, "has no DeepLIFT rule")
    return _LINEAR  # placeholder, get_attr, output


def _breaks_dependence(node: fx.Node) -> bool:
    """Nodes whose value does not depend on the input values (shapes, dtypes)."""
    if node.op == "call_method" and node.target in _SHAPE_METHODS:
        return True
    return (
        node.op == "call_function"
        and node.target is getattr
        and len(node.args) > 1
        and node.args[1] in ("shape", "dtype", "device")
    )


def trace_rules(module: nn.Module, example: torch.Tensor | None = None
                ) -> tuple[fx.GraphModule, dict[str, _Rule]]:
    """Trace ``module`` with torch.fx and classify every input-dependent op.

    Parameters
    ----------
    module : torch.nn.Module
        Must be in eval mode (dropout and batch-norm flags are recorded as traced).
    example : torch.Tensor, optional
        An input. Submodules torch.fx cannot trace (the zoo's torch7 ``Lambda`` wrappers) become leaves of
        the graph, linear if a probe on what they receive from ``example`` shows it
        (:mod:`~kipoi_dfim.backend.torch_trace`); without an example such a module is unsupported.

    Returns
    -------
    graph_module, rules
        The traced module and the rule for every node that depends on the input.

    Raises
    ------
    UnsupportedModelError
        If the module cannot be traced (data-dependent control flow) or an op has no rule; the message
        names the layer or function. :class:`~kipoi_dfim.backend.torch_trace.OpaqueLeafError` (a subclass)
        when an untraceable submodule is not provably linear.
    """
    try:
        gm, opaque = trace(module)
    except Exception as err:  # fx raises many types (TraceError, TypeError, ...)
        raise UnsupportedModelError(
            f"DeepLIFT: cannot trace {type(module).__name__} with torch.fx ({type(err).__name__}: {err}); "
            "the DeepLIFT engine needs every op of forward() visible to assign it a rule"
        ) from err
    if opaque and example is None:
        raise OpaqueLeafError(f"DeepLIFT: untraceable layers {sorted(opaque)} need an example input to check")
    if opaque:
        check_opaque_leaves(gm, opaque, example)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders:
        raise UnsupportedModelError(f"DeepLIFT: {type(module).__name__}.forward takes no input")
    dependent = {placeholders[0].name}
    rules: dict[str, _Rule] = {}
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output") or node.name in dependent:
            continue
        if not any(a.name in dependent for a in node.all_input_nodes):
            continue
        if _breaks_dependence(node):
            continue
        opaque_leaf = node.op == "call_module" and node.target in opaque
        rules[node.name] = _LINEAR if opaque_leaf else _classify(node, gm, dependent)
        dependent.add(node.name)
    return gm, rules


class _DeepLiftInterpreter(fx.Interpreter):
    """Runs a traced module, swapping the nonlinear ops for the DeepLIFT autograd functions."""

    def __init__(self, gm: fx.GraphModule, rules: dict[str, _Rule]):
        super().__init__(gm)
        self.rules = rules
        self.checked: set[str] = set()

    def run_node(self, n: fx.Node) -> Any:
        rule = self.rules.get(n.name)
        if rule is None or rule.kind == "linear":
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        module = self.module.get_submodule(n.target) if n.op == "call_module" else None
        if rule.kind == "rescale":
            return _Rescale.apply(args[0], _elementwise_fn(n, module, args, kwargs), _exact_secant(n, module))
        forward_fn, window_max = _maxpool_fns(n, module, args, kwargs)
        check = n.name not in self.checked
        self.checked.add(n.name)
        return _MaxPool.apply(args[0], forward_fn, window_max, _describe(n, self.module) if check else None)


def _exact_secant(node: fx.Node, module: nn.Module | None) -> bool:
    """Whether the float32 secant is exact (relu, relu6: differences of the inputs themselves or 0/6)."""
    if module is not None:
        return type(module) in (nn.ReLU, nn.ReLU6)
    if node.op == "call_method":
        return node.target == "relu"
    return node.target in (torch.relu, F.relu, F.relu6)


def _elementwise_fn(node: fx.Node, module: nn.Module | None, args: tuple, kwargs: dict) -> Callable:
    """The node's elementwise function of its (only) dependent input, never in place."""
    if module is not None:
        if getattr(module, "inplace", False):
            return lambda t: module(t.clone())
        return module
    kwargs = {k: (False if k == "inplace" else v) for k, v in kwargs.items()}
    rest = args[1:]
    if node.op == "call_method":
        name = node.target
        return lambda t: getattr(t, name)(*rest, **kwargs)
    target = node.target
    return lambda t: target(t, *rest, **kwargs)


# --------------------------------------------------------------------------------------------------------
# Shared references (DFIM): one forward pass of the windows and of the references, per-pair backward.
# --------------------------------------------------------------------------------------------------------


class SharedPathUnavailable(Exception):
    """The traced graph does not fit the shared-reference engine (the caller falls back to pairwise)."""


_INPLACE_LINEAR = {operator.iadd: operator.add, operator.isub: operator.sub}


def _node_call(node: fx.Node, gm: fx.GraphModule, args: tuple, kwargs: dict) -> Any:
    """Evaluate one fx node on given argument values (in-place additions done out of place)."""
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    return _INPLACE_LINEAR.get(node.target, node.target)(*args, **kwargs)


class _Recorder(fx.Interpreter):
    """Runs a traced module keeping the values of the nodes in ``keep`` (all if None).

    Nonlinear nodes run out of place (an ``nn.ReLU(inplace=True)`` would overwrite the activation the rule
    reads) and so do in-place additions.
    """

    def __init__(self, gm: fx.GraphModule, rules: dict[str, _Rule], keep: set[str] | None):
        super().__init__(gm)
        self.rules, self.keep = rules, keep
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        rule = self.rules.get(n.name)
        if n.op in ("placeholder", "output", "get_attr"):
            out = super().run_node(n)
        else:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            module = self.module.get_submodule(n.target) if n.op == "call_module" else None
            if rule is not None and rule.kind == "rescale":
                out = _elementwise_fn(n, module, args, kwargs)(args[0])
            elif rule is not None and rule.kind == "maxpool":
                out = _maxpool_fns(n, module, args, kwargs)[0](args[0])
            else:
                out = _node_call(n, self.module, args, kwargs)
        if self.keep is None or n.name in self.keep:
            self.values[n.name] = out
        return out


@dataclass
class _Step:
    """One input-dependent node of the reverse walk."""

    name: str
    kind: str  # "linear", "rescale", "maxpool"
    inputs: list[str]  # the dependent input nodes the cotangent flows to
    vjp: Callable | None = None  # linear: batch-1 vector-Jacobian product
    fn: Callable | None = None  # rescale: the elementwise function; maxpool: the model's pooling op
    exact: bool = False  # rescale: float32 secant is exact (relu, relu6)
    windows: Callable | None = None  # maxpool: shape -> _Windows
    label: str = ""
    fused: _Step | None = None  # "relupool": the relu/relu6 step whose only consumer is this max-pool
    node: fx.Node | None = None  # linear: the node (fn is then the node as a function of its dependent inputs)


@dataclass
class _Pairs:
    """A block of pair rows: variants [v0, v1) of the chunk, their K windows, targets [t0, t1), R references.

    Rows are laid out (V, K, Tb, R). The chunk's recorded tensors hold the n * K window rows first, then the
    n * R reference rows, so the block's windows and references are slices: the rules broadcast windows
    (V, K, 1, 1, ...) against references (V, 1, 1, R, ...) without gathering a row per pair, and form each
    multiplier once for all targets of the block.
    """

    v0: int
    v1: int
    targets: torch.Tensor  # (Tb,) output columns
    n: int
    k: int
    r: int

    @property
    def p(self) -> int:
        return (self.v1 - self.v0) * self.k * len(self.targets) * self.r

    def window(self, t: torch.Tensor) -> torch.Tensor:
        """(V, K, 1, 1, ...) rows of the block's windows."""
        return t[self.v0 * self.k: self.v1 * self.k].reshape(self.v1 - self.v0, self.k, 1, 1, *t.shape[1:])

    def reference(self, t: torch.Tensor) -> torch.Tensor:
        """(V, 1, 1, R, ...) rows of the block's references."""
        a = self.n * self.k
        return t[a + self.v0 * self.r: a + self.v1 * self.r].reshape(self.v1 - self.v0, 1, 1, self.r, *t.shape[1:])

    def grid(self, g: torch.Tensor) -> torch.Tensor:
        """A (P, ...) pair cotangent as (V, K, Tb, R, ...)."""
        return g.reshape(self.v1 - self.v0, self.k, len(self.targets), self.r, *g.shape[1:])


class SharedPlan:
    """The reverse walk of a traced module for the shared-reference engine.

    Linear nodes are differentiated once, on a batch of one row (``torch.func.vjp``; a linear op's
    vector-Jacobian product does not depend on the point), and applied to all pair cotangents at once with
    ``torch.vmap``, so the pair backward never re-runs the forward pass. Nonlinear nodes multiply the pair
    cotangents by the rule's multipliers, formed from the activations of the window and of the reference
    recorded in the one shared forward pass (per-row parts of the rules, such as the max of every pooling
    window and its tie shares, are computed there once per row rather than once per pair).
    """

    def __init__(self, gm: fx.GraphModule, rules: dict[str, _Rule], example: torch.Tensor):
        self.gm, self.rules = gm, rules
        nodes = list(gm.graph.nodes)
        self.input = next(n.name for n in nodes if n.op == "placeholder")
        out = next(n for n in nodes if n.op == "output")
        src = out.args[0]
        if not isinstance(src, fx.Node) or src.name not in rules:
            raise SharedPathUnavailable("the output is not one input-dependent tensor")
        self.output = src.name
        dependent = {self.input, *rules}
        rec = _Recorder(gm, rules, None)
        with torch.no_grad():
            rec.run(example)
        values = rec.values
        self.output_shape = tuple(values[self.output].shape)
        self.shapes = {k: tuple(v.shape[1:]) for k, v in values.items() if isinstance(v, torch.Tensor)}
        self.crops: dict[tuple[int, int], Any] = {}  # input span -> Crop (or None: the full walk)
        self.input_shape = tuple(example.shape[1:])
        self.device = example.device
        self.dtype = values[self.output].dtype
        self.keep: set[str] = set()
        self.pools_checked = False  # the rule's windows reproduce every pool (checked on the first rows)
        # scratch tensors of the rules, per (thread, step): threads sharing a model must not share them
        self.buffers: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        self.steps: list[_Step] = []
        for node in reversed(nodes):
            if node.name not in rules:
                continue
            deps = list(dict.fromkeys(a.name for a in node.all_input_nodes if a.name in dependent))
            self.steps.append(self._step(node, rules[node.name], deps, values))
        self._fuse(nodes)

    def _fuse(self, nodes: list[fx.Node]) -> None:
        """Merge relu/relu6 -> max-pool pairs into one "relupool" step (half the per-pair passes)."""
        users = {n.name: len(n.users) for n in nodes}
        by_name = {s.name: s for s in self.steps}
        for step in self.steps:
            inner = by_name.get(step.inputs[0])
            if step.kind == "maxpool" and inner is not None and inner.kind == "rescale" and inner.exact \
                    and users[inner.name] == 1:
                step.kind, step.fused, step.inputs = "relupool", inner, inner.inputs
        fused = {s.fused.name for s in self.steps if s.fused is not None}
        self.steps = [s for s in self.steps if s.name not in fused]

    def _step(self, node: fx.Node, rule: _Rule, deps: list[str], values: dict[str, Any]) -> _Step:
        gm = self.gm
        args = fx.node.map_arg(node.args, lambda a: values[a.name])
        kwargs = fx.node.map_arg(node.kwargs, lambda a: values[a.name])
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        if rule.kind == "linear":

            def fn(*dep_values: Any, node: fx.Node = node) -> Any:
                env = dict(zip(deps, dep_values, strict=True))
                get = lambda a: env[a.name] if a.name in env else values[a.name]  # noqa: E731
                return _node_call(node, gm, fx.node.map_arg(node.args, get), fx.node.map_arg(node.kwargs, get))

            try:
                with torch.enable_grad():
                    _, vjp = torch.func.vjp(fn, *[values[d] for d in deps])
            except Exception as err:  # noqa: BLE001 - torch.func raises many types on ops it cannot handle
                raise SharedPathUnavailable(f"{_describe(node, gm)}: {type(err).__name__}: {err}") from err
            return _Step(node.name, "linear", deps, vjp=vjp, fn=fn, node=node)
        first = node.args[0].name
        self.keep.update({first, node.name})
        if rule.kind == "rescale":
            return _Step(node.name, "rescale", [first], fn=_elementwise_fn(node, module, args, kwargs),
                         exact=_exact_secant(node, module))
        forward_fn, windows = _maxpool_fns(node, module, args, kwargs)
        return _Step(node.name, "maxpool", [first], fn=forward_fn, windows=windows, label=_describe(node, gm))

    def crop(self, span: tuple[int, int] | None) -> Any:
        """The :class:`~kipoi_dfim.backend.deeplift_torch_crop.Crop` of the walk to input positions ``span``
        (None: the full walk, also where nothing would be cut). Built once per span."""
        if span is None or tuple(span) == (0, self.input_shape[0]):
            return None
        span = (int(span[0]), int(span[1]))
        if span not in self.crops:
            from kipoi_dfim.backend.deeplift_torch_crop import build_crop

            self.crops[span] = build_crop(self, span)
        return self.crops[span]

    # -- phase 1: the shared forward pass ------------------------------------------------------------------
    def forward(
        self, z: torch.Tensor, n_windows: int, check_pools: bool, k: int = 1, crop: Any = None
    ) -> tuple[dict[str, Any], torch.Tensor]:
        """Per-row quantities the rules need, and the (rows, n_out) outputs, for the rows z (no autograd).

        z holds the n_windows window rows first (K consecutive windows per variant), then the reference rows.
        With a ``crop``, the boundary's activations are kept too (summation-to-delta is checked there).
        """
        keep = self.keep if crop is None else self.keep | {crop.top}
        rec = _Recorder(self.gm, self.rules, keep)
        with torch.no_grad():
            y = rec.run(z)
        values = rec.values
        for name in self.keep:
            if not isinstance(values[name], torch.Tensor) or values[name].shape[0] != len(z):
                raise SharedPathUnavailable(f"node {name} is not batch-major")
        acts: dict[str, Any] = {}
        cut = {} if crop is None else crop.cuts()
        for step in self.steps:
            if step.kind in ("maxpool", "relupool") and check_pools and not self.pools_checked:
                self._check_pool(step, values)
            if step.kind == "rescale":
                z_in, z_out = values[step.inputs[0]], values[step.name]
                if step.name in cut:  # the crop reads the positions it needs only
                    z_in, z_out = cut[step.name](z_in), cut[step.name](z_out)
                acts[step.name] = self._rescale_rows(step, z_in, z_out, n_windows)
            elif step.kind in ("maxpool", "relupool"):
                acts[step.name] = self._pool_step_rows(step, values, n_windows, k, cut.get(step.name))
        self.pools_checked = self.pools_checked or check_pools
        if crop is not None:
            acts["__boundary__"] = values[crop.top]
        return acts, y

    def _check_pool(self, step: _Step, values: dict[str, Any]) -> None:
        """The rule's windows must reproduce the model's own pooling output (checked on the first rows)."""
        zin = values[step.fused.name if step.fused is not None else step.inputs[0]]
        mine, theirs = step.windows(tuple(zin.shape)).pooled(zin), values[step.name]
        if mine.numel() != theirs.numel() or not torch.equal(theirs, mine.reshape(theirs.shape)):
            raise UnsupportedModelError(
                f"DeepLIFT: max-pooling {step.label}: this pooling configuration is not supported")

    def _pool_step_rows(self, step: _Step, values: dict[str, Any], n_windows: int, k: int,
                        cut: tuple[Callable, Callable] | None) -> dict[str, Any]:
        """Per-row parts of a max-pool (or relu -> max-pool) step; ``cut`` (positions, pooled windows): the
        crop's slices of a tiled relu -> max-pool, whose rows then cover those windows only."""
        zin, pooled = values[step.fused.name if step.fused is not None else step.inputs[0]], values[step.name]
        zrelu = values[step.inputs[0]]
        if cut is not None:
            zin, pooled, zrelu = cut[0](zin), cut[1](pooled), cut[0](zrelu)
        windows, full = step.windows(tuple(zin.shape)), tuple(zin.shape[1:])
        if tiled_pool(windows):  # the tiled rule's tensors: positions on the last axis
            axis = windows.axes[0]
            zin, pooled, zrelu = (positions_last(t, axis) for t in (zin, pooled, zrelu))
            windows = _Windows(tuple(zin.shape), [axis], windows.spec)
        rows = _pool_rows(windows, zin, pooled)
        rows["full"] = full
        if step.fused is not None:
            rows["relu"] = self._rescale_rows(step.fused, zrelu, zin, n_windows)
            if rows["tiled"]:
                out, kernel = rows["is_max"].shape[-2:]
                rows["is_max_flat"] = rows["is_max"].flatten(-2)
                if cut is None:  # the full walk's window-0 sharing (_relu_pool_pairs)
                    rows["spans"] = _window_spans(rows["relu"]["z"], n_windows // k, k, out, kernel)
        return rows

    @staticmethod
    def _rescale_rows(step: _Step, z: torch.Tensor, y: torch.Tensor, n_windows: int) -> dict[str, torch.Tensor]:
        """z, fn(z) of every row and fn'(z) of the window rows (the rule's fallback where x ~ r).

        As in the pairwise rule, smooth functions get their secant in float64; relu/relu6 in float32.
        """
        if not step.exact:
            z, y = z.double(), step.fn(z.double())
        with torch.enable_grad():
            zz = z[:n_windows].detach().requires_grad_(True)
            (derivative,) = torch.autograd.grad(step.fn(zz).sum(), zz)
        return {"z": z, "y": y, "d": derivative}

    # -- phase 2: the pair backward --------------------------------------------------------------------
    def backward(self, acts: dict[str, Any], pairs: _Pairs, crop: Any = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Input multipliers (P, L, 4) of a block of pair rows; with a ``crop`` to input positions [a, b),
        the multipliers (P, b - a, 4) there and the (P,) sums of cotangent x delta at the crop's boundary
        (None without a crop: summation-to-delta is then checked on the input multipliers)."""
        p = pairs.p
        onehot = F.one_hot(pairs.targets, self.output_shape[1]).to(self.dtype)  # (Tb, n_out)
        v = pairs.v1 - pairs.v0
        onehot = onehot[None, None, :, None].expand(v, pairs.k, -1, pairs.r, -1)
        cot: dict[str, Any] = {self.output: onehot.reshape(p, *self.output_shape)}
        for step in self.steps:
            g = cot.pop(step.name, None)
            if crop is not None and step.name == crop.top:
                return self._cropped(acts, pairs, crop, g)
            if g is None:
                continue
            if step.kind == "linear":
                grads = _unaliased(torch.vmap(step.vjp)(g))
            elif step.kind == "rescale":
                grads = (_rescale_pairs(acts[step.name], pairs, g[:, 0]).unsqueeze(1),)
            elif step.kind == "maxpool" or not acts[step.name]["tiled"]:
                grads = (_pool_pairs(acts[step.name], pairs, g[:, 0]).unsqueeze(1),)
                if step.fused is not None:
                    grads = (_rescale_pairs(acts[step.name]["relu"], pairs, grads[0][:, 0]).unsqueeze(1),)
            else:
                buffers = self.buffers.setdefault((threading.get_ident(), step.name), {})
                grads = (_relu_pool_pairs(acts[step.name], pairs, g[:, 0], buffers).unsqueeze(1),)
            for name, grad in zip(step.inputs, grads, strict=True):
                cot[name] = grad if name not in cot else torch.utils._pytree.tree_map(torch.add, cot[name], grad)
        if self.input not in cot:  # the target does not depend on the input
            return torch.zeros(p, *self.input_shape, dtype=self.dtype, device=pairs.targets.device), None
        return cot[self.input][:, 0], None

    def _cropped(self, acts: dict[str, Any], pairs: _Pairs, crop: Any, g: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rest of the walk below the crop's boundary, whose cotangent is ``g`` (None: zero)."""
        if g is None:
            a, b = crop.span
            dev = pairs.targets.device
            return (torch.zeros(pairs.p, b - a, *self.input_shape[1:], dtype=self.dtype, device=dev),
                    torch.zeros(pairs.p, dtype=torch.float64, device=dev))
        ident = threading.get_ident()
        return crop.backward(acts, pairs, g, lambda name: self.buffers.setdefault((ident, name), {}))


def _unaliased(grads: tuple) -> tuple:
    """The cotangents of a linear op's inputs, none sharing memory with another: the vector-Jacobian product
    of an addition hands the same tensor to both inputs, and the rules below multiply theirs in place."""
    seen: set[int] = set()
    out = []
    for grad in grads:
        if isinstance(grad, torch.Tensor):
            ptr = grad.untyped_storage().data_ptr()
            grad = grad.clone() if ptr in seen else grad
            seen.add(ptr)
        out.append(grad)
    return tuple(out)


def _rescale_pairs(rows: dict[str, torch.Tensor], pairs: _Pairs, g: torch.Tensor) -> torch.Tensor:
    """Cotangent g (P, ...) times the Rescale multipliers of the block's pairs (same as the pairwise rule).

    In place where possible: on CPU a fresh large tensor costs page faults that exceed the arithmetic.
    """
    delta = pairs.window(rows["z"]) - pairs.reference(rows["z"])
    m = torch.sub(pairs.window(rows["y"]), pairs.reference(rows["y"])).div_(delta)
    small = delta.abs_() < RESCALE_EPS
    m = torch.where(small, pairs.window(rows["d"]), m, out=m)
    return pairs.grid(g).mul_(m.to(g.dtype)).reshape(g.shape)


def tiled_pool(windows: _Windows) -> bool:
    """Windows side by side along one axis, from its start, every later axis of size 1 (the last axis, or
    torch7's (C, L, 1) layout): the pool rule's reshape form applies, on the tensors seen as (..., L)."""
    a, axis = windows.spec[0], windows.axes[0]
    return (windows.tiled and all(n == 1 for n in windows.shape[axis + 1:]) and a["left"] == 0
            and a["out"] * a["kernel"] <= a["length"])


def positions_last(t: torch.Tensor, axis: int) -> torch.Tensor:
    """``t`` without its trailing axes of size 1 after ``axis`` (a view): positions on the last axis."""
    return t.reshape(t.shape[: axis + 1]) if t.ndim > axis + 1 else t


def _pool_rows(windows: _Windows, z: torch.Tensor, pooled: torch.Tensor) -> dict[str, Any]:
    """Per-row parts of the max-pool rule: window maxima, where they are attained, and 1 / tie count.

    Ties are split evenly (docs/deeplift.md); the share of a position is ``is_max / count``, and the
    division is applied to the window-sized factors of the pair step rather than to every position.
    ``pooled`` is the model's own pooling output (equal to the window maxima, checked on the first chunk).
    """
    if tiled_pool(windows):
        n_out, kernel = windows.spec[0]["out"], windows.spec[0]["kernel"]
        top = pooled.reshape(*z.shape[:-1], n_out)
        w = z[..., : n_out * kernel].reshape(*z.shape[:-1], n_out, kernel)
        is_max = w == top.unsqueeze(-1)  # bool: a quarter of the bytes the pair steps read
        count = is_max[..., 0].to(z.dtype)
        for j in range(1, kernel):  # kernel adds of strided slices: cheaper than a reduction over 2-4 elements
            count += is_max[..., j]
        inv = count.reciprocal_()
        return {"tiled": True, "z": z, "top": top, "is_max": is_max, "inv": inv, "windows": windows}
    return {"tiled": False, "z": z, "windows": windows}


def _buffer(buffers: dict | None, key: str, shape: tuple[int, ...], like: torch.Tensor,
            dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """A scratch tensor kept between blocks (None without a buffer dict).

    On CPU, a fresh tensor of tens of megabytes is mapped anew by the allocator and page-faulted on first
    write, which costs more than the arithmetic that fills it; blocks of a call have the same shapes.
    """
    if buffers is None:
        return None
    dtype = dtype or like.dtype
    b = buffers.get(key)
    if b is None or tuple(b.shape) != tuple(shape) or b.dtype != dtype or b.device != like.device:
        b = buffers[key] = torch.empty(shape, dtype=dtype, device=like.device)
    return b


def _routed(rows: dict[str, Any], pairs: _Pairs, gg: torch.Tensor, buffers: dict | None = None) -> torch.Tensor:
    """share_x * g (c - y_r) + share_r * g (y_x - c) per pooled position, (V, K, Tb, R, ..., out, kernel)."""
    top_x, top_r = pairs.window(rows["top"]), pairs.reference(rows["top"])
    cross = torch.maximum(top_x, top_r)
    a = (gg * (cross - top_r) * pairs.window(rows["inv"])).unsqueeze(-1)
    b = (gg * (top_x - cross) * pairs.reference(rows["inv"])).unsqueeze(-1)
    is_max_x = pairs.window(rows["is_max"])
    shape = torch.broadcast_shapes(is_max_x.shape, a.shape, pairs.reference(rows["is_max"]).shape)
    routed = torch.mul(is_max_x, a, out=_buffer(buffers, "routed", shape, a))
    return routed.addcmul_(pairs.reference(rows["is_max"]), b)


def _fallback(rows: dict[str, Any], pairs: _Pairs, gg: torch.Tensor) -> torch.Tensor:
    """The tie-split gradient at x of the pool, share_x * g, (V, K, Tb, R, ..., out, kernel)."""
    return torch.mul(pairs.window(rows["is_max"]), (gg * pairs.window(rows["inv"])).unsqueeze(-1))


def _pool_pairs(rows: dict[str, Any], pairs: _Pairs, g: torch.Tensor) -> torch.Tensor:
    """Pooled cotangent g (P, ...) pushed through the max-pool rule for the block's pairs, (P, *z.shape[1:])."""
    z = rows["z"]
    shape = tuple(z.shape[1:])
    if not rows["tiled"]:  # general geometry: the pairwise rule on gathered rows
        grid = pairs.grid(g)
        zx = pairs.window(z).expand(*grid.shape[:4], *shape).reshape(pairs.p, *shape)
        zr = pairs.reference(z).expand(*grid.shape[:4], *shape).reshape(pairs.p, *shape)
        windows = rows["windows"]
        return maxpool_multiplier_torch(type(windows)((pairs.p, *shape), windows.axes, windows.spec), zx, zr, g)
    gg = pairs.grid(g.reshape(pairs.p, *rows["top"].shape[1:]))
    routed = _routed(rows, pairs, gg)  # one buffer, filled in place (see _rescale_pairs)
    out_len = routed.shape[-2] * routed.shape[-1]
    m = routed.reshape(*routed.shape[:-2], out_len)
    delta = pairs.window(z)[..., :out_len] - pairs.reference(z)[..., :out_len]
    zero = delta == 0
    m.div_(delta)
    m = torch.where(zero, _fallback(rows, pairs, gg).reshape(m.shape), m, out=m)
    if out_len < z.shape[-1]:  # positions after the last window receive nothing
        m = F.pad(m, (0, z.shape[-1] - out_len))
    return m.reshape(pairs.p, *rows["full"])


def _window_spans(z: torch.Tensor, n: int, k: int, out: int, kernel: int) -> np.ndarray:
    """(n, K, 2) pooled-window range [lo, hi) where window k's pool input differs from window 0's.

    DFIM's windows of a variant differ in a few bases, so below a wide layer their activations differ only
    in a slice; the rule's per-pair factor of window k is window 0's outside it (``_relu_pool_pairs``).
    Window 0 gets the empty range.
    """
    spans = np.zeros((n, k, 2), np.int64)
    if k == 1:
        return spans
    w = z[: n * k, ..., : out * kernel].reshape(n, k, -1, out, kernel)
    differs = (w[:, 1:] != w[:, :1]).any(-1).flatten(2, -2).any(2).cpu().numpy()  # (n, K - 1, out)
    has = differs.any(-1)
    lo = differs.argmax(-1)
    hi = out - differs[..., ::-1].argmax(-1)
    spans[:, 1:, 0] = np.where(has, lo, 0)
    spans[:, 1:, 1] = np.where(has, hi, 0)
    return spans


def _relu_pool_factor(rows: dict[str, Any], xs: Callable[[torch.Tensor], torch.Tensor],
                      rs: Callable[[torch.Tensor], torch.Tensor], buffers: dict | None = None,
                      key: str = "factor") -> torch.Tensor:
    """The per-pair factor A of relu (or relu6) followed by a tiled max-pool: cotangent g at the relu's
    input = g (pooled, broadcast over the window) * A, (..., out, kernel).

    ``xs`` / ``rs`` select the window rows / reference rows of any per-row tensor (pooled-axis slice
    included), broadcasting against each other. The pairwise engine multiplies the pool multiplier
    routed / (y_x - y_r) by the Rescale multiplier (y_x - y_r) / (z_x - z_r), routed = g * numerator; the
    product is g * numerator / (z_x - z_r). Where y_x == y_r but z_x != z_r the relu multiplier is 0 and so
    is the numerator (docs/deeplift.md), so the quotient holds there too. Only where |z_x - z_r| <
    RESCALE_EPS are the two factors formed separately (few elements, gathered).
    """
    relu = rows["relu"]
    top_x, top_r = xs(rows["top"]), rs(rows["top"])
    cross = torch.maximum(top_x, top_r)
    ax = ((cross - top_r) * xs(rows["inv"])).unsqueeze(-1)
    br = ((top_x - cross) * rs(rows["inv"])).unsqueeze(-1)
    kernel = rows["is_max"].shape[-1]
    is_max_x = xs(rows["is_max_flat"]).unflatten(-1, (-1, kernel))
    is_max_r = rs(rows["is_max_flat"]).unflatten(-1, (-1, kernel))
    shape = torch.broadcast_shapes(is_max_x.shape, ax.shape, is_max_r.shape)
    num = torch.mul(is_max_x, ax, out=_buffer(buffers, key, shape, ax)).addcmul_(is_max_r, br)
    zx, zr = xs(relu["z"]).unflatten(-1, (-1, kernel)), rs(relu["z"]).unflatten(-1, (-1, kernel))
    delta = torch.sub(zx, zr, out=_buffer(buffers, key + "_delta", shape, zx))
    small = torch.lt(delta.abs(), RESCALE_EPS) if buffers is None else torch.lt(
        torch.abs(delta, out=_buffer(buffers, key + "_abs", shape, zx)), RESCALE_EPS,
        out=_buffer(buffers, key + "_small", shape, zx, torch.bool))
    idx = small.nonzero(as_tuple=True)  # one pass; usually a handful of elements
    if len(idx[0]):  # the pairwise formula at the few elements where z_x ~ z_r
        y = relu["y"]
        dy = (xs(y).unflatten(-1, (-1, kernel)).expand(shape)[idx]
              - rs(y).unflatten(-1, (-1, kernel)).expand(shape)[idx])
        fallback = is_max_x.expand(shape)[idx] * xs(rows["inv"]).unsqueeze(-1).expand(shape)[idx]
        pool_m = torch.where(dy == 0, fallback, num[idx] / torch.where(dy == 0, torch.ones_like(dy), dy))
        fixed = pool_m * xs(relu["d"]).unflatten(-1, (-1, kernel)).expand(shape)[idx]
    num.div_(delta)
    if len(idx[0]):
        num[idx] = fixed
    return num


def _relu_pool_pairs(rows: dict[str, Any], pairs: _Pairs, g: torch.Tensor, buffers: dict | None = None
                     ) -> torch.Tensor:
    """relu (or relu6) followed by a tiled max-pool, for the block's pairs: cotangent at the relu's input.

    The multiplier is g (pooled cotangent, per pair and target) times a factor of the (window, reference)
    pair alone (``_relu_pool_factor``), formed once for all targets. The factor of window 0 is formed for
    every reference; windows k > 0 reuse it and only the pooled-window slice where their pool input differs
    from window 0's (``rows["spans"]``, from the shared forward pass; one slice per k, the union over the
    block's variants, so a block costs a fixed number of ops) is formed for them, unless the slices are wide
    (windows that are not one variant's alleles), in which case every window's factor is formed.
    """
    z = rows["relu"]["z"]
    kernel, out = rows["is_max"].shape[-1], rows["top"].shape[-1]
    v0, v1, k = pairs.v0, pairs.v1, pairs.k
    spans = rows["spans"][v0:v1]
    gg = pairs.grid(g.reshape(pairs.p, *rows["top"].shape[1:])).unsqueeze(-1)  # (V, K, Tb, R, ..., out, 1)
    has = spans[..., 1] > spans[..., 0]  # (V, K)
    lo = np.where(has, spans[..., 0], out).min(0)  # per window: the union of the block's variants' slices
    hi = np.where(has, spans[..., 1], 0).max(0)
    shared = k > 1 and int((hi - lo).max()) * 2 <= out
    xs, rs = _pool_selectors(pairs, out, kernel, slice(0, 1) if shared else slice(None))
    factor = _relu_pool_factor(rows, xs, rs, buffers)
    m = torch.mul(gg, factor, out=_buffer(buffers, "m", torch.broadcast_shapes(gg.shape, factor.shape), factor))
    for w in np.flatnonzero(hi > lo) if shared else ():
        a, b = int(lo[w]), int(hi[w])
        xs, rs = _pool_selectors(pairs, out, kernel, slice(w, w + 1), (a, b))
        m[:, w, ..., a:b, :] = gg[:, w, ..., a:b, :] * _relu_pool_factor(rows, xs, rs)[:, 0]
    m = m.reshape(*m.shape[:-2], out * kernel)
    if out * kernel < z.shape[-1]:  # positions after the last window receive nothing
        m = F.pad(m, (0, z.shape[-1] - out * kernel))
    return m.reshape(pairs.p, *rows["full"])


def _pool_selectors(pairs: _Pairs, out: int, kernel: int, windows: slice, span: tuple[int, int] | None = None
                    ) -> tuple[Callable, Callable]:
    """Row selectors for ``_relu_pool_factor``: the block's windows (``windows`` of each variant) and its
    references, cropped to the pooled windows, optionally to a pooled-window slice ``span``.

    Pooled tensors end in an axis of ``out`` windows, the others in positions (``out * kernel`` used).
    """
    lo, hi = span if span is not None else (0, out)

    def crop(t: torch.Tensor) -> torch.Tensor:
        return t[..., lo:hi] if t.shape[-1] == out else t[..., lo * kernel: hi * kernel]

    return (lambda t: pairs.window(crop(t))[:, windows]), (lambda t: pairs.reference(crop(t)))


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _shared_plan(module: nn.Module, example: torch.Tensor) -> SharedPlan:
    """The module's SharedPlan for inputs like ``example``, built once and cached (weakly) per module.

    Tracing and the batch-1 vector-Jacobian products cost about as much as a few dozen pairs, so adapters
    calling the engine chunk by chunk reuse them. The plan reads the module's parameters live.
    """
    key = (tuple(example.shape[1:]), example.dtype, str(example.device))
    plans = _PLANS.setdefault(module, {})
    if key not in plans:
        try:
            gm, rules = trace_rules(module, example)
            plans[key] = SharedPlan(gm, rules, example)
        except (UnsupportedModelError, SharedPathUnavailable) as err:
            raise SharedPathUnavailable(str(err)) from err
    return plans[key]


def deeplift_shared_torch(
    module: torch.nn.Module, x: np.ndarray, references: np.ndarray, targets: list[int], batch_size: int = 64,
    span: tuple[int, int] | None = None,
) -> np.ndarray:
    """Hypothetical DeepSHAP scores of K windows per variant sharing R references, for T targets.

    The windows and the references of about ``batch_size / (K R)`` variants go through ONE forward pass
    (recording what the rules need); then, per block of about ``batch_size`` (window, reference, target)
    rows, only the backward pass of the multipliers runs (:class:`SharedPlan`). The rules are those of
    :func:`deeplift_multipliers_torch`, so the numbers are the same; summation-to-delta is checked for every
    (window, reference, target) and one RuntimeWarning counts the misses.

    Parameters
    ----------
    module : torch.nn.Module
        Maps (B, L, 4) to (B, n_out) scored outputs; run in eval mode and traced with torch.fx.
    x : np.ndarray
        (N, K, L, 4) one-hot windows.
    references : np.ndarray
        (N, R, L, 4) references, shared by the K windows of a variant.
    targets : list of int
        Output columns to explain.
    batch_size : int
        (window, reference, target) rows per backward pass (whole groups of R). Results do not depend on it.
    span : (int, int), optional
        Input positions [a, b) the caller reads. Where the bottom of the model is a chain of local ops
        (convolutions, relu -> max-pool, ...), the backward pass below it is restricted to what reaches
        [a, b) (:mod:`~kipoi_dfim.backend.deeplift_torch_crop`): the scores there are the same, the scores
        outside are 0, and summation-to-delta is checked at the chain's top. None: every position.

    Returns
    -------
    np.ndarray
        float32 (N, K, T, L, 4), averaged over the references.

    Raises
    ------
    SharedPathUnavailable
        If the module cannot be traced or its graph does not fit the engine (use the pairwise engine).
    UnsupportedModelError
        If a max-pooling configuration is not reproduced by the rule's windows.
    """
    x, references = check_shared_inputs(x, references, targets, batch_size)
    n, k, length = x.shape[:3]
    r, t = references.shape[1], len(targets)
    try:
        device = next(module.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    out = np.zeros((n, k, t, length, 4), np.float32)
    masks = []
    with _eval_mode(module):
        plan = _shared_plan(module, torch.from_numpy(x[:1, 0]).to(device))
        crop = plan.crop(span)
        for i, (a, b) in enumerate(variant_chunks(n, k, r, batch_size)):
            out[a:b], mask = _shared_chunk(plan, x[a:b], references[a:b], targets, batch_size, device, i == 0, crop)
            masks.append(mask.ravel())
    warn_violations(np.concatenate(masks), "PyTorch", "(window, reference, target) triples")
    return out


def _shared_chunk(
    plan: SharedPlan, x: np.ndarray, references: np.ndarray, targets: list[int], batch_size: int,
    device: torch.device, first: bool, crop: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(hypothetical scores (n, K, T, L, 4), violation mask (n, K, T, R)) of one chunk of variants."""
    n, k, length = x.shape[:3]
    r, t = references.shape[1], len(targets)
    a, b = (0, length) if crop is None else crop.span
    rows = np.concatenate([x.reshape(n * k, length, 4), references.reshape(n * r, length, 4)])
    acts, y = plan.forward(torch.from_numpy(rows).to(device), n * k, check_pools=first, k=k, crop=crop)
    for tg in targets:
        _scored(y, int(tg))  # checks the output shape and the target range
    m = np.empty((n, k, t, r, b - a, 4), np.float32)
    sums = np.empty((n, k, t, r), np.float64)
    for v0, v1, t0, t1 in pair_blocks(n, k, t, r, batch_size):
        pairs = _Pairs(v0, v1, torch.tensor(targets[t0:t1], dtype=torch.int64, device=device), n, k, r)
        mb, sb = plan.backward(acts, pairs, crop)
        m[v0:v1, :, t0:t1] = mb.detach().cpu().numpy().reshape(v1 - v0, k, t1 - t0, r, b - a, 4)
        if sb is not None:
            sums[v0:v1, :, t0:t1] = sb.cpu().numpy().reshape(v1 - v0, k, t1 - t0, r)
    f = y.reshape(len(rows), -1).double().cpu().numpy()[:, targets]
    f_x, f_r = f[: n * k].reshape(n, k, t), f[n * k:].reshape(n, r, t)
    if crop is None:
        return hypothetical_mean(m, references), shared_violations(m, x, references, f_x, f_r)
    hyp = np.zeros((n, k, t, length, 4), np.float32)
    hyp[..., a:b, :] = hypothetical_mean(m, references[:, :, a:b])
    return hyp, delta_violations(sums, f_x, f_r)


# --------------------------------------------------------------------------------------------------------
# Public entry point.
# --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode (dropout off, batch-norm running stats), restore on exit."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _scored(y: Any, target: int) -> torch.Tensor:
    """Column ``target`` of a (B, T) output (trailing axes of size 1 allowed)."""
    if not isinstance(y, torch.Tensor):
        raise UnsupportedModelError(f"DeepLIFT: the model must return one tensor, got {type(y).__name__}")
    if y.ndim < 2 or any(s != 1 for s in y.shape[2:]):
        raise UnsupportedModelError(f"DeepLIFT: the model must return (B, T) scores, got shape {tuple(y.shape)}")
    if not 0 <= target < y.shape[1]:
        raise InputError(f"DeepLIFT: target {target} out of range for {y.shape[1]} model outputs")
    return y.reshape(y.shape[0], y.shape[1])[:, target]


def deeplift_multipliers_torch(
    module: torch.nn.Module, x: np.ndarray, references: np.ndarray, target: int, batch_size: int = 64
) -> np.ndarray:
    """DeepLIFT multipliers of output ``target`` for every (sequence, reference) pair.

    The contribution of pair (i, r) is ``m[i, r] * (x[i] - references[i, r])``; it sums over (L, 4) to
    ``f(x_i)[target] - f(ref_ir)[target]`` (checked for every pair; one RuntimeWarning reports how many
    pairs miss by more than the tolerance in docs/deeplift.md). Multipliers, not contributions, are returned
    so that hypothetical contributions (DeepSHAP for genomics) can be formed from them.

    Parameters
    ----------
    module : torch.nn.Module
        Maps a (B, L, 4) float tensor to (B, T) scored outputs (logits); layout conversion inside. It is run
        in eval mode (restored afterwards) and traced with torch.fx.
    x : np.ndarray
        One-hot sequences (N, L, 4), ACGT.
    references : np.ndarray
        References (N, R, L, 4).
    target : int
        Output column to explain.
    batch_size : int
        Pairs per forward/backward pass (the model sees 2 * batch_size rows). Results do not depend on it.

    Returns
    -------
    np.ndarray
        float32 multipliers (N, R, L, 4).

    Raises
    ------
    UnsupportedModelError
        If an op that depends on the input has no rule (named in the message) or tracing fails.
    """
    x, references = check_inputs(x, references, batch_size)
    n, r = references.shape[:2]
    out = np.zeros(references.shape, dtype=np.float32)
    f_x = np.zeros((n, r), dtype=np.float64)
    f_ref = np.zeros((n, r), dtype=np.float64)
    try:
        device = next(module.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    with _eval_mode(module):
        gm, rules = trace_rules(module, torch.from_numpy(x[:1]).to(device))
        interpreter = _DeepLiftInterpreter(gm, rules)
        for seq, ref in pair_batches(n, r, int(batch_size)):
            half = len(seq)
            z = torch.from_numpy(np.concatenate([x[seq], references[seq, ref]])).to(device).requires_grad_(True)
            y = _scored(interpreter.run(z), int(target))
            (grad,) = torch.autograd.grad(y[:half].sum(), z)
            out[seq, ref] = grad[:half].detach().cpu().numpy()
            values = y.detach().cpu().double().numpy()
            f_x[seq, ref], f_ref[seq, ref] = values[:half], values[half:]
    warn_violations(conservation_violations(out, x, references, f_x, f_ref), "PyTorch")
    return out
