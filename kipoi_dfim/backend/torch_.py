"""PyTorch adapter: a torch.nn.Module behind the SequenceModel protocol."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from kipoi_dfim.backend.common import AdapterBase
from kipoi_dfim.backend.layouts import alphabet_index, normalise_layout, to_model_layout
from kipoi_dfim.errors import SEQ_LEN_HINT, InputError

log = logging.getLogger(__name__)

_FINAL_ACTIVATIONS = {nn.Sigmoid: "sigmoid", nn.Softmax: "softmax", nn.LogSoftmax: None}


def _split_final_activation(module: nn.Module, probe: torch.Tensor | None = None) -> tuple[nn.Module, str | None]:
    """Return (module without its final sigmoid/softmax, name of the removed activation).

    Only a trailing nn.Sigmoid / nn.Softmax module of an nn.Sequential (possibly nested as its last child)
    is recognised; anything else is scored as the module outputs it.
    """
    if isinstance(module, nn.Sequential) and len(module) > 0:
        last = module[-1]
        for cls, name in _FINAL_ACTIVATIONS.items():
            if isinstance(last, cls) and name is not None:
                return nn.Sequential(*list(module.children())[:-1]), name
        inner, name = _split_final_activation(last, None)
        if name is not None:
            return nn.Sequential(*list(module.children())[:-1], inner), name
        return module, None
    return _split_traced(module, probe)


_FINAL_FUNCTIONS = {torch.sigmoid: "sigmoid", torch.softmax: "softmax", torch.nn.functional.softmax: "softmax",
                    torch.nn.functional.sigmoid: "sigmoid"}


class _BypassFinal(nn.Module):
    """A module whose output is one call of its submodule ``act`` (a sigmoid/softmax), with that call skipped.

    For modules torch.fx cannot trace (Beluga: ``Lambda`` wrappers around Python lambdas): a forward hook
    returns the activation's input instead of its output, so the scored value is the logit.
    """

    dfim_linear_forward = True  # its own forward adds nothing but the hook (for the module-rule DeepLIFT)
    dfim_untraceable = True  # torch.fx would trace through the hook (kipoi_dfim.backend.torch_trace)

    def __init__(self, module: nn.Module, act_name: str):
        super().__init__()
        self.module = module
        self.act_name = act_name

    def forward(self, x):
        handle = self.module.get_submodule(self.act_name).register_forward_hook(lambda m, i, o: i[0])
        try:
            return self.module(x)
        finally:
            handle.remove()


def _split_by_probe(module: nn.Module, probe: torch.Tensor | None) -> tuple[nn.Module, str | None]:
    """Find, by running the module once, a sigmoid/softmax module called once whose output IS the output."""
    if probe is None:
        return module, None
    seen: dict[str, list] = {}
    handles = []
    for name, sub in module.named_modules():
        kind = next((nm for cls, nm in _FINAL_ACTIVATIONS.items() if isinstance(sub, cls) and nm), None)
        if kind is not None and name:
            def hook(m, i, o, name=name):
                seen.setdefault(name, []).append(o)
            handles.append(sub.register_forward_hook(hook))
    try:
        with torch.no_grad():
            y = module(probe)
    except Exception as e:  # noqa: BLE001 - the probe only looks; a failing module fails later, clearly
        log.info("probe of %s failed (%s)", type(module).__name__, e)
        return module, None
    finally:
        for h in handles:
            h.remove()
    for name, outs in seen.items():
        if len(outs) == 1 and outs[0] is y:
            sub = module.get_submodule(name)
            return _BypassFinal(module, name), next(nm for cls, nm in _FINAL_ACTIVATIONS.items()
                                                     if isinstance(sub, cls))
    return module, None


def _split_traced(module: nn.Module, probe: torch.Tensor | None = None) -> tuple[nn.Module, str | None]:
    """Custom modules: trace forward() with torch.fx and cut a sigmoid/softmax that produces the output."""
    from kipoi_dfim.backend.torch_trace import trace

    try:
        gm, opaque = trace(module)  # untraceable submodules (torch7 Lambda wrappers) kept as leaves
    except Exception as e:  # noqa: BLE001 - data-dependent control flow cannot be traced
        log.info("cannot trace %s to find a final activation (%s); probing it", type(module).__name__, e)
        return _split_by_probe(module, probe)
    out = next(n for n in gm.graph.nodes if n.op == "output")
    src = out.args[0]
    if not isinstance(src, torch.fx.Node):
        return module, None
    name = None
    if src.op == "call_module":
        sub = gm.get_submodule(src.target)
        name = next((nm for cls, nm in _FINAL_ACTIVATIONS.items() if isinstance(sub, cls)), None)
    elif src.op == "call_function":
        name = _FINAL_FUNCTIONS.get(src.target)
    elif src.op == "call_method" and src.target in ("sigmoid", "softmax"):
        name = src.target
    if name is None and opaque:  # the activation may be inside an opaque leaf: find it by running the module
        return _split_by_probe(module, probe)
    if name is None:
        return module, None
    out.args = (src.args[0],)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm, name


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``device``: "auto" (CUDA if available, else Apple MPS, else CPU), "cpu", "cuda",
    "cuda:N" or "mps"; an unavailable choice is an InputError naming it (a silent CPU fallback would hide a
    misconfigured GPU behind a 50x slower run).
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError) as err:
        raise InputError(f"--device {device!r}: not a device; use auto, cpu, cuda, cuda:N or mps") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device!r}: CUDA is not available to this PyTorch ({torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"--device {device!r}: Apple MPS is not available")
    elif dev.type != "cpu":
        raise InputError(f"--device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return dev


def _oom_errors() -> tuple[type[BaseException], ...]:
    """torch's out-of-memory exception types (CUDA, and the generic one of newer versions)."""
    found = [getattr(torch.cuda, "OutOfMemoryError", None), getattr(torch, "OutOfMemoryError", None)]
    return tuple(dict.fromkeys(e for e in found if e is not None))


class _Scored(nn.Module):
    """(B, L, 4) ACGT one-hot -> model alphabet order -> model layout (contiguous) -> model -> (B, T)."""

    dfim_linear_forward = True  # its own forward only permutes/reshapes (for the module-rule DeepLIFT)

    def __init__(self, module: nn.Module, layout: str, alphabet: str | None = None):
        super().__init__()
        self.module = module
        self.layout = layout
        idx = alphabet_index(alphabet)
        self.reorder = idx is not None
        self.register_buffer("alphabet_idx", torch.tensor(idx if idx is not None else [0, 1, 2, 3]))
        param = next(iter(module.parameters()), None)
        self.in_dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

    def forward(self, x):
        if self.reorder:
            x = x[:, :, self.alphabet_idx]
        y = self.module(to_model_layout(x, self.layout).to(self.in_dtype))
        if isinstance(y, (tuple, list)):
            y = torch.cat([t.reshape(t.shape[0], -1) for t in y], dim=1)
        return y.reshape(y.shape[0], -1)


class TorchModel(AdapterBase):
    """A torch.nn.Module as a :class:`~kipoi_dfim.backend.base.SequenceModel`.

    Parameters
    ----------
    module : torch.nn.Module
        The model; put in eval mode.
    seq_len : int
        Input length L.
    layout : str
        The module's input layout without the batch axis, e.g. ``"(4,L)"`` (the default: PyTorch is
        channels-first) or ``"(L,4)"``.
    targets : list of str, optional
        Output names; default ``["0", "1", ...]``.
    output : {"logit", "raw"}
        ``"logit"`` removes a final nn.Sigmoid/nn.Softmax of an nn.Sequential and scores the value before it.
    batch_size : int
        Rows (or DeepLIFT pairs) per pass; halved automatically on out-of-memory.
    device : str
        "auto" (default: CUDA, else MPS, else CPU), "cpu", "cuda", "cuda:N" or "mps"; see ``resolve_device``.
    alphabet : str, optional
        The module's one-hot column order (default ``"ACGT"``; DeepSEA/Beluga use ``"AGCT"``).
    notes : list of str, optional
        What the loader could not honour (e.g. post-processing in a zoo model class); kept as ``.notes``.
    """

    framework = "pytorch"
    oom_errors = _oom_errors()

    def __init__(
        self,
        module: nn.Module,
        seq_len: int,
        layout: str = "(4,L)",
        targets: list[str] | None = None,
        output: str = "logit",
        batch_size: int = 64,
        device: str | torch.device | None = "auto",
        alphabet: str | None = None,
        notes: list[str] | None = None,
    ):
        layout = normalise_layout(layout)
        self.alphabet = "".join(alphabet or "ACGT").upper()
        self.notes = list(notes or [])
        self.device = resolve_device(device)
        module = module.eval().to(self.device)
        for p in module.parameters():
            p.requires_grad_(False)
        probe = None
        if seq_len is not None:
            probe = to_model_layout(torch.rand((2, int(seq_len), 4), generator=torch.Generator().manual_seed(0)),
                                    layout)
            param = next(iter(module.parameters()), None)
            if param is not None and param.is_floating_point():
                probe = probe.to(device=param.device, dtype=param.dtype)
        logit_module, activation = _split_final_activation(module, probe)
        self._fx_errors: dict[int, Exception | str | None] = {}
        self.raw_model = _Scored(module, layout, self.alphabet).eval()
        self.logit_model = _Scored(logit_module, layout, self.alphabet).eval()
        super().__init__(seq_len=seq_len, layout=layout, targets=targets, output=output,
                         activation=activation, batch_size=batch_size)
        if output == "logit" and activation is None:
            log.info("no final sigmoid/softmax module found: scoring the module output as is")

    def to_device(self, device: str | torch.device | None) -> TorchModel:
        """Move the model to ``device`` (see ``resolve_device``); returns self."""
        self.device = resolve_device(device)
        self.raw_model.to(self.device)
        self.logit_model.to(self.device)
        return self

    def _free_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)

    def _n_outputs(self) -> int:
        x = torch.zeros((1, self.seq_len, 4), dtype=torch.float32, device=self.device)
        with torch.no_grad():
            return int(self.raw_model(x).shape[1])

    def _scored(self, output: str) -> nn.Module:
        return self.logit_model if output == "logit" else self.raw_model

    def _predict_batch(self, x: np.ndarray, output: str) -> np.ndarray:
        with torch.no_grad():
            return self._scored(output)(self._tensor(x)).cpu().numpy()

    def _gradient_batch(self, x: np.ndarray, target: int) -> np.ndarray:
        xt = self._tensor(x).requires_grad_(True)
        y = self._scored(self.output)(xt)[:, target]
        (g,) = torch.autograd.grad(y.sum(), xt)
        return g.cpu().numpy()

    def _gradients_batch(self, x: np.ndarray, targets: list[int]) -> np.ndarray:
        """One forward pass, one backward pass per target on its graph."""
        xt = self._tensor(x).requires_grad_(True)
        y = self._scored(self.output)(xt)
        out = []
        for j, t in enumerate(targets):
            (g,) = torch.autograd.grad(y[:, t].sum(), xt, retain_graph=j + 1 < len(targets))
            out.append(g.cpu().numpy())
        return np.stack(out)

    def _multipliers(self, x: np.ndarray, references: np.ndarray, target: int) -> np.ndarray:
        """fx-graph DeepLIFT when torch.fx traces the module; module-level rules (hooks) when it cannot, or
        when the untraceable submodules it had to keep as leaves (torch_trace) do not fit the fx engine."""
        from kipoi_dfim.backend.deeplift_torch import deeplift_multipliers_torch
        from kipoi_dfim.backend.deeplift_torch_modules import deeplift_multipliers_modules
        from kipoi_dfim.errors import UnsupportedModelError

        scored = self._scored(self.output)
        key = id(scored)
        if key not in self._fx_errors:
            self._fx_errors[key] = _trace_status(scored)
        err = self._fx_errors[key]
        if err is None or err == "leaves":
            try:
                return deeplift_multipliers_torch(scored, x, references, target, batch_size=self.batch_size)
            except UnsupportedModelError as e:
                if err is None:
                    raise
                err = e
        why = f"torch.fx cannot trace {type(self.raw_model.module).__name__} ({type(err).__name__}: {err})"
        return deeplift_multipliers_modules(scored, x, references, target, batch_size=self.batch_size, why=why)

    def _deeplift_shared(self, x: np.ndarray, references: np.ndarray, targets: list[int],
                         span: tuple[int, int] | None = None) -> np.ndarray:
        """The shared-reference engine, its backward pass cropped to ``span`` where the model allows
        (deeplift_torch_crop); the pairwise default where it does not apply (see deeplift_torch)."""
        from kipoi_dfim.backend.deeplift_torch import SharedPathUnavailable, deeplift_shared_torch

        if type(self)._multipliers is not TorchModel._multipliers:  # a subclass with its own DeepLIFT
            return super()._deeplift_shared(x, references, targets)
        return self._fast_shared(deeplift_shared_torch, SharedPathUnavailable, x, references, targets, span=span)


def _trace_status(module: nn.Module) -> Exception | str | None:
    """None: torch.fx traces ``module``; "leaves": only with untraceable submodules as leaves; else the error."""
    from kipoi_dfim.backend.torch_trace import trace

    try:
        _, opaque = trace(module)
    except Exception as err:  # noqa: BLE001 - fx raises TraceError, TypeError, AttributeError, ...
        return err
    return "leaves" if opaque else None


def load_torch_file(path: str, **kw) -> TorchModel:
    """A whole pickled module saved with torch.save(module, path)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - unpickling raises anything the pickled code raises
        raise InputError(f"cannot load the pickled torch module ({type(e).__name__}: {e})", path=path) from e
    if not isinstance(obj, nn.Module):
        raise InputError(
            "is a state dict, not a module: give a Kipoi model directory (module_file + module_class) "
            "or the nn.Module itself",
            path=path,
        )
    if kw.get("seq_len") is None:
        raise InputError(f"a pickled torch module does not record its input length: {SEQ_LEN_HINT}",
                         path=path)
    return TorchModel(obj, **kw)
