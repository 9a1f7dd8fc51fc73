"""The bottom of the shared-reference backward walk, restricted to the input positions a caller reads.

Why: DFIM reads importance only at the target bases around the variant (+-N bp) and the maps file shows
+-50 bp, yet a backward pass forms multipliers at every position of every layer, and in a Basset-shaped
network most of that work is in the wide lower layers (the second convolution's vector-Jacobian product
and the first two relu -> max-pool rules). Below the first op that mixes all positions (a flatten, a dense
layer), every op of a sequence CNN is local along the sequence: the input multiplier at position i depends
only on the cotangent inside the op's receptive field. So the walk is cut at that boundary. Above it,
:class:`~kipoi_dfim.backend.deeplift_torch.SharedPlan` runs as before on whole tensors; below it, each step
works on the slice of its positions whose cotangent reaches input positions [a, b), and the input
multipliers come out for [a, b) only, the same numbers as the full walk's there.

The chain from the input to the boundary is recognised, not assumed: layout ops (permute, transpose,
contiguous, dtype casts, eval-mode batch norm, dropout, identity), ``nn.Conv1d``/``nn.Conv2d`` with stride
and dilation 1 along the sequence, elementwise nonlinearities (Rescale) and relu -> tiled max-pool pairs,
each the only consumer of the one below. Anything else ends the chain, and a model without such a chain
runs the full walk. Summation-to-delta is checked for every (window, reference, target) at the boundary:
every layer conserves it, so the check covers every rule above the boundary; the cropped rules conserve it
by construction (docs/deeplift.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from kipoi_dfim.backend.deeplift_torch import (
    _buffer,
    _Pairs,
    _pool_pairs,
    _pool_selectors,
    _relu_pool_factor,
    _rescale_pairs,
    _Step,
    positions_last,
    tiled_pool,
)

_SAME_AXIS_METHODS = {"contiguous", "to", "float", "double", "type", "clone"}
_SAME_AXIS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.BatchNorm1d, nn.BatchNorm2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_CONVS = (nn.Conv1d, nn.Conv2d)


@dataclass
class _Link:
    """One step of the cropped chain; positions along ``axis_in`` / ``axis_out`` (batch axis 0 counted)."""

    step: _Step
    kind: str  # "layout", "conv", "rescale", "relupool", "pool" (a tiled max-pool after anything else)
    axis_in: int
    axis_out: int
    need_in: tuple[int, int]  # input positions whose cotangent this step produces
    need_out: tuple[int, int]  # output positions whose cotangent it reads
    shape_in: tuple[int, ...]  # the full input shape (batch axis 1)
    conv: nn.Module | None = None
    kernel: int = 1  # relupool: the pool's kernel (= stride)
    vjps: dict[int, Any] = field(default_factory=dict)  # layout: vector-Jacobian product per cropped length
    members: list[str] = field(default_factory=list)  # layout region: the steps it stands for (else the step)


def _axis_after(node: fx.Node, module: nn.Module | None, axis: int, ndim: int) -> int | None:
    """The position axis after a layout op (None: not one, or it moves the axis somewhere unknown)."""
    if module is not None:  # batch norm normalises channels (axis 1): positions must be further right
        local = isinstance(module, _SAME_AXIS_MODULES) and not (isinstance(module, _NORMS) and axis < 2)
        return axis if local else None
    if node.op not in ("call_method", "call_function"):
        return None
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", None)
    if name in _SAME_AXIS_METHODS and node.op == "call_method":
        return axis
    rest = list(node.args[1:]) + list(node.kwargs.values())
    if name == "unsqueeze" and len(rest) == 1 and isinstance(rest[0], int):
        d = rest[0] % (ndim + 1)
        return axis + 1 if d <= axis else axis
    if name == "permute" and len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        rest = list(rest[0])
    if not rest or not all(isinstance(a, int) for a in rest):
        return None
    dims = [d % ndim for d in rest]
    if name == "permute" and sorted(dims) == list(range(ndim)):
        return dims.index(axis)
    if name == "transpose" and len(dims) == 2:
        return dims[1] if axis == dims[0] else dims[0] if axis == dims[1] else axis
    return None


def _conv_ok(conv: nn.Module) -> bool:
    """Stride and dilation 1, zero padding given as numbers: output j reads inputs j - p .. j - p + k - 1."""
    return (all(s == 1 for s in conv.stride) and all(d == 1 for d in conv.dilation)
            and not isinstance(conv.padding, str) and conv.padding_mode == "zeros")


def _link(plan: Any, step: _Step, axis: int, need: tuple[int, int]) -> _Link | None:
    """The chain link of ``step`` given the position axis and the needed positions of its input, or None."""
    shape_in = (1, *plan.shapes[step.inputs[0]])
    shape_out = (1, *plan.shapes[step.name])
    ndim, (a, b) = len(shape_in), need
    last = all(n == 1 for n in shape_in[axis + 1:])  # positions on the last axis, or before axes of size 1
    if step.kind == "rescale":
        return _Link(step, "rescale", axis, axis, need, need, shape_in)
    if step.kind in ("relupool", "maxpool"):
        windows = step.windows((1, *plan.shapes[step.fused.name if step.fused is not None else step.inputs[0]]))
        if not last or len(shape_out) != ndim or not tiled_pool(windows) or windows.axes != [axis]:
            return None  # (a global max without keepdim drops the position axis)
        kernel, out = windows.spec[0]["kernel"], shape_out[axis]
        lo, hi = a // kernel, min(out, -(-b // kernel))
        kind = "relupool" if step.kind == "relupool" else "pool"
        ok = kernel > 1 and lo < hi
        return _Link(step, kind, axis, axis, need, (lo, hi), shape_in, kernel=kernel) if ok else None
    if step.kind != "linear":
        return None
    node = step.node
    module = plan.gm.get_submodule(node.target) if node.op == "call_module" else None
    if isinstance(module, _CONVS):
        i = axis - 2  # the position's spatial axis of the convolution
        if not last or i < 0 or not _conv_ok(module) or any(
                module.kernel_size[j] != 1 or module.padding[j] != 0 for j in range(i + 1, len(module.kernel_size))):
            return None
        k, p = module.kernel_size[i], module.padding[i]
        lo, hi = max(0, a + p - k + 1), min(shape_out[axis], b + p)
        return _Link(step, "conv", axis, axis, need, (lo, hi), shape_in, conv=module) if lo < hi else None
    out_axis = _axis_after(node, module, axis, ndim)
    if out_axis is None:  # e.g. a reordering of the alphabet (x[:, :, idx]): found by running the op
        out_axis = _probe_axis(step.fn, shape_in, axis, plan.device)
    if out_axis is None or out_axis >= len(shape_out) or shape_out[out_axis] != shape_in[axis]:
        return None
    return _Link(step, "layout", axis, out_axis, need, need, shape_in)


def _probe_axis(fn: Callable, shape_in: tuple[int, ...], axis: int, device: Any) -> int | None:
    """The position axis of a linear op's output, or None if the op is not local along the positions: on a
    random input, the op of a slice of the positions must be the same slice of the op's output (exactly)."""
    n = shape_in[axis]
    if n < 4:
        return None
    z = torch.randn(shape_in, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.no_grad():
            full, part = fn(z), fn(z.narrow(axis, 1, n - 2))
    except Exception:  # noqa: BLE001 - an op that cannot take a shorter input is not a crop link
        return None
    if not isinstance(full, torch.Tensor) or not isinstance(part, torch.Tensor) or full.ndim != part.ndim:
        return None
    changed = [i for i in range(full.ndim) if full.shape[i] != part.shape[i]]
    if len(changed) != 1 or full.shape[changed[0]] != n or part.shape[changed[0]] != n - 2:
        return None
    return changed[0] if torch.equal(full.narrow(changed[0], 1, n - 2), part) else None


def _region_link(plan: Any, start: str, axis: int, need: tuple[int, int], users: dict[str, set[str]]
                 ) -> _Link | None:
    """A layout link for linear steps that fan out of ``start`` and merge again (DeepSEA's alphabet recoding:
    four ``x[:, i]`` stacked back), composed into one function of ``start``; None if there is none."""
    order = list(reversed(plan.steps))  # forward order
    at = next((i + 1 for i, s in enumerate(order) if s.name == start), 0)
    region, members = {start}, []
    for s in order[at: at + 32]:
        if not set(s.inputs) & region:
            continue
        if not set(s.inputs) <= region or s.kind != "linear":
            return None
        region.add(s.name)
        members.append(s)
        if {n for n in region if users[n] - region} == {s.name}:
            break
    else:
        return None

    def composite(t: torch.Tensor) -> torch.Tensor:
        env = {start: t}
        for s in members:
            env[s.name] = s.fn(*[env[i] for i in s.inputs])
        return env[members[-1].name]

    shape_in = (1, *plan.shapes[start])
    out_axis = _probe_axis(composite, shape_in, axis, plan.device)
    if out_axis is None:
        return None
    step = _Step(members[-1].name, "linear", [start], fn=composite)
    return _Link(step, "layout", axis, out_axis, need, need, shape_in, members=[s.name for s in members])


class Crop:
    """The cropped bottom of a :class:`SharedPlan`'s walk for input positions [a, b) (see the module doc).

    ``top`` names the boundary step: the walk runs in full down to it, then :meth:`backward` takes over.
    """

    def __init__(self, links: list[_Link]):
        self.links = links
        self.top = links[-1].step.name
        self.span = links[0].need_in

    def cuts(self) -> dict[str, Any]:
        """Per cropped rule step, what :meth:`SharedPlan.forward` keeps of its per-row inputs: a slice of the
        positions it reads (rescale), or (positions, pooled windows) slices (relu -> max-pool)."""
        out: dict[str, Any] = {}
        for link in self.links:
            if link.kind == "rescale":
                out[link.step.name] = lambda t, link=link: _narrow(t, link.axis_in, link.need_in)
            elif link.kind in ("relupool", "pool"):
                (lo, hi), q, axis = link.need_out, link.kernel, link.axis_in
                out[link.step.name] = (lambda t, lo=lo, hi=hi, q=q, axis=axis: _narrow(t, axis, (lo * q, hi * q)),
                                       lambda t, lo=lo, hi=hi, axis=axis: _narrow(t, axis, (lo, hi)))
        return out

    def backward(self, acts: dict[str, Any], pairs: _Pairs, g: torch.Tensor, buffers: Callable[[str], dict]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(input cotangent (P, b - a, 4) over the span, per-pair sum of cotangent x delta at the boundary)
        from the boundary's full cotangent ``g`` (P, 1, ...); ``buffers(step name)``: that step's scratch."""
        g = g[:, 0]
        sums = _delta_sums(acts["__boundary__"], pairs, g)
        top = self.links[-1]
        c = g.narrow(top.axis_out, top.need_out[0], top.need_out[1] - top.need_out[0])
        for link in reversed(self.links):
            c = _cropped_step(link, acts, pairs, c, buffers(link.step.name))
        return c, sums


def build_crop(plan: Any, span: tuple[int, int]) -> Crop | None:
    """The crop of ``plan``'s walk to input positions ``span``, or None when no step below a boundary would
    be cut (no local chain at the bottom of the model, or the span already needs every position)."""
    users = {n.name: len(n.users) for n in plan.gm.graph.nodes}
    consumers: dict[str, list[_Step]] = {}
    for s in plan.steps:
        for i in s.inputs:
            consumers.setdefault(i, []).append(s)
    step_users = {n: {s.name for s in consumers.get(n, [])} | ({"__output__"} if n == plan.output else set())
                  for n in [plan.input, *(s.name for s in plan.steps)]}
    name, axis, need, links = plan.input, 1, span, []
    while True:
        cons = consumers.get(name, [])
        if users.get(name) == 1 and len(cons) == 1 and len(cons[0].inputs) == 1:
            link = _link(plan, cons[0], axis, need)
        else:
            link = _region_link(plan, name, axis, need, step_users) if cons else None
        if link is None:
            break
        links.append(link)
        name, axis, need = link.step.name, link.axis_out, link.need_out
    while links and links[-1].need_in == (0, links[-1].shape_in[links[-1].axis_in]):
        links.pop()  # nothing cut at this step: leave it to the full walk
    chain = [m for lk in links for m in (lk.members or [lk.step.name])]
    below = [s.name for s in plan.steps[-len(chain):]] if chain else []
    if all(link.kind == "layout" for link in links) or sorted(below) != sorted(chain):
        return None  # the walk must end in exactly the chain (no other step below the boundary)
    return Crop(links)


def _delta_sums(act: torch.Tensor, pairs: _Pairs, g: torch.Tensor) -> torch.Tensor:
    """(P,) float64 sum of cotangent x (window - reference) activation at the boundary, per pair row."""
    d = (pairs.window(act) - pairs.reference(act)).double()  # (V, K, 1, R, ...)
    prod = pairs.grid(g).double() * d
    return prod.reshape(*prod.shape[:4], -1).sum(-1).reshape(pairs.p)


def _reframe(t: torch.Tensor, axis: int, have: int, want: tuple[int, int]) -> torch.Tensor:
    """``t`` covers positions [have, have + t.shape[axis]) along ``axis``; return it over ``want``
    (sliced where it covers more, zeros where it covers less)."""
    lo, hi = want
    n = t.shape[axis]
    if have <= lo and have + n >= hi:
        return t.narrow(axis, lo - have, hi - lo)
    shape = list(t.shape)
    shape[axis] = hi - lo
    out = torch.zeros(shape, dtype=t.dtype, device=t.device)
    a, b = max(lo, have), min(hi, have + n)
    if a < b:
        out.narrow(axis, a - lo, b - a).copy_(t.narrow(axis, a - have, b - a))
    return out


def _narrow(t: torch.Tensor, axis: int, span: tuple[int, int]) -> torch.Tensor:
    return t.narrow(axis, span[0], span[1] - span[0])


def _cropped_step(link: _Link, acts: dict[str, Any], pairs: _Pairs, c: torch.Tensor, buffers: dict
                  ) -> torch.Tensor:
    """Cotangent over ``link.need_in`` at the step's input from the cotangent ``c`` (P, ...) over
    ``link.need_out`` at its output."""
    if link.kind == "conv":  # the input gradient of the sliced output, unpadded along the positions
        conv, axis = link.conv, link.axis_in
        i = axis - 2
        size = list(link.shape_in)
        size[0], size[axis] = c.shape[0], c.shape[axis] + conv.kernel_size[i] - 1
        grad_input = torch.nn.grad.conv1d_input if isinstance(conv, nn.Conv1d) else torch.nn.grad.conv2d_input
        padding = tuple(0 if j == i else q for j, q in enumerate(conv.padding))
        # (oneDNN's convolution backward: unlike conv_transpose's CPU path it is not one GEMM per row)
        gi = grad_input(size, conv.weight, c, padding=padding, groups=conv.groups)
        return _reframe(gi, axis, link.need_out[0] - conv.padding[i], link.need_in)
    if link.kind == "rescale":  # rows already cut to need_in (Crop.cuts)
        return _rescale_pairs(acts[link.step.name], pairs, c)
    if link.kind == "relupool":
        return _relu_pool_cropped(link, acts[link.step.name], pairs, c, buffers)
    if link.kind == "pool":  # rows cut to the pooled windows need_out (Crop.cuts); the tiled rule on them
        m = _pool_pairs(acts[link.step.name], pairs, c)
        return _reframe(m, link.axis_in, link.need_out[0] * link.kernel, link.need_in)
    n = link.need_in[1] - link.need_in[0]
    if n not in link.vjps:
        shape = list(link.shape_in)
        shape[link.axis_in] = n
        example = torch.zeros(shape, dtype=c.dtype, device=c.device)
        with torch.enable_grad():
            link.vjps[n] = torch.func.vjp(link.step.fn, example)[1]
    return torch.vmap(link.vjps[n])(c.unsqueeze(1))[0][:, 0]


def _relu_pool_cropped(link: _Link, rows: dict[str, Any], pairs: _Pairs, c: torch.Tensor, buffers: dict
                       ) -> torch.Tensor:
    """relu (or relu6) -> tiled max-pool over the pooled windows ``link.need_out``: the factor of every
    (window, reference) pair on those windows only (``_relu_pool_factor``; ``rows`` hold those windows
    only, Crop.cuts), times the pooled cotangent."""
    (lo, hi), kernel, axis = link.need_out, link.kernel, link.axis_in
    xs, rs = _pool_selectors(pairs, hi - lo, kernel, slice(None))
    factor = _relu_pool_factor(rows, xs, rs, buffers, key="crop")
    gg = pairs.grid(positions_last(c, axis)).unsqueeze(-1)  # (V, K, Tb, R, ..., hi - lo, 1)
    shape = torch.broadcast_shapes(gg.shape, factor.shape)
    m = torch.mul(gg, factor, out=_buffer(buffers, "crop_m", shape, factor))
    m = m.reshape(pairs.p, *link.shape_in[1:axis], (hi - lo) * kernel, *link.shape_in[axis + 1:])
    return _reframe(m, axis, lo * kernel, link.need_in)
