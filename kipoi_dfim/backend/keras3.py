"""Keras 3 adapter (TensorFlow backend): a keras.Model behind the SequenceModel protocol."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kipoi_dfim.backend.common import AdapterBase  # noqa: E402
from kipoi_dfim.backend.layouts import _SPEC, layout_from_shape  # noqa: E402
from kipoi_dfim.errors import InputError  # noqa: E402

log = logging.getLogger(__name__)

_FINAL = ("sigmoid", "softmax")


def _activation_name(layer) -> str | None:
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    name = getattr(act, "__name__", None) or str(act)
    return name if name in _FINAL else None


def _logit_tensor(tensor):
    """For a model output tensor, the tensor before its final sigmoid/softmax, and the activation's name."""
    layer = tensor._keras_history.operation
    name = _activation_name(layer)
    if name is None:
        return tensor, None
    if isinstance(layer, keras.layers.Activation):
        return layer.input, name
    # a layer with a fused activation (Dense(..., activation="sigmoid")): a linear twin sharing its weights
    cfg = layer.get_config()
    cfg["activation"] = "linear"
    cfg["name"] = f"{layer.name}_logit"
    twin = layer.__class__.from_config(cfg)
    out = twin(layer.input)
    twin.set_weights(layer.get_weights())
    return out, name


def _scored_model(model: keras.Model, layout: str, seq_len: int, logit: bool) -> tuple[keras.Model, str | None]:
    """Model taking (B, L, 4) ACGT one-hot and returning (B, T) scored outputs."""
    outputs = list(model.outputs)
    activation = None
    if logit:
        new = []
        for t in outputs:
            t2, name = _logit_tensor(t)
            new.append(t2)
            activation = activation or name
        inner = keras.Model(model.inputs, new, name=f"{model.name}_logit")
    else:
        inner = model
    inp = keras.Input((seq_len, 4), name="onehot_acgt")
    perm, insert = _SPEC[layout]
    h = inp
    if perm != (0, 1, 2):
        h = keras.layers.Permute((2, 1), name="to_channels_first")(h)
    if insert is not None:
        shape = [d for d in (h.shape[1:])]
        shape.insert(insert - 1, 1)
        h = keras.layers.Reshape(tuple(shape), name="add_singleton_axis")(h)
    ys = inner(h)
    if isinstance(ys, (list, tuple)):
        ys = [keras.layers.Flatten()(y) if len(y.shape) != 2 else y for y in ys]
        y = keras.layers.Concatenate(axis=-1, name="outputs")(ys) if len(ys) > 1 else ys[0]
    else:
        y = ys if len(ys.shape) == 2 else keras.layers.Flatten()(ys)
    return keras.Model(inp, y, name=f"{model.name}_scored"), activation


class KerasModel(AdapterBase):
    """A Keras 3 model as a :class:`~kipoi_dfim.backend.base.SequenceModel`.

    The input layout is read from the model's input shape (``(L, 4)``, ``(4, L)``, ``(1, 4, L)``, ...).
    ``output="logit"`` scores the value before a final sigmoid/softmax (an Activation layer, or the
    activation fused into the last Dense/Conv layer).
    """

    framework = "keras"
    oom_errors = (tf.errors.ResourceExhaustedError,)

    def __init__(
        self,
        model: keras.Model,
        seq_len: int | None = None,
        layout: str | None = None,
        targets: list[str] | None = None,
        output: str = "logit",
        batch_size: int = 64,
    ):
        if len(model.inputs) != 1:
            raise InputError(f"kipoi-dfim scores single-input sequence models; {model.name} has {len(model.inputs)}")
        shape = tuple(model.inputs[0].shape[1:])
        found, length = layout_from_shape(shape, seq_len)
        layout = layout or found
        seq_len = seq_len or length
        self.model = model
        self.raw_model, _ = _scored_model(model, layout, seq_len, logit=False)
        self.logit_model, activation = _scored_model(model, layout, seq_len, logit=True)
        self._fns = {}
        super().__init__(seq_len=seq_len, layout=layout, targets=targets, output=output,
                         activation=activation, batch_size=batch_size)

    def _n_outputs(self) -> int:
        return int(self.raw_model.outputs[0].shape[-1])

    def _scored(self, output: str) -> keras.Model:
        return self.logit_model if output == "logit" else self.raw_model

    def _predict_batch(self, x: np.ndarray, output: str) -> np.ndarray:
        return np.asarray(self._scored(output)(tf.convert_to_tensor(x), training=False))

    def _grad_fn(self, target: int):
        key = ("grad", target)
        if key not in self._fns:
            m = self._scored(self.output)

            @tf.function(reduce_retracing=True)
            def fn(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = m(x, training=False)[:, target]
                return tape.gradient(y, x)

            self._fns[key] = fn
        return self._fns[key]

    def _gradient_batch(self, x: np.ndarray, target: int) -> np.ndarray:
        return self._grad_fn(target)(tf.convert_to_tensor(x, dtype=tf.float32)).numpy()

    def _multipliers(self, x: np.ndarray, references: np.ndarray, target: int) -> np.ndarray:
        from kipoi_dfim.backend.deeplift_keras import deeplift_multipliers_keras

        return deeplift_multipliers_keras(
            self._scored(self.output), x, references, target, batch_size=self.batch_size
        )


    def _deeplift_shared(self, x: np.ndarray, references: np.ndarray, targets: list[int]) -> np.ndarray:
        """The shared-reference engine; the pairwise default where it does not apply (see deeplift_keras)."""
        from kipoi_dfim.backend.deeplift_keras import SharedPathUnavailable, deeplift_shared_keras

        if type(self)._multipliers is not KerasModel._multipliers:  # e.g. a SavedModel without DeepLIFT
            return super()._deeplift_shared(x, references, targets)
        try:
            return self.with_halving(
                lambda bs: deeplift_shared_keras(self._scored(self.output), x, references, targets, batch_size=bs)
            )
        except SharedPathUnavailable as err:
            log.info("DeepLIFT: pairwise engine (%s)", err)
            return super()._deeplift_shared(x, references, targets)


def load_keras_file(path: str, **kw) -> KerasModel:
    """A Keras 3 model file (.keras, or full-model .h5)."""
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - keras raises many kinds
        raise InputError(f"cannot load as a Keras 3 model ({type(e).__name__}: {e})", path=path) from e
    return KerasModel(model, **kw)
