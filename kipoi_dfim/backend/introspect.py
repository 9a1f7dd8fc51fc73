"""Inside a CNN: the conv / max-pool substructure below a convolutional layer, its neurons' values and gradients.

NeuronMotif (Wei et al., PNAS 2023) interprets a convolutional neuron (CN) of layer K through its
*substructure*: the chain of conv and max-pool layers that connects the input to layer K. On an input exactly one
receptive field long, layer K has exactly one output position, so "the activation of CN c" is one number per
sequence. This module is the only place where that feature touches PyTorch or Keras: :class:`NeuronProbe` takes a
model returned by :func:`kipoi_dfim.load_model` and gives numpy-in / numpy-out access to

- the substructure (:class:`Substructure`: kernel sizes, strides, pool sizes, receptive field),
- the value of every CN of layer K on (N, RF, 4) one-hot inputs (:meth:`NeuronProbe.values`),
- the feature maps entering each max-pool of the substructure (:meth:`NeuronProbe.pool_inputs`),
- the gradient of one CN's value w.r.t. the input (:meth:`NeuronProbe.gradient`),
- the weights of conv layer K along the length axis (:meth:`NeuronProbe.conv_weight`).

The value of a CN is taken *before* its nonlinearity (conv + bias, then any batch normalisation): its positive
part is the post-ReLU activation the paper samples, and it keeps a gradient where the ReLU is off. Supported:
chains of Conv1d/Conv2d (valid padding), MaxPool1d/2d (no padding), batch normalisation, dropout, element-wise
activations and (Keras) Permute, in PyTorch ``nn.Module`` s traced by ``torch.fx`` (untraceable submodules,
the zoo's torch7 ``Lambda`` guards, as opaque calls: ``torch_trace``) and Keras 3 models (incl. those
converted from Keras 1/2). Anything else below layer K raises :class:`UnsupportedModelError` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kipoi_dfim.backend.layouts import to_model_layout
from kipoi_dfim.errors import InputError, UnsupportedModelError


@dataclass
class ChainLayer:
    """One conv or max-pool of a substructure, along the sequence-length axis."""

    kind: str  # "conv" or "pool"
    name: str
    size: int  # kernel size or pool size
    stride: int
    dilation: int = 1
    channels: int = 0  # output channels of a conv
    jump_in: int = 1  # bases between adjacent input positions of this layer
    rf_out: int = 1  # receptive field (bp) of one output position of this layer


@dataclass
class Substructure:
    """The conv / max-pool chain from the input to conv layer ``layer`` (1-based)."""

    layer: int
    n_neurons: int
    receptive_field: int
    chain: list[ChainLayer] = field(default_factory=list)

    @property
    def convs(self) -> list[ChainLayer]:
        """Conv layers of the chain, shallowest first (the last is layer K)."""
        return [c for c in self.chain if c.kind == "conv"]

    @property
    def pools(self) -> list[ChainLayer]:
        """Max-pools below layer K, shallowest first."""
        return [c for c in self.chain if c.kind == "pool"]

    def describe(self) -> str:
        """One line per layer, for logs and the HTML page."""
        rows = []
        for c in self.chain:
            if c.kind == "conv":
                rows.append(f"{c.name}: conv k={c.size} stride={c.stride} dilation={c.dilation} "
                            f"channels={c.channels} (RF {c.rf_out} bp)")
            else:
                rows.append(f"{c.name}: max-pool {c.size} stride={c.stride} (RF {c.rf_out} bp)")
        return "\n".join(rows)


def _finish(chain: list[ChainLayer], layer: int) -> Substructure:
    rf, jump = 1, 1
    for c in chain:
        c.jump_in = jump
        rf += (c.size - 1) * c.dilation * jump
        jump *= c.stride
        c.rf_out = rf
    return Substructure(layer=layer, n_neurons=chain[-1].channels, receptive_field=rf, chain=chain)


def _check_layer_index(layer: int, n_convs: int, name: str) -> None:
    if not 1 <= layer <= n_convs:
        raise InputError(f"--layer {layer}: {name} has {n_convs} convolutional layers reachable as a plain "
                         f"conv/max-pool chain from the input (layers are numbered 1..{n_convs})")


def probe(model: Any, layer: int, batch_size: int = 256) -> NeuronProbe:
    """A :class:`NeuronProbe` for conv layer ``layer`` (1-based) of a model from :func:`kipoi_dfim.load_model`."""
    fw = getattr(model, "framework", None)
    if fw == "pytorch":
        return _TorchProbe(model, layer, batch_size)
    if fw == "keras":
        return _KerasProbe(model, layer, batch_size)
    raise UnsupportedModelError(
        f"NeuronMotif needs the layers of the model; {type(model).__name__} ({fw}) does not expose them "
        "(supported: PyTorch modules and Keras 3 models, incl. converted Keras 1/2)"
    )


class NeuronProbe:
    """Numpy access to the CNs of one conv layer (see the module docstring). Use :func:`probe` to build one."""

    substructure: Substructure
    batch_size: int

    @property
    def receptive_field(self) -> int:
        """Input length (bp) for which layer K has exactly one output position."""
        return self.substructure.receptive_field

    @property
    def n_neurons(self) -> int:
        """Number of CNs (output channels) of layer K."""
        return self.substructure.n_neurons

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.receptive_field, 4):
            raise InputError(f"expected one-hot inputs of shape (N, {self.receptive_field}, 4), got {x.shape}")
        return x

    def values(self, x: np.ndarray, neurons: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Pre-nonlinearity values (N, n) of the CNs of layer K on (N, RF, 4) inputs (all CNs by default)."""
        x = self._check(x)
        out = [self._values_batch(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        v = np.concatenate(out) if out else np.zeros((0, self.n_neurons), np.float32)
        return v if neurons is None else v[:, np.asarray(neurons)]

    def pool_inputs(self, x: np.ndarray, pool: int) -> np.ndarray:
        """The feature map (N, positions, channels) entering max-pool ``pool`` (0 = shallowest) of the chain."""
        x = self._check(x)
        n_pools = len(self.substructure.pools)
        if not 0 <= pool < n_pools:
            raise InputError(f"pool index {pool} out of range: the substructure has {n_pools} max-pools")
        out = [self._pool_batch(x[i:i + self.batch_size], pool) for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out)

    def gradient(self, x: np.ndarray, neuron: int) -> np.ndarray:
        """d value(CN ``neuron``) / d input, (N, RF, 4), ACGT order."""
        x = self._check(x)
        out = [self._grad_batch(x[i:i + self.batch_size], int(neuron)) for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out)

    def conv_weight(self) -> np.ndarray:
        """Weights of conv layer K along the length axis, (kernel, in_channels, out_channels)."""
        raise NotImplementedError  # pragma: no cover

    def _values_batch(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _pool_batch(self, x, pool):  # pragma: no cover - abstract
        raise NotImplementedError

    def _grad_batch(self, x, neuron):  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------- PyTorch
class _TorchProbe(NeuronProbe):
    def __init__(self, model, layer: int, batch_size: int):
        import torch
        from torch import nn

        self._torch = torch
        self.batch_size = batch_size
        self.layout = model.layout
        if self.layout not in ("(4,L)", "(1,4,L)", "(4,1,L)", "(4,L,1)"):
            raise UnsupportedModelError(f"NeuronMotif supports channels-first PyTorch inputs (4,L), (1,4,L), "
                                        f"(4,1,L) or (4,L,1); this model's input layout is {self.layout}")
        self._len_index = 0 if self.layout == "(4,L,1)" else -1  # the length axis of a 2-D kernel (Basset: (k, 1))
        mods = _torch_chain(model.raw_model.module)
        conv_t = (nn.Conv1d, nn.Conv2d)
        pool_t = (nn.MaxPool1d, nn.MaxPool2d)
        affine_t = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
        act_t = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.Softplus, nn.ReLU6, nn.SiLU,
                 nn.Threshold, nn.Hardtanh)  # Threshold: torch7's ReLU (DeepSEA, Beluga)
        chain, convs_seen, keep = [], 0, []
        _check_layer_index(layer, sum(isinstance(m, conv_t) for _, m in mods), type(model.raw_model.module).__name__)
        for name, m in mods:
            if convs_seen == layer and not isinstance(m, affine_t):
                break
            if isinstance(m, conv_t):
                convs_seen += 1
                chain.append(self._conv_info(name, m))
            elif isinstance(m, pool_t):
                chain.append(self._pool_info(name, m))
            elif not isinstance(m, affine_t + act_t):
                if convs_seen < layer:
                    raise UnsupportedModelError(
                        f"NeuronMotif: layer {name!r} ({getattr(m, 'what', type(m).__name__)}) below conv layer "
                        f"{layer} is not a "
                        "conv, max-pool, batch-norm, dropout or element-wise activation")
                break
            keep.append(m)
        self._pool_idx = [i for i, m in enumerate(keep) if isinstance(m, pool_t)]
        self._seq = nn.Sequential(*keep).eval()
        self.substructure = _finish(chain, layer)
        self._conv = next(m for m in reversed(keep) if isinstance(m, conv_t))
        _assert_one_position(self)

    def _length_axis_kernel(self, v):
        v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
        return int(v[self._len_index] if len(v) > 1 else v[0])

    def _conv_info(self, name, m):
        pad = m.padding if isinstance(m.padding, str) else tuple(np.atleast_1d(m.padding))
        if pad not in ("valid",) and (isinstance(pad, str) or any(pad)):
            raise UnsupportedModelError(f"NeuronMotif: conv layer {name!r} uses padding {m.padding}; the "
                                        "substructure of a CN needs unpadded ('valid') convolutions")
        k = self._length_axis_kernel(m.kernel_size)
        return ChainLayer("conv", name, k, self._length_axis_kernel(m.stride), self._length_axis_kernel(m.dilation),
                          channels=int(m.out_channels))

    def _pool_info(self, name, m):
        if any(np.atleast_1d(m.padding)) or getattr(m, "ceil_mode", False):
            raise UnsupportedModelError(f"NeuronMotif: max-pool {name!r} is padded or uses ceil_mode")
        size = self._length_axis_kernel(m.kernel_size)
        stride = self._length_axis_kernel(m.stride if m.stride is not None else m.kernel_size)
        return ChainLayer("pool", name, size, stride)

    def _input(self, x, grad=False):
        t = self._torch.from_numpy(np.ascontiguousarray(x))
        if grad:
            t.requires_grad_(True)
        return t

    def _value_tensor(self, t):
        h = to_model_layout(t, self.layout)
        for m in self._seq:
            h = m(h)
        return h.reshape(h.shape[0], h.shape[1], -1)[:, :, 0]

    def _values_batch(self, x):
        with self._torch.no_grad():
            return self._value_tensor(self._input(x)).numpy()

    def _pool_batch(self, x, pool):
        h = to_model_layout(self._input(x), self.layout)
        with self._torch.no_grad():
            for i, m in enumerate(self._seq):
                if i == self._pool_idx[pool]:
                    return h.reshape(h.shape[0], h.shape[1], -1).permute(0, 2, 1).numpy()
                h = m(h)
        raise AssertionError("unreachable")  # pragma: no cover

    def _grad_batch(self, x, neuron):
        t = self._input(x, grad=True)
        y = self._value_tensor(t)[:, neuron]
        (g,) = self._torch.autograd.grad(y.sum(), t)
        return g.numpy()

    def conv_weight(self) -> np.ndarray:
        w = self._conv.weight.detach().numpy()  # (out, in, [h,] k)
        if w.ndim == 4:
            w = w[:, :, 0, :] if w.shape[2] == 1 else w[:, :, :, 0]
        return np.ascontiguousarray(np.transpose(w, (2, 1, 0)))


def _torch_chain(module) -> list[tuple[str, Any]]:
    """(name, module) in forward order, from a torch.fx trace (submodules fx cannot trace, such as the zoo's
    torch7 Lambda guards, as opaque calls: torch_trace); functional relu becomes nn.ReLU."""
    import torch
    from torch import nn

    from kipoi_dfim.backend.torch_trace import trace

    try:
        gm, _ = trace(module)
    except Exception as e:  # noqa: BLE001 - data-dependent control flow cannot be traced
        raise UnsupportedModelError(f"NeuronMotif: cannot trace {type(module).__name__} with torch.fx ({e})") from e
    out, prev = [], None
    relus = {torch.relu, torch.nn.functional.relu}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            prev = node
            continue
        if node.op == "output":
            break
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
        elif (node.op == "call_function" and node.target in relus) or (node.op == "call_method"
                                                                          and node.target == "relu"):
            m = nn.ReLU()
        else:
            out.append((node.name, _Opaque(str(node.target))))
            break
        if not node.args or node.args[0] is not prev:
            out.append((node.name, _Opaque("branching graph")))
            break
        out.append((str(node.target) if node.op == "call_module" else node.name, m))
        prev = node
    return out


class _Opaque:
    """A graph node NeuronMotif cannot follow (named in the error)."""

    def __init__(self, what: str):
        self.what = what


def _assert_one_position(p: NeuronProbe) -> None:
    rf = p.receptive_field
    v = p.values(np.full((1, rf, 4), 0.25, np.float32))
    if v.shape != (1, p.n_neurons):
        raise UnsupportedModelError(f"NeuronMotif: layer {p.substructure.layer} does not reduce a {rf} bp input to "
                                    f"one position (got values of shape {v.shape})")


# ---------------------------------------------------------------------------------------------------- Keras 3
class _KerasProbe(NeuronProbe):
    def __init__(self, model, layer: int, batch_size: int):
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import keras
        import tensorflow as tf

        self._tf = tf
        self.batch_size = batch_size
        kmodel = model.model
        layers = _keras_chain(kmodel)
        conv_t = (keras.layers.Conv1D, keras.layers.Conv2D)
        pool_t = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D)
        pass_t = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                  keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
                  keras.layers.Permute, keras.layers.BatchNormalization, keras.layers.InputLayer)
        n_convs = sum(isinstance(lay, conv_t) for lay in layers)
        _check_layer_index(layer, n_convs, kmodel.name)
        chain, keep, seen = [], [], 0
        for lay in layers:
            if seen == layer and not isinstance(lay, keras.layers.BatchNormalization):
                break
            if isinstance(lay, conv_t):
                seen += 1
                chain.append(self._conv_info(lay))
            elif isinstance(lay, pool_t):
                chain.append(self._pool_info(lay))
            elif not isinstance(lay, pass_t):
                raise UnsupportedModelError(
                    f"NeuronMotif: layer {lay.name!r} ({type(lay).__name__}) below conv layer {layer} is not a "
                    "conv, max-pool, batch-norm, dropout, permute or activation layer")
            keep.append(lay)
        self.substructure = _finish(chain, layer)
        self._conv = next(lay for lay in reversed(keep) if isinstance(lay, conv_t))
        self._build(keras, model.layout, kmodel, keep, pool_t)
        _assert_one_position(self)

    def _conv_info(self, lay):
        if lay.padding != "valid":
            raise UnsupportedModelError(f"NeuronMotif: conv layer {lay.name!r} uses padding {lay.padding!r}; the "
                                        "substructure of a CN needs 'valid' convolutions")
        ax = self._len_ax(lay)
        return ChainLayer("conv", lay.name, int(lay.kernel_size[ax]), int(lay.strides[ax]),
                          int(lay.dilation_rate[ax]), channels=int(lay.filters))

    def _pool_info(self, lay):
        if lay.padding != "valid":
            raise UnsupportedModelError(f"NeuronMotif: max-pool {lay.name!r} uses padding {lay.padding!r}")
        ax = self._len_ax(lay)
        return ChainLayer("pool", lay.name, int(lay.pool_size[ax]), int(lay.strides[ax]))

    @staticmethod
    def _len_ax(lay) -> int:
        """Index of the sequence-length axis among the layer's spatial axes (the non-singleton one)."""
        shape = tuple(lay.input.shape)
        spatial = shape[1:-1] if lay.data_format == "channels_last" else shape[2:]
        if len(spatial) == 1:
            return 0
        k = getattr(lay, "kernel_size", None) or lay.pool_size
        # the length axis is the longest spatial axis (None = unknown length counts as longest); ties: the
        # axis whose kernel is not the full alphabet
        scores = [(float("inf") if d is None else d) for d in spatial]
        best = [i for i, s in enumerate(scores) if s == max(scores)]
        return best[-1] if len(best) > 1 and k[best[0]] == spatial[best[0]] else best[0]

    def _build(self, keras, layout, kmodel, keep, pool_t):
        from kipoi_dfim.backend.layouts import layout_spec

        rf = self.receptive_field
        inp = keras.Input((rf, 4), name="rf_onehot_acgt")
        perm, singles = layout_spec(layout)
        h = inp
        if perm != (0, 1, 2):
            h = keras.layers.Permute((2, 1))(h)
        if singles:
            shape = list(h.shape[1:])
            for pos in singles:  # increasing positions in the batched shape
                shape.insert(pos - 1, 1)
            h = keras.layers.Reshape(tuple(shape))(h)
        pool_inputs = []
        for lay in keep:
            if isinstance(lay, keras.layers.InputLayer):
                continue
            if isinstance(lay, pool_t):
                pool_inputs.append(_to_nlc(keras, h, lay.data_format))
            if lay is self._conv:
                h = _linear_twin(keras, lay)(h)
            else:
                h = lay(h)
        value = keras.layers.Flatten()(_to_nlc(keras, h, self._conv.data_format))
        self._value_model = keras.Model(inp, value)
        self._pool_models = [keras.Model(inp, t) for t in pool_inputs]
        tf = self._tf
        vm = self._value_model

        @tf.function(reduce_retracing=True)
        def grad(x, neuron):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.gather(vm(x, training=False), neuron, axis=1)
            return tape.gradient(y, x)

        self._grad_fn = grad

    def _values_batch(self, x):
        return np.asarray(self._value_model(self._tf.convert_to_tensor(x), training=False))

    def _pool_batch(self, x, pool):
        return np.asarray(self._pool_models[pool](self._tf.convert_to_tensor(x), training=False))

    def _grad_batch(self, x, neuron):
        return self._grad_fn(self._tf.convert_to_tensor(x), self._tf.constant(neuron)).numpy()

    def conv_weight(self) -> np.ndarray:
        w = np.asarray(self._conv.get_weights()[0])  # (k,in,out) or (kh,kw,in,out)
        if w.ndim == 4:
            w = w[0] if w.shape[0] == 1 else w[:, 0]
        return np.ascontiguousarray(w)


def _to_nlc(keras, h, data_format):
    """A feature-map tensor as (N, positions, channels)."""
    if data_format == "channels_first":
        h = keras.layers.Permute(tuple(range(2, len(h.shape))) + (1,))(h)
    c = h.shape[-1]
    return keras.layers.Reshape((-1, c))(h)


def _linear_twin(keras, lay):
    """The conv layer without its fused activation, sharing the weights (the CN value is pre-nonlinearity)."""
    cfg = lay.get_config()
    cfg["activation"] = "linear"
    cfg["name"] = f"{lay.name}_linear"
    twin = lay.__class__.from_config(cfg)
    twin.build(lay.input.shape)
    twin.set_weights(lay.get_weights())
    return twin


def _keras_chain(kmodel) -> list:
    """Layers in forward order while they form a single chain from the model's input."""
    import keras

    if isinstance(kmodel, keras.Sequential):
        return list(kmodel.layers)
    prev = kmodel.inputs[0]
    out = []
    for lay in kmodel.layers:
        if isinstance(lay, keras.layers.InputLayer):
            continue
        try:
            inp = lay.input
        except (AttributeError, ValueError):  # a layer called on several inputs: the chain ends
            break
        if inp is not prev:
            break
        out.append(lay)
        prev = lay.output
    return out
