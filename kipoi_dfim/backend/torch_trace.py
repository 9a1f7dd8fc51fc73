"""torch.fx tracing of modules some of whose submodules torch.fx cannot trace: those become opaque leaves.

Why: the zoo's torch7-converted models (Basset, DeepSEA, Beluga) wrap reshapes in ``Lambda`` modules whose
Python lambdas branch on ``len(x.size())``. torch.fx cannot branch on a value it only knows symbolically,
so the whole model used to be untraceable, and DeepLIFT fell back to module hooks: no shared references,
no span crop, about 0.45x the speed of a gradient pass. Everything else in those models is ordinary layers.
Here each submodule that cannot be traced is kept as one call in the graph (a leaf), so the rest of the
model is seen op by op.

DeepLIFT may treat such a leaf as linear only after :func:`check_opaque_leaves` has probed it on the
activation it actually receives: it must be affine (the identity f(a u + (1 - a) v) = a f(u) + (1 - a) f(v)
at random points with a outside [0, 1], which any relu, max or sigmoid inside breaks) and row-local (each
output row depends on its own input row alone: the engines stack windows and references in one batch).
A leaf failing either check is named in an :class:`OpaqueLeafError`; callers then use the module-hook
engine, as before. Summation-to-delta, checked for every pair, stays the final safety net.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from kipoi_dfim.errors import UnsupportedModelError

__all__ = ["OpaqueLeafError", "check_opaque_leaves", "trace"]

#: Tolerance of the probe's identities, relative to how much the leaf's output varies between the probe's
#: points (a reshape is exact; a linear layer inside a leaf is off by a few float32 ulps of its output).
PROBE_RTOL = 1e-4
#: ... plus this much of the output's magnitude (float32 rounding of a large constant offset). Relative to
#: the variation, not the magnitude, so an offset cannot widen the tolerance over a hidden nonlinearity.
PROBE_MAGNITUDE_RTOL = 1e-6


class OpaqueLeafError(UnsupportedModelError):
    """An untraceable submodule is not provably linear and row-local (use the module-hook engine)."""


class _Tracer(fx.Tracer):
    """fx's tracer with given extra leaves, refusing to inline a module that carries forward hooks (the
    graph would silently drop them; as a leaf, the module is called with its hooks)."""

    def __init__(self, leaves: set[int]):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return id(m) in self.leaves or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        if not self.is_leaf_module(m, "") and not _inlinable(m):
            raise fx.proxy.TraceError(f"{type(m).__name__} acts through forward hooks")
        return super().call_module(m, forward, args, kwargs)


def _inlinable(m: nn.Module) -> bool:
    """Whether tracing into ``m``'s forward sees all it does (no hooks; ``dfim_untraceable`` marks the
    adapter's own hook-based wrapper)."""
    return not (m._forward_hooks or m._forward_pre_hooks or getattr(m, "dfim_untraceable", False))


def _graph(module: nn.Module, leaves: set[int]) -> fx.Graph:
    if not _inlinable(module):
        raise fx.proxy.TraceError(f"{type(module).__name__} acts through forward hooks")
    return _Tracer(leaves).trace(module)


def _traces(module: nn.Module, leaves: set[int]) -> bool:
    try:
        _graph(module, leaves)
    except Exception:  # noqa: BLE001 - fx raises TraceError, TypeError, AttributeError, ...
        return False
    return True


def _find_leaves(module: nn.Module, leaves: set[int]) -> None:
    """Add to ``leaves`` the ids of the smallest submodules of ``module`` that keep it from tracing (torch.nn's
    own layers are leaves of fx already, whether or not they would trace as a root; a bare ``nn.Module`` is
    how a GraphModule holds nested submodules)."""
    layer = type(module) is not nn.Module and _Tracer(leaves).is_leaf_module(module, "")  # not a bare holder
    if layer or _traces(module, leaves):
        return
    for child in module.children():
        _find_leaves(child, leaves)
        if _traces(module, leaves):
            return
    if not _traces(module, leaves):
        leaves.add(id(module))


def trace(module: nn.Module) -> tuple[fx.GraphModule, frozenset[str]]:
    """``module`` traced by torch.fx, untraceable submodules kept as leaves.

    Returns
    -------
    graph_module : torch.fx.GraphModule
    opaque : frozenset of str
        Qualified names of the leaves that were added because they cannot be traced (empty when the module
        traces as a whole). Their calls are ``call_module`` nodes of the graph.

    Raises
    ------
    Exception
        torch.fx's own error when even the module's own forward cannot be traced.
    """
    leaves: set[int] = set()
    try:
        graph = _graph(module, leaves)  # one trace when the module traces as a whole (the common case)
    except Exception:  # noqa: BLE001 - fx raises TraceError, TypeError, AttributeError, ...
        for child in module.children():
            _find_leaves(child, leaves)
        graph = _graph(module, leaves)
    called = {n.target for n in graph.nodes if n.op == "call_module"}
    opaque = frozenset(name for name, m in module.named_modules() if id(m) in leaves and name in called)
    return fx.GraphModule(module, graph, type(module).__name__), opaque


class _Capture(fx.Interpreter):
    """Runs the graph, keeping the arguments of every call of an opaque leaf (a leaf called at two places of
    the graph is probed at both)."""

    def __init__(self, gm: fx.GraphModule, opaque: frozenset[str]):
        super().__init__(gm)
        self.opaque = opaque
        self.calls: list[tuple[str, tuple, dict]] = []

    def call_module(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if target in self.opaque:
            self.calls.append((target, args, kwargs))
        return super().call_module(target, args, kwargs)


def check_opaque_leaves(gm: fx.GraphModule, opaque: frozenset[str], example: torch.Tensor) -> None:
    """Check that every call of an opaque leaf reached from ``example`` is affine and row-local on inputs
    like the ones it receives (see the module doc). The graph runs on two rows, so that a leaf whose input
    is not batch-major (batch on axis 0, as the probe assumes) is seen.

    Raises
    ------
    OpaqueLeafError
        Naming the first leaf that is not (or that takes more than one tensor).
    """
    if not opaque:
        return
    capture = _Capture(gm, opaque)
    with torch.no_grad():
        capture.run(example[:1].expand(2, *example.shape[1:]).contiguous())
    for name, args, kwargs in capture.calls:
        module = gm.get_submodule(name)
        label = f"'{name}' ({type(module).__name__})"
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if len(args) != 1 or len(tensors) != 1:
            raise OpaqueLeafError(f"DeepLIFT: untraceable layer {label} takes more than one tensor")
        why = "receives a tensor whose first axis is not the batch" if args[0].shape[:1] != (2,) else None
        why = why or _probe(module, args[0])
        if why:
            raise OpaqueLeafError(f"DeepLIFT: untraceable layer {label} {why}; it has no DeepLIFT rule")


def _probe(module: nn.Module, t: torch.Tensor) -> str | None:
    """Why ``module`` is not affine and row-local near inputs shaped like ``t`` (None: it is)."""
    gen = torch.Generator().manual_seed(0)
    scale = float(t.abs().max()) or 1.0
    u, v = (scale * torch.randn((2, *t.shape[1:]), generator=gen, dtype=torch.float64).to(t)
            for _ in range(2))
    try:
        with torch.no_grad():
            return _identities(module, u, v)
    except Exception as err:  # noqa: BLE001 - the leaf's own code may refuse the probe's inputs
        return f"fails on the probe's inputs ({type(err).__name__}: {err})"


def _identities(module: nn.Module, u: torch.Tensor, v: torch.Tensor) -> str | None:
    fu, fv = module(u), module(v)
    if not all(isinstance(f, torch.Tensor) and f.ndim > 0 for f in (fu, fv)):
        return "does not return one tensor"
    if fu.shape[0] != 2 or fv.shape != fu.shape:
        return f"mixes batch rows (2 rows in, {fu.shape[0]} out)"
    tol = (PROBE_RTOL * float((fu - fv).abs().max())
           + PROBE_MAGNITUDE_RTOL * float(torch.maximum(fu.abs(), fv.abs()).max()) + 1e-30)
    for a in (2.5, -1.5):
        if not _close(module(a * u + (1 - a) * v), a * fu + (1 - a) * fv, tol):
            return "is not linear (affine) in its input"
    if not _close(module(torch.cat([u, v])), torch.cat([fu, fv]), tol) or not _close(module(u[1:]), fu[1:], tol):
        return "mixes batch rows"
    return None


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    return a.shape == b.shape and float((a - b).abs().max()) <= tol
