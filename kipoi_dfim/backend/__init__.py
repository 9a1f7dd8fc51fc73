"""The backend layer: every framework (Keras 3, Keras 1/2 via conversion, PyTorch, TF2) behind one protocol.

``load_model`` is the only entry point the rest of the package uses. It returns a
:class:`~kipoi_dfim.backend.base.SequenceModel`; callers never see keras, tensorflow or torch objects.
"""

from __future__ import annotations

import ast
import logging
import os
import warnings
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


def _is_rc_pair(inputs: list) -> bool:
    """Two inputs of one shape, the second documented as the reverse complement (DeepMEL's (fwd, rc) form)."""
    if len(inputs) != 2 or not all(isinstance(i, dict) for i in inputs):
        return False
    same = str(inputs[0].get("shape")).replace(" ", "") == str(inputs[1].get("shape")).replace(" ", "")
    doc = f"{inputs[1].get('doc', '')} {inputs[1].get('name', '')}".lower()
    return same and ("reverse" in doc or "_rc" in doc or doc.endswith("rc"))


def _schema(descr: dict, model_dir: Path) -> tuple[tuple | None, list[str] | None]:
    """Input shape and target labels from a Kipoi model.yaml schema.

    A second input documented as the reverse complement of the first (DeepMEL) is accepted: the adapter then
    feeds the model (x, reverse_complement(x)), as the zoo's dataloader does.
    """
    schema = descr.get("schema") or {}
    inputs = schema.get("inputs")
    if isinstance(inputs, dict) and "shape" not in inputs:
        inputs = [dict(v or {}, name=k) for k, v in inputs.items()]
    if isinstance(inputs, list):
        if len(inputs) != 1 and not _is_rc_pair(inputs):
            raise UnsupportedModelError(
                f"{model_dir}/model.yaml: kipoi-dfim scores single-input sequence models (or a sequence plus its "
                f"reverse complement); this one has {len(inputs)} inputs "
                f"{[i.get('name', i.get('doc', '?')) for i in inputs if isinstance(i, dict)]}"
            )
        inputs = inputs[0]
    in_shape = _parse_shape(inputs["shape"]) if inputs and "shape" in inputs else None

    targets = schema.get("targets")
    labels = None
    if isinstance(targets, list):
        labels = [str(t.get("name", i)) for i, t in enumerate(targets)]
    elif isinstance(targets, dict) and ("shape" in targets or "column_labels" in targets):
        labels = _column_labels(targets.get("column_labels"), model_dir)
    elif isinstance(targets, dict):  # one entry per named model output (DeepCpG_DNA, BPNet)
        labels = _named_outputs(targets, model_dir)
    return in_shape, labels


def _named_outputs(targets: dict, model_dir: Path) -> list[str]:
    """Target names of a schema with one entry per model output, flattened in output order: the output's
    name for a (1,) output, its column labels, else ``name_<i>`` for each of its flattened values."""
    labels: list[str] = []
    for name, spec in targets.items():
        spec = spec or {}
        cols = _column_labels(spec.get("column_labels"), model_dir)
        shape = _parse_shape(spec["shape"]) if spec.get("shape") is not None else (1,)
        size = 1
        for d in shape:
            size *= int(d) if d is not None else 1
        if cols and len(cols) == size:
            labels += [f"{name}/{c}" for c in cols]
        else:
            labels += [str(name)] if size == 1 else [f"{name}_{i}" for i in range(size)]
    return labels


def _column_labels(cl: Any, model_dir: Path) -> list[str] | None:
    """Target names from ``column_labels``: a list of names, or ONE path (a string or a one-element list).

    As in kipoi (``ArraySchema``), a single entry that names an existing file (relative to the model
    directory, e.g. ``../predictor_names.txt``) is read as one name per line.
    """
    if cl is None:
        return None
    if isinstance(cl, str):
        cl = [cl]
    cl = [str(c) for c in cl]
    if len(cl) == 1:
        f = model_dir / cl[0]
        if f.is_file():
            # as kipoi: one name per line, trailing whitespace stripped (Basset's file has trailing blanks)
            return [ln.rstrip() for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return cl or None


#: kipoi model classes (``defined_as``) and the ``type:`` each corresponds to; kipoi 0.8.6 accepts both forms.
_DEFINED_AS = {
    "KerasModel": "keras",
    "PyTorchModel": "pytorch",
    "OldPyTorchModel": "pytorch",
    "TensorFlow2Model": "tensorflow2",
    "TensorFlowModel": "tensorflow",
    "SklearnModel": "sklearn",
}


def _model_type(descr: dict, yml: Path) -> tuple[str | None, list[str]]:
    """The backend type of a model.yaml in either form, plus notes on what kipoi-dfim cannot honour.

    ``type: pytorch`` and ``defined_as: kipoi.model.PyTorchModel`` mean the same. A custom class
    (``defined_as: model.PostProcKerasmodel``, ``type: custom``) usually wraps a network and post-processes
    its output in ``predict_on_batch``; the network is served (guessed from the args) and the skipped
    post-processing is reported, never silently dropped.
    """
    mtype = descr.get("type")
    defined_as = descr.get("defined_as")
    notes: list[str] = []
    if mtype is not None and mtype != "custom":
        return str(mtype), notes
    if defined_as:
        cls = str(defined_as).rsplit(".", 1)[-1]
        if str(defined_as).startswith("kipoi.model.") or str(defined_as) in _DEFINED_AS:
            if cls not in _DEFINED_AS:
                raise UnsupportedModelError(f"defined_as: {defined_as} is not a kipoi model class", path=str(yml))
            return _DEFINED_AS[cls], notes
    args = descr.get("args") or {}
    parent, overrides = _custom_class_parent(str(defined_as or ""), yml.parent)
    if parent is not None and not overrides:
        return parent, notes  # e.g. TREDNet's PhaseOneModel(KerasModel): the network as kipoi serves it
    guess = parent or ("pytorch" if (args.get("module_file") or args.get("module_class") or args.get("module_obj"))
                       else ("keras" if args.get("weights") is not None or args.get("arch") is not None else None))
    if guess is None:
        return mtype, notes
    note = (f"model class {defined_as or args.get('object') or 'custom'} is the zoo's own class: kipoi-dfim scores "
            f"the {guess} network it wraps; post-processing in its predict_on_batch (e.g. out * sd + mean) "
            "is NOT applied to predictions and attributions")
    log.warning("%s: %s", yml, note)
    warnings.warn(f"{yml}: {note}", UserWarning, stacklevel=4)
    return guess, [note]


def _custom_class_parent(defined_as: str, model_dir: Path) -> tuple[str | None, bool]:
    """For ``defined_as: file.Class`` in the model dir: the kipoi model class it extends (as a type name) and
    whether it overrides ``predict_on_batch``. (None, True) when it cannot be imported or extends none."""
    if "." not in defined_as:
        return None, True
    module, cls_name = defined_as.rsplit(".", 1)
    f = model_dir / (module.replace(".", "/") + ".py")
    if not f.is_file():
        return None, True
    try:
        cls = getattr(_import_file(f, model_dir), cls_name)
        mro = list(cls.__mro__)
    except Exception as e:  # noqa: BLE001 - user code: any import error means "unknown class"
        log.info("cannot import %s from %s (%s)", cls_name, f, e)
        return None, True
    for i, base in enumerate(mro):
        if base.__module__ == "kipoi.model" and base.__name__ in _DEFINED_AS:
            overrides = any("predict_on_batch" in vars(c) for c in mro[:i])
            return _DEFINED_AS[base.__name__], overrides
    return None, True


def _encoding(descr: dict, model_dir: Path) -> dict[str, Any]:
    """One-hot encoding the model was trained with, from the default dataloader's arguments.

    Reads ``alphabet``, ``alphabet_axis``, ``dummy_axis`` and ``dtype`` of ``default_dataloader`` (inline
    ``default_args``, or the ``args: {name: {default: ...}}`` of a local dataloader.yaml).
    """
    dl = descr.get("default_dataloader")
    args: dict[str, Any] = {}
    if isinstance(dl, dict):
        args = dict(dl.get("default_args") or {})
    elif isinstance(dl, str):
        f = model_dir / dl / "dataloader.yaml" if (model_dir / dl).is_dir() else model_dir / dl
        if f.is_file():
            try:
                spec = yaml.safe_load(f.read_text()) or {}
            except yaml.YAMLError:
                spec = {}
            for k, v in (spec.get("args") or {}).items():
                if isinstance(v, dict) and "default" in v:
                    args[k] = v["default"]
    out: dict[str, Any] = {}
    alphabet = args.get("alphabet")
    if isinstance(alphabet, (list, tuple)):
        alphabet = "".join(str(a) for a in alphabet)
    if isinstance(alphabet, str) and len(alphabet) == 4:
        out["alphabet"] = alphabet.upper()
    for k in ("alphabet_axis", "dummy_axis"):
        if isinstance(args.get(k), int):
            out[k] = args[k]
    if args.get("dtype") is not None:
        out["dtype"] = str(args["dtype"])
    if isinstance(args.get("auto_resize_len"), int):
        out["auto_resize_len"] = args["auto_resize_len"]
    return out


def _load_dir(model_dir: Path, **kw) -> SequenceModel:
    """A local Kipoi model directory (model.yaml in either the ``type:`` or the ``defined_as:`` form)."""
    yml = model_dir / "model.yaml"
    if not yml.exists():
        raise InputError("not a Kipoi model directory (no model.yaml)", path=str(model_dir))
    try:
        descr = yaml.safe_load(yml.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"invalid YAML: {' '.join(str(e).split())}", path=str(yml)) from e
    mtype, notes = _model_type(descr, yml)
    args = dict(descr.get("args") or {})
    in_shape, labels = _schema(descr, model_dir)
    kw.setdefault("targets", labels)
    enc = _encoding(descr, model_dir)
    kw.setdefault("alphabet", enc.get("alphabet"))
    kw["notes"] = list(kw.get("notes") or []) + notes
    if in_shape is not None and None in in_shape and kw.get("seq_len") is None and enc.get("auto_resize_len"):
        # a variable-length model (e.g. pwm_HOCOMOCO's (None, 4)): the length its dataloader resizes to
        kw["seq_len"] = enc["auto_resize_len"]

    def path(key):
        v = args.get(key)
        if isinstance(v, dict):  # kipoi's {url:, md5:} form: only a local file can be used here
            raise InputError(
                f"args.{key} points to a download ({v.get('url')}); kipoi-dfim does not download: fetch it "
                "with `kipoi get-example`/`kipoi predict` once, or give a local path",
                path=str(yml),
            )
        return str(model_dir / v) if v is not None else None

    inputs = (descr.get("schema") or {}).get("inputs")
    if isinstance(inputs, dict) and "shape" not in inputs:
        inputs = list(inputs.values())
    rc_pair = isinstance(inputs, list) and len(inputs) == 2
    if mtype == "keras":
        if rc_pair:
            kw["rc_input"] = True
        return _load_keras_dir(model_dir, args, path, enc, kw)
    if rc_pair:
        raise UnsupportedModelError(f"a (sequence, reverse complement) input pair is only supported for Keras "
                                    f"models, not {mtype!r}", path=str(yml))
    if mtype == "pytorch":
        from kipoi_dfim.backend.layouts import layout_from_dataloader, layout_from_shape
        from kipoi_dfim.backend.torch_ import TorchModel

        module = _load_torch_module(model_dir, args, yml, path)
        if in_shape is None and "seq_len" not in kw:
            raise InputError("schema.inputs.shape is missing: pass --seq-len N (Python: seq_len=N, and layout= "
                             "if not (4,L))", path=str(yml))
        if in_shape is not None:
            layout, seq_len = layout_from_shape(in_shape, kw.pop("seq_len", None), enc.get("alphabet_axis"))
            if "alphabet_axis" in enc or "dummy_axis" in enc:
                dl_layout = layout_from_dataloader(enc.get("alphabet_axis"), enc.get("dummy_axis"))
                if dl_layout != layout:
                    log.warning("%s: schema shape %s is layout %s but the dataloader's alphabet_axis/dummy_axis "
                                "give %s; using the schema", yml, in_shape, layout, dl_layout)
            kw.setdefault("layout", layout)
            kw["seq_len"] = seq_len
        return TorchModel(module, **kw)
    if mtype == "tensorflow2":
        from kipoi_dfim.backend.tf2 import savedmodel_keras_model

        if not args.get("savedmodel_path"):
            raise InputError("tensorflow2 model needs args.savedmodel_path (a SavedModel directory)", path=str(yml))
        kw.setdefault("alphabet_axis", enc.get("alphabet_axis"))
        return savedmodel_keras_model(path("savedmodel_path"), input_shape=in_shape, **kw)
    raise UnsupportedModelError(
        f"model type {mtype!r} is not supported; supported Kipoi model types: {', '.join(SUPPORTED_TYPES)} "
        "(kipoi.model.KerasModel, kipoi.model.PyTorchModel, kipoi.model.TensorFlow2Model)",
        path=str(yml),
    )


def _custom_objects(model_dir: Path, args: dict) -> dict | None:
    """``args.custom_objects``: a Python file in the model dir whose ``OBJECTS`` dict names custom layers."""
    f = args.get("custom_objects")
    if not f:
        return None
    mod = _import_file(model_dir / str(f), model_dir)
    return dict(getattr(mod, "OBJECTS", {}) or {})


def _load_keras_dir(model_dir: Path, args: dict, path, enc: dict, kw: dict) -> SequenceModel:
    """Keras: arch JSON + weights (any Keras version), or one full-model file (Keras 3, else Keras <= 2.2)."""
    from kipoi_dfim.backend.keras3 import KerasModel, load_keras_file

    kw.setdefault("alphabet_axis", enc.get("alphabet_axis"))
    if args.get("arch"):
        from kipoi_dfim.backend.keras_legacy import build_from_legacy

        model = build_from_legacy(
            path("arch"), path("weights"), backend=args.get("backend"),
            image_dim_ordering=args.get("image_dim_ordering"), custom_objects=_custom_objects(model_dir, args),
        )
        return KerasModel(model, **kw)
    return load_keras_file(path("weights"), custom_objects=_custom_objects(model_dir, args),
                           backend=args.get("backend"), image_dim_ordering=args.get("image_dim_ordering"), **kw)


def _import_file(mf: Path, model_dir: Path):
    """Import a Python file of a model directory (with the directory on sys.path, as kipoi does)."""
    import importlib.util
    import sys

    if not mf.is_file():
        raise InputError("module file not found", path=str(mf))
    spec = importlib.util.spec_from_file_location(f"kipoi_dfim_user_{abs(hash(str(mf)))}", mf)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(model_dir))
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - the user's module can raise anything
        raise InputError(f"cannot import the model module ({_one_line(e)})", path=str(mf)) from e
    finally:
        sys.path.remove(str(model_dir))
    return mod


def _load_torch_module(model_dir: Path, args: dict, yml: Path, path=None):
    """The nn.Module of a pytorch model.yaml: ``module_obj`` or ``module_class(**module_kwargs)`` from
    ``module_file`` (or a dotted ``module_class``), with the state dict of ``weights`` loaded."""
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
    mod = _import_file(model_dir / module_file, model_dir)
    if not hasattr(mod, name):
        raise InputError(f"{module_file} has no {name!r} (args.module_obj/module_class)", path=str(yml))
    obj = getattr(mod, name)
    if args.get("module_class"):
        kwargs = args.get("module_kwargs") or {}
        if isinstance(kwargs, str):
            kwargs = yaml.safe_load(kwargs)
        obj = obj(**kwargs)
    weights = args.get("weights")
    if weights is not None:
        wpath = path("weights") if path is not None else str(model_dir / weights)
        if not Path(wpath).is_file():
            raise InputError("weights file (args.weights) not found", path=str(wpath))
        try:
            obj.load_state_dict(torch.load(wpath, map_location="cpu"))
        except Exception as e:  # noqa: BLE001 - torch raises several kinds for a corrupt or mismatched file
            raise InputError(f"cannot load the weights ({type(e).__name__}: {_one_line(e)[:300]})",
                             path=str(wpath)) from e
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
        ``seq_len`` (the input length of a model whose length is not fixed, e.g. Keras ``(None, 4)``; a fixed
        length must equal it), ``layout``, ``targets`` (names), ``batch_size``.

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


def check_seq_len(model: Any, seq_len: int | None) -> None:
    """Refuse a model whose input length differs from a given ``seq_len`` (a loaded model is not resized).

    Parameters
    ----------
    model
        A model from :func:`load_model`.
    seq_len
        The length asked for (``--seq-len`` / ``seq_len=``); None accepts any.

    Raises
    ------
    InputError
        One line naming the model's length and the one given.
    """
    if seq_len is not None and int(model.seq_len) != int(seq_len):
        raise InputError(f"the model's input length is {model.seq_len}, but --seq-len {seq_len} (Python: "
                         f"seq_len={seq_len}) was given; a loaded model is not resized")


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
