"""DeepLIFT for PyTorch modules that torch.fx cannot trace: rules keyed by module type, applied with hooks.

The zoo's torch7-converted models (Basset, DeepSEA, Beluga) wrap Python lambdas with data-dependent branches
(``x.view(1, -1) if 1 == len(x.size()) else x``) in ``Lambda`` modules; torch.fx cannot trace them, so the
graph engine of ``deeplift_torch`` cannot see their ops. Here, as captum and tangermeme do, the rules are
attached to modules instead: every ``nn.ReLU``/``nn.Threshold``/``nn.Sigmoid``/... call gets the Rescale rule
and every ``nn.MaxPool*`` call the shared max-pool rule (the same multiplier functions as the fx engine, see
docs/deeplift.md); everything else is differentiated as if it were linear.

That last assumption is what hooks cannot check: a nonlinearity written as a function inside some module's
``forward`` (``F.relu`` in a custom block, ``torch.sigmoid`` in a ``Lambda``) is invisible to module rules.
The safety net is summation-to-delta, which such an op breaks: in this engine a violation RAISES an
UnsupportedModelError naming the modules that ran without a rule (never silent numbers), while gradient x
input, integrated gradients and ISM keep working.

Unlike the paired ``[x; ref]`` batch of the fx engine, the reference and the sequence run in two separate
passes (the reference pass records each rule module's input/output per call); modules that mix batch rows
(DeepSEA/predict concatenates the reverse complement along the batch axis, then averages the halves) are
therefore handled correctly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from kipoi_dfim.backend._deeplift_common import (
    CONSERVATION_RTOL,
    check_inputs,
    conservation_violations,
    pair_batches,
)
from kipoi_dfim.backend.deeplift_torch import (
    _ELEMENTWISE_MODULES,
    _LINEAR_MODULES,
    maxpool_multiplier_torch,
    maxpool_windows_torch,
    rescale_multiplier_torch,
)
from kipoi_dfim.errors import InputError, UnsupportedModelError

__all__ = ["deeplift_multipliers_modules", "module_rules"]

#: Modules with the Rescale rule (elementwise nonlinearities, nn.Threshold included: the fx engine's list).
RESCALE_MODULES: tuple[type, ...] = _ELEMENTWISE_MODULES

MAXPOOL_MODULES: tuple[type, ...] = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)

#: Leaf modules that are linear in their input (exactly what the linear rule assumes): the fx engine's list.
LINEAR_MODULES: tuple[type, ...] = _LINEAR_MODULES

#: Containers whose own forward only chains children (no op of their own).
_PURE_CONTAINERS: tuple[type, ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def module_rules(module: nn.Module) -> tuple[dict[str, str], list[str]]:
    """Rule of every submodule by type, and the modules whose own code runs without a rule.

    Returns
    -------
    rules : dict
        Qualified name -> ``"rescale"`` or ``"maxpool"``.
    opaque : list of str
        ``"name (Class)"`` of parameter-free leaf modules and custom containers not known to be linear: their
        forward code is differentiated as if linear, which the summation-to-delta check verifies.

    Raises
    ------
    UnsupportedModelError
        For a leaf module with parameters and no rule (e.g. ``nn.LSTM``, ``nn.MultiheadAttention``), named.
    """
    rules: dict[str, str] = {}
    opaque: list[str] = []
    for name, sub in module.named_modules():
        label = f"'{name or '<root>'}' ({type(sub).__name__})"
        if getattr(type(sub), "dfim_linear_forward", False):
            continue  # the adapter's own wrappers (layout/alphabet changes, final-activation bypass)
        if isinstance(sub, RESCALE_MODULES):
            rules[name] = "rescale"
        elif isinstance(sub, MAXPOOL_MODULES):
            if getattr(sub, "return_indices", False):
                raise UnsupportedModelError(f"DeepLIFT: layer {label} returns indices")
            if isinstance(sub, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
                size = sub.output_size if isinstance(sub.output_size, tuple) else (sub.output_size,)
                if set(size) != {1}:
                    raise UnsupportedModelError(
                        f"DeepLIFT: layer {label} is only supported as global max-pooling (output_size=1)")
            rules[name] = "maxpool"
        elif isinstance(sub, LINEAR_MODULES) or type(sub) in _PURE_CONTAINERS:
            continue
        elif next(sub.children(), None) is None and any(True for _ in sub.parameters(recurse=False)):
            raise UnsupportedModelError(
                f"DeepLIFT: layer {label} has no DeepLIFT rule; supported are linear layers, the elementwise "
                "nonlinearity modules (" + ", ".join(c.__name__ for c in RESCALE_MODULES) + ") and max-pooling "
                "(see docs/deeplift.md)"
            )
        else:
            opaque.append(label)
    return rules, opaque


class _ModuleRule(torch.autograd.Function):
    """One module call under its DeepLIFT rule, against the recorded reference call of the same module.

    Forward returns the module's own output ``out``; backward replaces the module's gradient by
    ``rule(z, z_ref, grad)``: the Rescale multiplier for elementwise nonlinearities, the shared max-pool rule
    for max-pooling (see :func:`_rescale_rule`, :func:`_maxpool_rule`).
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, out: torch.Tensor, z_ref: torch.Tensor, rule: Callable) -> torch.Tensor:
        ctx.save_for_backward(z, z_ref)
        ctx.rule = rule
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        z, z_ref = ctx.saved_tensors
        return ctx.rule(z, z_ref, grad), None, None, None


def _rescale_rule(fn: Callable) -> Callable:
    def rule(z: torch.Tensor, z_ref: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad * rescale_multiplier_torch(fn, z.double(), z_ref.double()).to(grad.dtype)

    return rule


def _maxpool_rule(make: Callable) -> Callable:
    def rule(z: torch.Tensor, z_ref: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return maxpool_multiplier_torch(make(tuple(z.shape)), z, z_ref, grad).to(grad.dtype)

    return rule


def _pool_windows(module: nn.Module) -> Callable:
    """shape -> window description of a max-pool module (global for adaptive pooling with output 1)."""
    nd = 1 if isinstance(module, (nn.MaxPool1d, nn.AdaptiveMaxPool1d)) else 2
    if isinstance(module, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
        def make_global(shape: tuple[int, ...]):
            return maxpool_windows_torch(shape, tuple(shape[-nd:]), tuple(shape[-nd:]), (0,) * nd, (1,) * nd, False)

        return make_global

    def tup(v: Any) -> tuple[int, ...]:
        return tuple(int(a) for a in v) if isinstance(v, (tuple, list)) else (int(v),) * nd

    kernel = tup(module.kernel_size)
    stride = tup(module.stride if module.stride not in (None, (), []) else module.kernel_size)
    padding, dilation = tup(module.padding), tup(module.dilation)
    ceil = bool(module.ceil_mode)
    return lambda shape: maxpool_windows_torch(shape, kernel, stride, padding, dilation, ceil)


def _elementwise(module: nn.Module) -> Callable:
    """The module's function, never in place."""
    if getattr(module, "inplace", False):
        return lambda t: module(t.clone())
    return module


@contextlib.contextmanager
def _hooks(module: nn.Module, rules: dict[str, str], record: dict[str, list], replay: bool) -> Iterator[None]:
    """Record (input, output) of every rule-module call, or replace each output by its rule's autograd op."""
    handles = []
    calls: dict[str, int] = {}

    def make_hook(name: str, sub: nn.Module, kind: str):
        rule = _rescale_rule(_elementwise(sub)) if kind == "rescale" else _maxpool_rule(_pool_windows(sub))

        def hook(mod: nn.Module, args: tuple, out: Any) -> Any:
            z = args[0]
            if not replay:
                record.setdefault(name, []).append((z.detach(), out.detach()))
                return None
            k = calls.get(name, 0)
            calls[name] = k + 1
            z_ref, _ = record[name][k]
            return _ModuleRule.apply(z, out.detach(), z_ref, rule)

        return hook

    for name, sub in module.named_modules():
        if name in rules:
            handles.append(sub.register_forward_hook(make_hook(name, sub, rules[name])))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _scored(y: Any, target: int) -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or y.ndim != 2:
        raise UnsupportedModelError("DeepLIFT: the scored model must return one (B, T) tensor")
    if not 0 <= target < y.shape[1]:
        raise InputError(f"DeepLIFT: target {target} out of range for {y.shape[1]} model outputs")
    return y[:, target]


def deeplift_multipliers_modules(
    module: nn.Module, x: np.ndarray, references: np.ndarray, target: int, batch_size: int = 64,
    why: str = "torch.fx cannot trace it",
) -> np.ndarray:
    """DeepLIFT multipliers (N, R, L, 4) with module-level rules (for modules torch.fx cannot trace).

    Parameters
    ----------
    module : torch.nn.Module
        Maps (B, L, 4) to (B, T) scored outputs, in eval mode.
    x : np.ndarray
        One-hot (N, L, 4).
    references : np.ndarray
        (N, R, L, 4).
    target : int
        Output column.
    batch_size : int
        Pairs per pass; results do not depend on it.
    why : str
        Why the fx engine is not used (put in error messages).

    Raises
    ------
    UnsupportedModelError
        If a parameterised leaf module has no rule, or if summation-to-delta fails for any pair: then a
        nonlinearity invisible to module rules (a function call inside some module's forward) changed the
        result; the message names the modules that ran without a rule.
    """
    x, references = check_inputs(x, references, batch_size)
    rules, opaque = module_rules(module)
    n, r = references.shape[:2]
    out = np.zeros(references.shape, dtype=np.float32)
    f_x = np.zeros((n, r), dtype=np.float64)
    f_ref = np.zeros((n, r), dtype=np.float64)
    for seq, ref in pair_batches(n, r, int(batch_size)):
        record: dict[str, list] = {}
        with torch.no_grad(), _hooks(module, rules, record, replay=False):
            y_ref = _scored(module(torch.from_numpy(references[seq, ref])), int(target))
        xb = torch.from_numpy(x[seq]).requires_grad_(True)
        with _hooks(module, rules, record, replay=True):
            y = _scored(module(xb), int(target))
        (grad,) = torch.autograd.grad(y.sum(), xb)
        out[seq, ref] = grad.detach().numpy()
        f_x[seq, ref], f_ref[seq, ref] = y.detach().double().numpy(), y_ref.double().numpy()
    bad = conservation_violations(out, x, references, f_x, f_ref)
    if bad.any():
        suspects = ", ".join(opaque) if opaque else "none found"
        raise UnsupportedModelError(
            f"DeepLIFT (module rules, because {why}): summation-to-delta fails (relative tolerance "
            f"{CONSERVATION_RTOL:g}) for {int(bad.sum())} of {bad.size} (sequence, reference) pairs, so a "
            "nonlinearity outside the rule modules (a function call inside some forward) changed the result; "
            f"modules run without a rule: {suspects}. Use grad_input, integrated_gradients or ism instead."
        )
    return out
