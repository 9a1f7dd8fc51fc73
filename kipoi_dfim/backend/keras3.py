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
from kipoi_dfim.backend.layouts import alphabet_index, layout_from_shape, layout_spec, model_shape  # noqa: E402
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


def _reorder_layer(idx: list[int], name: str = "to_model_alphabet") -> keras.layers.Layer:
    """A bias-free 1x1 convolution whose kernel is the permutation matrix: exactly linear for every engine."""
    layer = keras.layers.Conv1D(4, 1, use_bias=False, trainable=False, name=name)
    layer.build((None, None, 4))
    kernel = np.zeros((1, 4, 4), np.float32)
    for j, i in enumerate(idx):
        kernel[0, i, j] = 1.0
    layer.set_weights([kernel])
    return layer


def _reverse_complement_layers(seq_len: int) -> list[keras.layers.Layer]:
    """(B, L, 4) ACGT -> its reverse complement, as bias-free linear layers with 0/1 kernels (exact, and
    linear for every attribution engine): reverse the length axis with a Dense on the transposed tensor,
    then swap A<->T and C<->G with a 1x1 convolution."""
    rev = keras.layers.Dense(seq_len, use_bias=False, trainable=False, name="rc_reverse_length")
    rev.build((None, 4, seq_len))
    rev.set_weights([np.eye(seq_len, dtype=np.float32)[::-1].copy()])
    comp = keras.layers.Conv1D(4, 1, use_bias=False, trainable=False, name="rc_complement")
    comp.build((None, seq_len, 4))
    comp.set_weights([np.eye(4, dtype=np.float32)[::-1].copy()[None]])
    return [keras.layers.Permute((2, 1), name="rc_to_channels_first"), rev,
            keras.layers.Permute((2, 1), name="rc_to_channels_last"), comp]


def _to_model_input(h, layout: str, seq_len: int, alphabet: str | None, suffix: str = ""):
    """ACGT (B, L, 4) tensor -> the model's alphabet order and layout."""
    perm, singles = layout_spec(layout)
    idx = alphabet_index(alphabet)
    if idx is not None:
        h = _reorder_layer(idx, f"to_model_alphabet{suffix}")(h)
    if perm != (0, 1, 2):
        h = keras.layers.Permute((2, 1), name=f"to_channels_first{suffix}")(h)
    if singles:
        h = keras.layers.Reshape(model_shape(layout, seq_len), name=f"add_singleton_axis{suffix}")(h)
    return h


def _scored_model(
    model: keras.Model, layout: str, seq_len: int, logit: bool, alphabet: str | None = None,
    rc_input: bool = False,
) -> tuple[keras.Model, str | None]:
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
    h = _to_model_input(inp, layout, seq_len, alphabet)
    if rc_input:
        rc = inp
        for layer in _reverse_complement_layers(seq_len):
            rc = layer(rc)
        ys = inner([h, _to_model_input(rc, layout, seq_len, alphabet, suffix="_rc")])
    else:
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
        alphabet: str | None = None,
        alphabet_axis: int | None = None,
        notes: list[str] | None = None,
        rc_input: bool = False,
    ):
        if len(model.inputs) != (2 if rc_input else 1):
            raise InputError(f"kipoi-dfim scores single-input sequence models (or a (sequence, reverse complement) "
                             f"pair); {model.name} has {len(model.inputs)} inputs")
        self.rc_input = rc_input
        shape = tuple(model.inputs[0].shape[1:])
        found, length = layout_from_shape(shape, seq_len, alphabet_axis)
        layout = layout or found
        seq_len = seq_len or length
        self.model = model
        self.alphabet = "".join(alphabet or "ACGT").upper()
        self.notes = list(notes or [])
        self.raw_model, _ = _scored_model(model, layout, seq_len, logit=False, alphabet=self.alphabet,
                                          rc_input=rc_input)
        self.logit_model, activation = _scored_model(model, layout, seq_len, logit=True, alphabet=self.alphabet,
                                                     rc_input=rc_input)
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

    def _gradients_batch(self, x: np.ndarray, targets: list[int]) -> np.ndarray:
        """One forward pass (a persistent tape), one gradient per target, in one tf.function per target list."""
        key = ("grads", tuple(targets))
        if key not in self._fns:
            m = self._scored(self.output)

            @tf.function(reduce_retracing=True)
            def fn(x):
                with tf.GradientTape(persistent=True) as tape:
                    tape.watch(x)
                    y = m(x, training=False)
                    ys = [y[:, t] for t in targets]
                return tf.stack([tape.gradient(yt, x) for yt in ys])

            self._fns[key] = fn
        return self._fns[key](tf.convert_to_tensor(x, dtype=tf.float32)).numpy()

    def _multipliers(self, x: np.ndarray, references: np.ndarray, target: int) -> np.ndarray:
        from kipoi_dfim.backend.deeplift_keras import deeplift_multipliers_keras

        return deeplift_multipliers_keras(
            self._scored(self.output), x, references, target, batch_size=self.batch_size
        )


    def _deeplift_shared(self, x: np.ndarray, references: np.ndarray, targets: list[int],
                         span: tuple[int, int] | None = None) -> np.ndarray:
        """The shared-reference engine, its backward pass cropped to ``span`` where the model's bottom is a
        chain of local layers (``deeplift_keras_crop``); the pairwise default where the engine does not apply
        (see deeplift_keras)."""
        from kipoi_dfim.backend.deeplift_keras_shared import SharedPathUnavailable, deeplift_shared_keras

        if type(self)._multipliers is not KerasModel._multipliers:  # e.g. a SavedModel without DeepLIFT
            return super()._deeplift_shared(x, references, targets)
        return self._fast_shared(deeplift_shared_keras, SharedPathUnavailable, x, references, targets,
                                 span=span)


def _h5_model_config(path: str) -> dict | None:
    """The ``model_config`` JSON a Keras 1/2 ``model.save`` wrote into the HDF5 attributes (None if absent)."""
    import json

    import h5py

    try:
        with h5py.File(path, "r") as f:
            cfg = f.attrs.get("model_config")
            version = f.attrs.get("keras_version")
    except OSError:
        return None
    if cfg is None:
        return None
    cfg = json.loads(cfg.decode() if isinstance(cfg, bytes) else cfg)
    cfg["_keras_version"] = version.decode() if isinstance(version, bytes) else version
    return cfg


def load_keras_file(
    path: str,
    custom_objects: dict | None = None,
    backend: str | None = None,
    image_dim_ordering: str | None = None,
    **kw,
) -> KerasModel:
    """A Keras model file: Keras 3 ``.keras``/``.h5``, else a Keras 1/2 full-model ``.h5`` rebuilt by
    :func:`~kipoi_dfim.backend.keras_legacy.build_from_legacy` from the ``model_config`` it stores.

    Keras 3 reads Keras 2.3+ full-model h5 files but not the Keras <= 2.2 ones most zoo models were saved
    as; the project's converter reads those from the architecture in the file's attributes.
    """
    try:
        model = keras.models.load_model(path, compile=False, custom_objects=custom_objects)
    except Exception as e:  # noqa: BLE001 - keras raises many kinds
        cfg = _h5_model_config(path)
        if cfg is None:
            raise InputError(f"cannot load as a Keras 3 model ({type(e).__name__}: {e})", path=path) from e
        from kipoi_dfim.backend.keras_legacy import build_from_legacy

        log.info("Keras 3 cannot load %s (%s: %s); rebuilding it from its Keras %s model_config",
                 path, type(e).__name__, e, cfg.get("_keras_version"))
        cfg.pop("_keras_version", None)
        model = build_from_legacy(cfg, path, backend=backend, image_dim_ordering=image_dim_ordering,
                                  custom_objects=custom_objects)
    return KerasModel(model, **kw)
