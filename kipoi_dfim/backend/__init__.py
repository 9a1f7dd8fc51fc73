"""The backend layer: every framework (Keras 3, Keras 1/2 via conversion, PyTorch, TF2) behind one protocol.

``load_model`` is the only entry point the rest of the package uses. It returns a
:class:`~kipoi_dfim.backend.base.SequenceModel`; callers never see keras, tensorflow or torch objects.
"""

from __future__ import annotations

import ast
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from kipoi_dfim.backend.base import SequenceModel
from kipoi_dfim.errors import InputError, UnsupportedModelError

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("keras", "pytorch", "tensorflow2")

__all__ = ["load_model", "SequenceModel", "SUPPORTED_TYPES"]


def _parse_shape(shape: Any) -> tuple:
    if isinstance(shape, str):
        shape = ast.literal_eval(shape.replace("None", "None"))
    if isinstance(shape, int):
        shape = (shape,)
    return tuple(shape)


def _schema(descr: dict, model_dir: Path) -> tuple[tuple | None, list[str] | None]:
    """Input shape and target labels from a Kipoi model.yaml schema."""
    schema = descr.get("schema") or {}
    inputs = schema.get("inputs")
    if isinstance(inputs, list):
        if len(inputs) != 1:
            raise UnsupportedModelError(
                f"{model_dir}/model.yaml: kipoi-dfim scores single-input sequence models; "
                f"this one has {len(inputs)} inputs"
            )
        inputs = inputs[0]
    elif isinstance(inputs, dict) and "shape" not in inputs:
        if len(inputs) != 1:
            raise UnsupportedModelError(
                f"{model_dir}/model.yaml: kipoi-dfim scores single-input sequence models; "
                f"this one has inputs {list(inputs)}"
            )
        inputs = next(iter(inputs.values()))
    in_shape = _parse_shape(inputs["shape"]) if inputs and "shape" in inputs else None

    targets = schema.get("targets")
    labels = None
    if isinstance(targets, list):
        labels = [str(t.get("name", i)) for i, t in enumerate(targets)]
    elif isinstance(targets, dict):
        cl = targets.get("column_labels")
        if isinstance(cl, str):
            f = model_dir / cl
            labels = [ln.strip() for ln in f.read_text().splitlines() if ln.strip()] if f.exists() else [cl]
        elif cl:
            labels = [str(c) for c in cl]
    return in_shape, labels


def _load_dir(model_dir: Path, **kw) -> SequenceModel:
    yml = model_dir / "model.yaml"
    if not yml.exists():
        raise InputError("not a Kipoi model directory (no model.yaml)", path=str(model_dir))
    try:
        descr = yaml.safe_load(yml.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"invalid YAML: {' '.join(str(e).split())}", path=str(yml)) from e
    mtype = descr.get("type")
    args = dict(descr.get("args") or {})
    in_shape, labels = _schema(descr, model_dir)
    kw.setdefault("targets", labels)

    def path(key):
        v = args.get(key)
        if isinstance(v, dict):  # kipoi's {url:, md5:} form: only a local file can be used here
            raise InputError(
                f"args.{key} points to a download ({v.get('url')}); kipoi-dfim does not download: fetch it "
                "with `kipoi get-example`/`kipoi predict` once, or give a local path",
                path=str(yml),
            )
        return str(model_dir / v) if v is not None else None

    if mtype == "keras":
        from kipoi_dfim.backend.keras3 import KerasModel, load_keras_file

        if args.get("arch"):
            from kipoi_dfim.backend.keras_legacy import build_from_legacy

            model = build_from_legacy(
                path("arch"), path("weights"), backend=args.get("backend"),
                image_dim_ordering=args.get("image_dim_ordering"),
            )
            return KerasModel(model, **kw)
        return load_keras_file(path("weights"), **kw)
    if mtype == "pytorch":
        from kipoi_dfim.backend.layouts import layout_from_shape
        from kipoi_dfim.backend.torch_ import TorchModel

        module = _load_torch_module(model_dir, args, yml)
        if in_shape is None and "seq_len" not in kw:
            raise InputError("schema.inputs.shape is missing; pass seq_len= and layout=", path=str(yml))
        if in_shape is not None:
            layout, seq_len = layout_from_shape(in_shape, kw.pop("seq_len", None))
            kw.setdefault("layout", layout)
            kw["seq_len"] = seq_len
        return TorchModel(module, **kw)
    if mtype == "tensorflow2":
        from kipoi_dfim.backend.tf2 import savedmodel_keras_model

        if not args.get("savedmodel_path"):
            raise InputError("tensorflow2 model needs args.savedmodel_path (a SavedModel directory)", path=str(yml))
        return savedmodel_keras_model(path("savedmodel_path"), input_shape=in_shape, **kw)
    raise UnsupportedModelError(
        f"model type {mtype!r} is not supported; supported Kipoi model types: {', '.join(SUPPORTED_TYPES)} "
        "(kipoi.model.KerasModel, kipoi.model.PyTorchModel, kipoi.model.TensorFlow2Model)",
        path=str(yml),
    )


def _load_torch_module(model_dir: Path, args: dict, yml: Path):
    import importlib.util
    import sys

    import torch

    name = args.get("module_obj") or args.get("module_class")
    if not name:
        raise InputError("pytorch model needs args.module_class or args.module_obj", path=str(yml))
    module_file = args.get("module_file")
    if module_file is None and "." in name:
        module_file, name = name.rsplit(".", 1)
        module_file += ".py"
    if module_file is None:
        raise InputError("pytorch model needs args.module_file", path=str(yml))
    mf = model_dir / module_file
    if not mf.is_file():
        raise InputError(f"args.module_file {module_file} not found", path=str(mf))
    spec = importlib.util.spec_from_file_location(f"kipoi_dfim_user_{abs(hash(str(mf)))}", mf)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(model_dir))
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - the user's module can raise anything
        raise InputError(f"cannot import the model module ({_one_line(e)})", path=str(mf)) from e
    finally:
        sys.path.remove(str(model_dir))
    if not hasattr(mod, name):
        raise InputError(f"has no {name!r} (args.module_class/module_obj)", path=str(mf))
    obj = getattr(mod, name)
    if args.get("module_class"):
        kwargs = args.get("module_kwargs") or {}
        if isinstance(kwargs, str):
            kwargs = yaml.safe_load(kwargs)
        obj = obj(**kwargs)
    weights = args.get("weights")
    if weights is not None:
        wf = model_dir / weights
        if not wf.is_file():
            raise InputError("weights file (args.weights) not found", path=str(wf))
        try:
            obj.load_state_dict(torch.load(str(wf), map_location="cpu"))
        except Exception as e:  # noqa: BLE001 - torch raises several kinds for a corrupt or mismatched file
            raise InputError(f"cannot load the weights ({type(e).__name__}: {_one_line(e)[:300]})", path=str(wf)) from e
    return obj


def _one_line(e: BaseException) -> str:
    """An exception's message on one line (the CLI prints one-line errors)."""
    return " ".join(str(e).split())


def _from_kipoi_object(model, **kw) -> SequenceModel:
    """A model returned by kipoi.get_model (KerasModel / PyTorchModel)."""
    from kipoi_dfim.backend.layouts import layout_from_shape

    descr = getattr(model, "schema", None)
    inputs = getattr(descr, "inputs", None)
    shape = getattr(inputs, "shape", None)
    targets = getattr(descr, "targets", None)
    labels = list(getattr(targets, "column_labels", []) or []) or None
    kw.setdefault("targets", labels)
    cls = type(model).__name__
    if cls == "KerasModel":
        from kipoi_dfim.backend.keras3 import KerasModel

        return KerasModel(model.model, **kw)
    if cls == "PyTorchModel":
        from kipoi_dfim.backend.torch_ import TorchModel

        if shape is not None:
            layout, seq_len = layout_from_shape(shape, kw.pop("seq_len", None))
            kw.setdefault("layout", layout)
            kw["seq_len"] = seq_len
        return TorchModel(model.model, **kw)
    if cls == "TensorFlow2Model" and getattr(model, "source_dir", None):
        return _load_dir(Path(model.source_dir), **kw)
    raise UnsupportedModelError(
        f"kipoi model class {cls} is not supported; supported: kipoi.model.KerasModel, kipoi.model.PyTorchModel, "
        "kipoi.model.TensorFlow2Model"
    )


def load_model(
    model: Any,
    source: str | None = None,
    target: int | str | None = None,
    output: str = "logit",
    device: str | None = "auto",
    **kw: Any,
) -> SequenceModel:
    """Load any supported sequence model behind the :class:`SequenceModel` protocol.

    Parameters
    ----------
    model
        A local Kipoi model directory, a Kipoi model name (with ``source``), a Keras 3 ``.h5``/``.keras`` file,
        a pickled torch module (``.pt``/``.pth``), a ``keras.Model``, a ``torch.nn.Module`` (then ``seq_len``
        and ``layout`` are needed, default layout ``"(4,L)"``) or a model returned by ``kipoi.get_model``.
    source
        Kipoi source of a model given by name (e.g. ``"kipoi"``); ``"dir"`` or None for a local directory.
    target
        Default target; validated here so a typo fails early. Methods still take an explicit target.
    output
        ``"logit"`` scores the value before a final sigmoid/softmax (the paper's choice for classifiers),
        ``"raw"`` the model output as is.
    device
        PyTorch models: ``"auto"`` (CUDA if available, else Apple MPS, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``. TensorFlow places Keras models itself (on its visible GPU, if any), so
        for them only ``"auto"`` and ``"cpu"`` are meaningful and the argument is not used.
    **kw
        ``seq_len``, ``layout``, ``targets`` (names), ``batch_size``.

    Returns
    -------
    SequenceModel
        With ``seq_len``, ``targets``, ``predict``, ``gradient``, ``deeplift``.
    """
    kw["output"] = output
    m = _load(model, source, **kw)
    if hasattr(m, "to_device"):
        m.to_device(device)
    elif device not in (None, "auto", "cpu"):
        log.info("device %r ignored: TensorFlow places %s models itself", device, getattr(m, "framework", "these"))
    if target is not None:
        m.default_target = m.target_index(target)
    return m


def _load(model, source, **kw) -> SequenceModel:
    if isinstance(model, SequenceModel) and hasattr(model, "deeplift_multipliers"):
        return model
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if p.is_dir() and not (p / "model.yaml").exists() and (p / "saved_model.pb").exists():
            from kipoi_dfim.backend.tf2 import savedmodel_keras_model

            return savedmodel_keras_model(str(p), **kw)
        if p.is_dir():
            return _load_dir(p, **kw)
        if p.suffix in (".h5", ".hdf5", ".keras") and p.is_file():
            from kipoi_dfim.backend.keras3 import load_keras_file

            return load_keras_file(str(p), **kw)
        if p.suffix in (".pt", ".pth") and p.is_file():
            from kipoi_dfim.backend.torch_ import load_torch_file

            return load_torch_file(str(p), **kw)
        if source not in (None, "dir"):
            import kipoi

            try:
                model_dir = kipoi.get_source(source).get_model_dir(str(model))
            except Exception as e:  # noqa: BLE001
                raise InputError(f"cannot find Kipoi model {model!r} in source {source!r}: {e}") from e
            return _load_dir(Path(model_dir), **kw)
        raise InputError(
            f"model {str(model)!r} is neither a Kipoi model directory nor a .h5/.keras/.pt file "
            "(give --source to load a Kipoi model by name)"
        )
    mod = type(model).__module__
    if mod.startswith("keras") or hasattr(model, "layers") and hasattr(model, "inputs"):
        from kipoi_dfim.backend.keras3 import KerasModel

        return KerasModel(model, **kw)
    if mod.startswith("torch") or _is_torch_module(model):
        from kipoi_dfim.backend.torch_ import TorchModel

        if "seq_len" not in kw:
            raise InputError("a torch.nn.Module needs seq_len= (and layout=, default '(4,L)')")
        return TorchModel(model, **kw)
    if mod.startswith("kipoi"):
        return _from_kipoi_object(model, **kw)
    raise UnsupportedModelError(
        f"cannot use a {type(model).__name__} as a model; give a Kipoi model directory or name, a .h5/.keras file, "
        "a keras.Model, a torch.nn.Module or a kipoi model object"
    )


def _is_torch_module(obj) -> bool:
    try:
        import torch

        return isinstance(obj, torch.nn.Module)
    except ImportError:  # pragma: no cover
        return False
