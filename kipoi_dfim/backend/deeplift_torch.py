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
    conservation_violations,
    pair_batches,
    warn_violations,
)
from kipoi_dfim.errors import InputError, UnsupportedModelError

__all__ = ["deeplift_multipliers_torch", "window_max_torch"]

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

    The secant is computed in float64 from the float32 activations so that the two engines, whose float32
    activations agree to ~1e-7, give the same multipliers; where |x - r| < RESCALE_EPS the derivative at x
    is used (the limit of the secant). Both halves of the returned gradient carry the x-half multiplier,
    so the pair stays consistent through every later rule.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.fn = fn
        return fn(z)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (z,) = ctx.saved_tensors
        half = z.shape[0] // 2
        x = z[:half].detach().double()
        r = z[half:].detach().double()
        multiplier = rescale_multiplier_torch(ctx.fn, x, r)
        h = grad[:half] * multiplier.to(grad.dtype)
        return torch.cat([h, h]), None


def rescale_multiplier_torch(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, r: torch.Tensor
) -> torch.Tensor:
    """Rescale multiplier (fn(x) - fn(r)) / (x - r), derivative at x where |x - r| < RESCALE_EPS.

    Parameters
    ----------
    fn : callable
        Elementwise function.
    x, r : torch.Tensor
        Activations of the sequence and of the reference (same shape; float64 recommended).
    """
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        fx_ = fn(xg)
        (derivative,) = torch.autograd.grad(fx_.sum(), xg)
    delta = x - r
    small = delta.abs() < RESCALE_EPS
    secant = (fx_.detach() - fn(r)) / torch.where(small, torch.ones_like(delta), delta)
    return torch.where(small, derivative, secant)


class _MaxPool(torch.autograd.Function):
    """The shared max-pool rule (docs/deeplift.md), on the paired batch.

    ``forward_fn`` is the model's own pooling op; ``window_max`` re-expresses it as a max over explicit
    windows whose backward splits ties evenly (``amax``), which is what both engines use to route. The
    forward checks that both give the same numbers so a pooling configuration the re-expression gets wrong
    cannot slip through.
    """

    @staticmethod
    def forward(
        ctx: Any,
        z: torch.Tensor,
        forward_fn: Callable[[torch.Tensor], torch.Tensor],
        window_max: Callable[[torch.Tensor], torch.Tensor],
        name: str,
    ) -> torch.Tensor:
        y = forward_fn(z)
        if not torch.equal(y, window_max(z)):
            raise UnsupportedModelError(f"DeepLIFT: max-pooling {name}: this pooling configuration is not supported")
        ctx.save_for_backward(z)
        ctx.window_max = window_max
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (z,) = ctx.saved_tensors
        half = z.shape[0] // 2
        m = maxpool_multiplier_torch(
            ctx.window_max, z[:half].detach().double(), z[half:].detach().double(), grad[:half].double()
        ).to(grad.dtype)
        return torch.cat([m, m]), None, None, None


def maxpool_multiplier_torch(
    window_max: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, r: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    """Upstream multipliers ``grad`` pushed through a max-pool by the shared rule.

    With c = max(y_x, y_r) per window, (c - y_r) goes to the argmax of x and (y_x - c) to the argmax of the
    reference (ties split evenly), and each input's routed total is divided by its own x - r; where x == r
    the gradient at x is used. The pieces sum to y_x - y_r, so summation-to-delta holds exactly.

    Parameters
    ----------
    window_max : callable
        The pooling as a max over explicit windows (see ``window_max_torch``).
    x, r : torch.Tensor
        Pool inputs of the sequences and of their references.
    grad : torch.Tensor
        Multipliers of the pool outputs (x half).
    """
    with torch.enable_grad():
        xv = x.requires_grad_(True)
        rv = r.requires_grad_(True)
        yx = window_max(xv)
        yr = window_max(rv)
        cross = torch.maximum(yx, yr).detach()
        routed_x, gradient_x = (
            torch.autograd.grad(yx, xv, g, retain_graph=True)[0] for g in (grad * (cross - yr.detach()), grad)
        )
        (routed_r,) = torch.autograd.grad(yr, rv, grad * (yx.detach() - cross))
    delta = (x - r).detach()
    zero = delta == 0
    ratio = (routed_x + routed_r) / torch.where(zero, torch.ones_like(delta), delta)
    return torch.where(zero, gradient_x, ratio)


# --------------------------------------------------------------------------------------------------------
# Pooling as an explicit max over windows.
# --------------------------------------------------------------------------------------------------------


def _as_tuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value),) * n


def window_max_torch(
    z: torch.Tensor,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    ceil_mode: bool,
) -> torch.Tensor:
    """PyTorch max-pooling over the last ``len(kernel)`` axes written as ``amax`` over explicit windows.

    ``amax`` splits its gradient evenly among tied maxima, the same as TensorFlow's ``reduce_max``; the
    Keras engine builds the identical construction, so ties (frequent in repetitive sequence) are routed the
    same way in both frameworks. Padding is -inf, as in ``torch.nn.MaxPool1d``.
    """
    nd = len(kernel)
    base = z.ndim - nd
    for i in range(nd):
        dim = base + i
        length, k, s, p, d = z.shape[dim], kernel[i], stride[i], padding[i], dilation[i]
        span = d * (k - 1) + 1
        out = (length + 2 * p - span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= length + p:
            out -= 1
        need = (out - 1) * s + span
        right = max(need - length - p, 0)
        parts = []
        for size in (p, None, right):
            if size is None:
                parts.append(z)
            elif size > 0:
                shape = list(z.shape)
                shape[dim] = size
                parts.append(torch.full(shape, -torch.inf, dtype=z.dtype, device=z.device))
        z = torch.cat(parts, dim=dim) if len(parts) > 1 else z
        z = z.narrow(dim, 0, need).unfold(dim, span, s)
        if d > 1:
            z = z[..., ::d]
    return z.amax(dim=tuple(range(-nd, 0)))


def _maxpool_fns(
    node: fx.Node, module: nn.Module | None, args: tuple, kwargs: dict
) -> tuple[Callable, Callable]:
    """(model's own pooling op, window-max re-expression) for a max-pool node."""
    if isinstance(module, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
        nd = 1 if isinstance(module, nn.AdaptiveMaxPool1d) else 2
        dims = tuple(range(-nd, 0))
        return module, lambda t: t.amax(dim=dims, keepdim=True)
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
        params.update(dict(zip(names, args[1:])))
        params.update(kwargs)
        params.pop("return_indices", None)
        target, rest = node.target, args[1:]

        def forward_fn(t: torch.Tensor) -> torch.Tensor:
            return target(t, *rest, **kwargs)
    else:  # amax: the op is its own window max
        rest = args[1:]
        method = node.op == "call_method"

        def amax(t: torch.Tensor) -> torch.Tensor:
            return t.amax(*rest, **kwargs) if method else torch.amax(t, *rest, **kwargs)

        return amax, amax
    kernel = _as_tuple(params["kernel_size"], nd)
    stride = _as_tuple(params["stride"] if params["stride"] not in (None, [], ()) else kernel, nd)
    spec = (kernel, stride, _as_tuple(params["padding"], nd), _as_tuple(params["dilation"], nd))
    ceil_mode = bool(params["ceil_mode"])
    return forward_fn, lambda t: window_max_torch(t, *spec, ceil_mode)


# --------------------------------------------------------------------------------------------------------
# Tracing and classification.
# --------------------------------------------------------------------------------------------------------


def _describe(node: fx.Node, gm: fx.GraphModule) -> str:
    """Human name of an fx node for error messages."""
    if node.op == "call_module":
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
        "exp, and max-pooling (see docs/deeplift.md)"
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


def trace_rules(module: nn.Module) -> tuple[fx.GraphModule, dict[str, _Rule]]:
    """Trace ``module`` with torch.fx and classify every input-dependent op.

    Parameters
    ----------
    module : torch.nn.Module
        Must be in eval mode (dropout and batch-norm flags are recorded as traced).

    Returns
    -------
    graph_module, rules
        The traced module and the rule for every node that depends on the input.

    Raises
    ------
    UnsupportedModelError
        If the module cannot be traced (data-dependent control flow) or an op has no rule; the message
        names the layer or function.
    """
    try:
        gm = fx.symbolic_trace(module)
    except Exception as err:  # fx raises many types (TraceError, TypeError, ...)
        raise UnsupportedModelError(
            f"DeepLIFT: cannot trace {type(module).__name__} with torch.fx ({type(err).__name__}: {err}); "
            "the DeepLIFT engine needs every op of forward() visible to assign it a rule"
        ) from err
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
        rules[node.name] = _classify(node, gm, dependent)
        dependent.add(node.name)
    return gm, rules


class _DeepLiftInterpreter(fx.Interpreter):
    """Runs a traced module, swapping the nonlinear ops for the DeepLIFT autograd functions."""

    def __init__(self, gm: fx.GraphModule, rules: dict[str, _Rule]):
        super().__init__(gm)
        self.rules = rules

    def run_node(self, n: fx.Node) -> Any:
        rule = self.rules.get(n.name)
        if rule is None or rule.kind == "linear":
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        module = self.module.get_submodule(n.target) if n.op == "call_module" else None
        if rule.kind == "rescale":
            return _Rescale.apply(args[0], _elementwise_fn(n, module, args, kwargs))
        forward_fn, window_max = _maxpool_fns(n, module, args, kwargs)
        return _MaxPool.apply(args[0], forward_fn, window_max, _describe(n, self.module))


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
        gm, rules = trace_rules(module)
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
