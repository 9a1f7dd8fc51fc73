"""``kipoi-dfim kipoi-spec``: a Kipoi model directory that runs DFIM variant scoring under ``kipoi predict``.

The written directory ``DIR`` is an ordinary Kipoi model (``type: custom``)::

    DIR/model.yaml        type: custom -> model.py::DfimModel; schema of the inputs and the scores
    DIR/model.py          a thin kipoi.model.BaseModel that calls :class:`DfimPredictor`
    DIR/dataloader.yaml   type: SampleIterator -> dataloader.py::VariantWindows; args vcf_file, fasta_file
    DIR/dataloader.py     a thin kipoi.data.SampleIterator over :func:`iter_samples`
    DIR/dfim.yaml         the scoring settings (window, method, n_refs, seed, targets, ...) and the model path
    DIR/wrapped_model/    a copy of the wrapped model (see :func:`write_kipoi_spec` for why a copy)
    DIR/example_files/    a small VCF + FASTA, so that ``kipoi test DIR --source dir`` runs offline

``kipoi predict DIR --source dir --dataloader_args '{"vcf_file": ..., "fasta_file": ...}' -o out.tsv`` then
writes one row per (VCF record, ALT) with, per scored target, the columns of ``score-variants``' TSV
(``preds/<target>/max_abs_fis`` ...) and the identifying columns ``preds/variant_id``, ``preds/chrom``, ...
(kipoi predict drops the dataloader's ``metadata`` unless ``-m`` is given, so the model echoes them into its
predictions). :func:`read_predictions` turns that TSV into the long table of ``score_variants``.

The numbers are those of :func:`kipoi_dfim.score_variants` with the same settings: both call
:func:`kipoi_dfim.scoring.score_windows`, and shuffled references are seeded per (record, ALT), so the
kipoi batch size changes nothing. The file-wide null (p/q-values) needs the whole VCF and is not available
under ``kipoi predict``; use ``kipoi-dfim score-variants --null-shuffles`` for it.

All the logic lives here (tested, versioned with the package); the files copied into ``DIR`` only import it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from kipoi_dfim import __version__
from kipoi_dfim.backend import load_model
from kipoi_dfim.errors import InputError
from kipoi_dfim.scoring import load_options, make_settings, score_windows
from kipoi_dfim.settings import Settings
from kipoi_dfim.variants import Fasta, Variant, iter_variants, open_text, read_records, windows

log = logging.getLogger(__name__)

CONFIG_FILE = "dfim.yaml"
WRAPPED_DIR = "wrapped_model"
EXAMPLE_DIR = "example_files"
TEMPLATE_DIR = Path(__file__).parent / "kipoi_template"

# per-target score columns written by the Kipoi model (the TSV columns of score-variants without the null)
SCORE_COLUMNS = (
    "max_abs_fis", "max_fis_offset", "max_fis_base", "fis_at_max",
    "ref_pred", "alt_pred", "diff", "logit_ref", "logit_alt", "logit", "deepsea_effect",
)
# identifying columns, echoed into the predictions (and also given as Kipoi metadata)
ID_COLUMNS = ("variant_id", "chrom", "pos", "ref", "alt", "status")

# dataloader inputs besides the two windows: what the model needs to rebuild the Variant of each sample
_INT_INPUTS = ("record_index", "alt_index", "vcf_line", "pos", "offset")
_STR_INPUTS = ("variant_id", "chrom", "ref", "alt", "status", "flags")


# -- the dataloader side ------------------------------------------------------------------------------------


def read_config(spec_dir: str | os.PathLike) -> dict:
    """The settings in ``spec_dir/dfim.yaml`` (written by :func:`write_kipoi_spec`)."""
    path = Path(spec_dir) / CONFIG_FILE
    if not path.exists():
        raise InputError(f"not a kipoi-dfim Kipoi directory (no {CONFIG_FILE})", path=str(spec_dir))
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"invalid YAML: {e}", path=str(path)) from e


def iter_samples(
    vcf_file: str | os.PathLike, fasta_file: str | os.PathLike, seq_len: int, chunk_size: int = 64
) -> Iterator[dict]:
    """Stream a VCF as Kipoi samples, one per (record, ALT), never dropping one.

    Records are read ``chunk_size`` at a time (kipoi_dfim.variants) and their windows extracted together;
    a sample whose variant cannot be scored keeps its ``status`` and all-zero windows, and the model gives it
    NaN scores. The model needs, besides the windows, the record and ALT index (they seed the shuffled
    references, so that the numbers do not depend on the kipoi batch) and the variant's offset in the window.

    Returns
    -------
    iterator of dict
        ``{"inputs": {"ref_seq": (L, 4), "alt_seq": (L, 4), record_index, alt_index, vcf_line, pos, offset,
        variant_id, chrom, ref, alt, status, flags}, "metadata": {variant_id, chrom, pos, ref, alt, status}}``
    """
    # open both files now, so that a wrong path fails when kipoi builds the dataloader, not at the first batch
    fa = Fasta(fasta_file)
    read_records(vcf_file)
    return _samples(vcf_file, fa, int(seq_len), chunk_size)


def _samples(vcf_file, fa, seq_len: int, chunk_size: int) -> Iterator[dict]:
    zero = np.zeros((seq_len, 4), np.float32)
    for chunk in iter_variants(vcf_file, fa, seq_len, chunk_size=chunk_size):
        ok = [v for v in chunk if v.ok]
        X, Xalt = windows(ok, fa, seq_len)
        k = 0
        for v in chunk:
            if v.ok:
                x, xa = X[k], Xalt[k]
                k += 1
            else:
                x, xa = zero, zero
            meta = {"variant_id": v.variant_id, "chrom": v.chrom, "pos": np.int64(_int64_pos(v.pos)), "ref": v.ref,
                    "alt": v.alt, "status": v.status}
            inputs = {"ref_seq": x, "alt_seq": xa, "flags": ";".join(v.flags),
                      "record_index": np.int64(v.record_index), "alt_index": np.int64(v.alt_index),
                      "vcf_line": np.int64(v.line), "offset": np.int64(v.offset)}
            inputs.update(meta)
            yield {"inputs": inputs, "metadata": meta}


def _int64_pos(pos: int | None) -> int:
    """POS for Kipoi's int64 arrays: -1 when it is not an integer or beyond int64 (status bad_pos)."""
    return pos if pos is not None and -(2**63) <= pos < 2**63 else -1


# -- the model side -----------------------------------------------------------------------------------------


def _as_str(a) -> list[str]:
    """A batch of strings as str (an HDF5 round trip gives bytes)."""
    return [s.decode() if isinstance(s, bytes) else str(s) for s in np.asarray(a).tolist()]


def variants_from_inputs(inputs: dict) -> list:
    """Rebuild the :class:`~kipoi_dfim.variants.Variant` of every sample of a collated Kipoi batch."""
    ints = {k: np.asarray(inputs[k]).astype(np.int64).tolist() for k in _INT_INPUTS}
    strs = {k: _as_str(inputs[k]) for k in _STR_INPUTS}
    out = []
    for i in range(len(ints["record_index"])):
        out.append(Variant(
            record_index=ints["record_index"][i], alt_index=ints["alt_index"][i], line=ints["vcf_line"][i],
            chrom=strs["chrom"][i], pos=ints["pos"][i], ref=strs["ref"][i], alt=strs["alt"][i],
            vcf_id=strs["variant_id"][i], status=strs["status"][i],
            flags=[f for f in strs["flags"][i].split(";") if f], offset=ints["offset"][i],
        ))
    return out


class DfimPredictor:
    """What ``DIR/model.py`` runs: load the wrapped model once, score each Kipoi batch with score_windows.

    Parameters
    ----------
    spec_dir
        The directory written by :func:`write_kipoi_spec` (holds ``dfim.yaml``).
    """

    def __init__(self, spec_dir: str | os.PathLike):
        self.spec_dir = Path(spec_dir).resolve()
        c = read_config(self.spec_dir)
        self.config = c
        model_path = Path(c["model"])
        if not model_path.is_absolute():
            model_path = self.spec_dir / model_path
        # the length given to kipoi-spec (--seq-len) for a model whose input length is not fixed
        given = {"seq_len": int(c["seq_len"])} if (c.get("settings") or {}).get("seq_len") is not None else {}
        self.model = load_model(str(model_path), output=c["output"], batch_size=int(c["batch_size"]), **given)
        if self.model.seq_len != int(c["seq_len"]):
            raise InputError(f"the wrapped model takes {self.model.seq_len} bp but {CONFIG_FILE} says "
                             f"{c['seq_len']}; re-run kipoi-dfim kipoi-spec", path=str(self.spec_dir))
        self.tidx = [int(t) for t in c["target_index"]]
        self.tnames = [str(t) for t in c["targets"]]
        saved = dict(c.get("settings") or {})
        saved.setdefault("window", int(c["window"]))
        saved.setdefault("method", str(c["method"]))
        saved.setdefault("n_refs", int(c["n_refs"]))
        saved.setdefault("seed", int(c["seed"]))
        saved.setdefault("batch_size", int(c["batch_size"]))
        saved["references"] = saved.get("references") or None
        self.settings = Settings(**saved)

    def predict_on_batch(self, inputs: dict) -> dict:
        """Scores of a collated batch: ``{id column: (N,), target: {score column: (N,)}}``."""
        variants = variants_from_inputs(inputs)
        ok = np.array([v.ok for v in variants], bool)
        X = np.asarray(inputs["ref_seq"], np.float32)[ok]
        Xalt = np.asarray(inputs["alt_seq"], np.float32)[ok]
        rows, _ = score_windows(self.model, variants, X, Xalt, self.tidx, self.tnames, self.settings)
        return predictions_from_rows(rows, variants, self.tnames)


def predictions_from_rows(rows: list[dict], variants: list, tnames: Sequence[str]) -> dict:
    """score_windows' rows (variant-major, then target) -> Kipoi's nested dict of 1-D arrays.

    Numbers are float64 with NaN for "not scored" (an integer column cannot hold NaN), ``max_fis_base`` is a
    string ('' when not scored).
    """
    T = len(tnames)
    n = len(variants)
    if len(rows) != n * T:
        raise AssertionError(f"score_windows returned {len(rows)} rows for {n} variants x {T} targets")
    out: dict[str, Any] = {
        "variant_id": np.array([v.variant_id for v in variants], dtype=str),
        "chrom": np.array([v.chrom for v in variants], dtype=str),
        "pos": np.array([_int64_pos(v.pos) for v in variants], dtype=np.int64),
        "ref": np.array([v.ref for v in variants], dtype=str),
        "alt": np.array([v.alt for v in variants], dtype=str),
        "status": np.array([v.status for v in variants], dtype=str),
    }
    for slot, t in enumerate(tnames):
        mine = rows[slot::T]
        cols = {}
        for c in SCORE_COLUMNS:
            vals = [r.get(c) for r in mine]
            if c == "max_fis_base":
                cols[c] = np.array(["" if v is None else str(v) for v in vals], dtype=str)
            else:
                cols[c] = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
        out[str(t)] = cols
    return out


def read_predictions(path: str | os.PathLike, spec_dir: str | os.PathLike | None = None):
    """Read the TSV of ``kipoi predict DIR ... -o out.tsv`` into score_variants' long table.

    Kipoi flattens the nested predictions into columns ``preds/<target>/<score>`` (sorted by name, with
    ``metadata/...`` columns too when ``-m`` was given); this returns one row per (variant, ALT, target) with
    the columns ``variant_id, chrom, pos, ref, alt, target, status`` and :data:`SCORE_COLUMNS`, in the row
    order of :func:`kipoi_dfim.score_variants`: VCF order, then the spec's target order when ``spec_dir``
    (the Kipoi directory) is given, else target names sorted (Kipoi's column sort loses the model order).

    Returns
    -------
    pandas.DataFrame
    """
    path = str(path)
    wide = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    ids = {c: f"preds/{c}" for c in ID_COLUMNS}
    missing = [v for v in ids.values() if v not in wide.columns]
    if missing:
        raise InputError(f"not a kipoi-dfim prediction TSV: no column(s) {', '.join(missing)}", path=path)
    targets: list[str] = []
    for col in wide.columns:
        if col.startswith("preds/") and col.endswith("/max_abs_fis"):
            targets.append(col[len("preds/"): -len("/max_abs_fis")])
    order = sorted(targets)
    if spec_dir is not None:
        spec_order = [str(t) for t in read_config(spec_dir)["targets"]]
        order = [t for t in spec_order if t in targets] + [t for t in order if t not in spec_order]
    parts = []
    for t in order:
        d = {c: wide[ids[c]] for c in ID_COLUMNS}
        d["target"] = t
        for c in SCORE_COLUMNS:
            d[c] = wide[f"preds/{t}/{c}"]
        part = pd.DataFrame(d)
        part["_row"] = np.arange(len(wide))
        part["_t"] = order.index(t)
        parts.append(part)
    if not parts:
        raise InputError("no target columns (preds/<target>/max_abs_fis) found", path=path)
    df = pd.concat(parts).sort_values(["_row", "_t"], kind="stable").drop(columns=["_row", "_t"])
    df = df.reset_index(drop=True)
    df["pos"] = df["pos"].astype(np.int64)
    for c in SCORE_COLUMNS:
        if c != "max_fis_base":
            df[c] = pd.to_numeric(df[c].replace("", np.nan), errors="raise").astype(np.float64)
    df = df[["variant_id", "chrom", "pos", "ref", "alt", "target", "status", *SCORE_COLUMNS]]
    return df


# -- writing the directory ----------------------------------------------------------------------------------


def _resolve_model(model, source: str | None) -> Path:
    """A local path to the model (a Kipoi model dir, or a .h5/.keras/.pt file)."""
    if not isinstance(model, (str, os.PathLike)):
        raise InputError(
            "kipoi-spec wraps a model on disk (a Kipoi model directory or a .h5/.keras/.pt file); "
            f"got a {type(model).__name__}. Save it first (e.g. model.save('model.keras'))."
        )
    p = Path(model)
    if p.exists():
        return p.resolve()
    if source not in (None, "dir"):
        import kipoi

        try:
            return Path(kipoi.get_source(source).get_model_dir(str(model))).resolve()
        except Exception as e:  # noqa: BLE001 - kipoi raises several kinds
            raise InputError(f"cannot find Kipoi model {model!r} in source {source!r}: {e}") from e
    raise InputError("model not found (give a Kipoi model directory or a .h5/.keras/.pt file)", path=str(model))


def _outside_refs(model_dir: Path) -> list[str]:
    """model.yaml args that point outside the model directory (a copy of the directory would break them)."""
    try:
        descr = yaml.safe_load((model_dir / "model.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    bad = []
    for k, v in (descr.get("args") or {}).items():
        if isinstance(v, str) and ("/" in v or "\\" in v or v.endswith((".py", ".h5", ".json", ".pt", ".pth"))):
            target = (model_dir / v).resolve()
            if model_dir.resolve() not in target.parents and target != model_dir.resolve():
                bad.append(f"{k}: {v}")
    return bad


def _place_model(src: Path, tmp_dir: Path, copy_model: bool) -> str:
    """Copy the model into the new directory (returns the relative path) or return its absolute path."""
    if not copy_model:
        return str(src)
    if src.is_dir():
        outside = _outside_refs(src)
        if outside:
            log.warning("%s/model.yaml refers to files outside its directory (%s): storing the absolute path "
                        "of the model instead of a copy; the Kipoi directory will not be relocatable",
                        src, "; ".join(outside))
            return str(src)
        shutil.copytree(src, tmp_dir / WRAPPED_DIR, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return WRAPPED_DIR
    (tmp_dir / WRAPPED_DIR).mkdir()
    shutil.copy2(src, tmp_dir / WRAPPED_DIR / src.name)
    return f"{WRAPPED_DIR}/{src.name}"


def _shipped_example(model_path: Path) -> tuple[Path, Path] | None:
    """For a shipped simulation model (``<repo>/model_specs/sim_*``), its ``<repo>/example_vcfs/sim`` files."""
    if model_path.parent.name != "model_specs" or not model_path.name.startswith("sim"):
        return None
    d = model_path.parent.parent / "example_vcfs" / "sim"
    vcfs = sorted(list(d.glob("*.vcf")) + list(d.glob("*.vcf.gz"))) if d.is_dir() else []
    fas = sorted(list(d.glob("*.fa")) + list(d.glob("*.fasta"))) if d.is_dir() else []
    if len(vcfs) >= 1 and len(fas) == 1:
        return vcfs[0], fas[0]
    return None


def subset_example(vcf: str | os.PathLike, fasta: str | os.PathLike, n_records: int, out_dir: Path) -> None:
    """Copy the header and first ``n_records`` records of a VCF, and the FASTA contigs they use, to out_dir."""
    header, body = [], []
    with open_text(str(vcf)) as fh:
        for line in fh:
            if line.startswith("#"):
                header.append(line)
            elif line.strip():
                body.append(line)
                if len(body) >= n_records:
                    break
    fa = Fasta(fasta)
    contigs = []
    for line in body:
        c = fa.contig(line.split("\t", 1)[0])
        if c is not None and c not in contigs:
            contigs.append(c)
    (out_dir / "example.vcf").write_text("".join(header + body))
    with open(out_dir / "example.fa", "w") as fh:
        for c in contigs:
            fh.write(f">{c}\n{_wrap(fa.fetch(c, 0, fa.lengths[c]))}")


def _wrap(seq: str, width: int = 60) -> str:
    return "".join(seq[i: i + width] + "\n" for i in range(0, len(seq), width))


def make_example(out_dir: Path, seq_len: int, seed: int = 0) -> None:
    """A tiny random VCF + FASTA at the model's input length, covering every kind of record.

    chr1 (1.5 L + 40 bp) carries: an SNV in the middle, a two-ALT SNV, an SNV 3 bp from the contig start
    (window shifted), an insertion (scored on aligned coordinates) and a REF mismatch (reported, not scored);
    chr2 (shorter than the model
    input) an SNV in a padded window; chrZ is not in the FASTA (unknown_contig). So ``kipoi test`` exercises
    every path through the dataloader and the model.
    """
    rng = np.random.default_rng(seed)
    n1 = seq_len + seq_len // 2 + 40
    n2 = max(seq_len // 2, 12)
    s1 = "".join(rng.choice(list("ACGT"), n1))
    s2 = "".join(rng.choice(list("ACGT"), n2))

    def other(b: str, k: int = 1) -> str:
        return "ACGT"[("ACGT".index(b) + k) % 4]

    mid = n1 // 2
    recs = [
        ("chr1", 4, "ex_start", s1[3], other(s1[3])),
        ("chr1", mid - 6, "ex_indel", s1[mid - 7], s1[mid - 7] + "A"),
        ("chr1", mid + 1, "ex_mid", s1[mid], other(s1[mid])),
        ("chr1", mid + 8, "ex_multi", s1[mid + 7], f"{other(s1[mid + 7], 1)},{other(s1[mid + 7], 2)}"),
        ("chr1", mid + 20, "ex_refmismatch", other(s1[mid + 19]), s1[mid + 19]),
        ("chr2", n2 // 2 + 1, "ex_padded", s2[n2 // 2], other(s2[n2 // 2], 3)),
        ("chrZ", 10, "ex_unknown_contig", "A", "G"),
    ]
    header = ["##fileformat=VCFv4.2", "##source=kipoi-dfim kipoi-spec (random example)",
              f"##contig=<ID=chr1,length={n1}>", f"##contig=<ID=chr2,length={n2}>", "##contig=<ID=chrZ,length=100>",
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    body = [f"{c}\t{p}\t{i}\t{r}\t{a}\t.\tPASS\t." for c, p, i, r, a in recs]
    (out_dir / "example.vcf").write_text("\n".join(header + body) + "\n")
    (out_dir / "example.fa").write_text(f">chr1\n{_wrap(s1)}>chr2\n{_wrap(s2)}")


def _input_schema(seq_len: int) -> dict:
    schema = {
        "ref_seq": {"shape": f"({seq_len}, 4)", "doc": "one-hot (ACGT) reference window; zeros if not scored"},
        "alt_seq": {"shape": f"({seq_len}, 4)", "doc": "one-hot (ACGT) alternate window; zeros if not scored"},
    }
    docs = {
        "record_index": "0-based VCF record index (seeds the shuffled references)",
        "alt_index": "0-based ALT index within the record",
        "vcf_line": "1-based line of the record in the VCF",
        "pos": "VCF POS (1-based)",
        "offset": "0-based position of the variant in the window",
        "variant_id": "VCF ID, or chrom:pos:ref:alt",
        "chrom": "VCF CHROM",
        "ref": "VCF REF",
        "alt": "this ALT allele",
        "status": "ok, or why the variant is not scored (ref_mismatch, unknown_contig, too_long, ...)",
        "flags": "';'-separated notes (window_shifted, padded, not_normalized, ...)",
    }
    for k in _INT_INPUTS + _STR_INPUTS:
        schema[k] = {"shape": "()", "doc": docs[k]}
    return schema


_SCORE_DOCS = {
    "max_abs_fis": "max |FIS| over the +-{w} bp target window (maxAbsFIS)",
    "max_fis_offset": "offset (bp, target - variant) of the max |FIS| base",
    "max_fis_base": "observed base at the max |FIS| position",
    "fis_at_max": "signed FIS at the max |FIS| position",
    "ref_pred": "model output for the reference window (ISM ref)",
    "alt_pred": "model output for the alternate window (ISM alt)",
    "diff": "ISM diff = alt - ref (kipoi-veff)",
    "logit_ref": "ISM logit(ref) (kipoi-veff)",
    "logit_alt": "ISM logit(alt) (kipoi-veff)",
    "logit": "ISM logit(alt) - logit(ref) (kipoi-veff)",
    "deepsea_effect": "ISM |logit| * |diff| (kipoi-veff)",
}


def _yaml_files(seq_len: int, tnames: list[str], window: int, method: str, model_label: str) -> tuple[dict, dict]:
    """model.yaml and dataloader.yaml contents."""
    info = {
        "authors": [{"name": "kipoi-dfim", "github": "kipoi"}],
        "doc": (f"DFIM (Deep Feature Interaction Maps, Greenside et al. 2018) variant scores of {model_label}, "
                f"{method} importance, +-{window} bp targets; plus kipoi-veff ISM scores. Written by "
                f"kipoi-dfim {__version__} kipoi-spec."),
        "version": __version__,
        "license": "MIT",
    }
    deps = {"pip": [f"kipoi-dfim=={__version__}"]}
    ids = {
        "variant_id": {"shape": "()", "doc": "VCF ID, or chrom:pos:ref:alt"},
        "chrom": {"shape": "()", "doc": "VCF CHROM"},
        "pos": {"shape": "()", "doc": "VCF POS"},
        "ref": {"shape": "()", "doc": "VCF REF"},
        "alt": {"shape": "()", "doc": "ALT allele"},
        "status": {"shape": "()", "doc": "ok, or why the variant was not scored (scores are then NaN)"},
    }
    targets = dict(ids)
    for t in tnames:
        targets[str(t)] = {c: {"shape": "()", "doc": f"target {t}: " + _SCORE_DOCS[c].format(w=window)}
                           for c in SCORE_COLUMNS}
    model_yaml = {
        "type": "custom",
        "args": {"file": "model.py", "object": "DfimModel"},
        "default_dataloader": ".",
        "info": dict(info),
        "dependencies": deps,
        "schema": {"inputs": _input_schema(seq_len), "targets": targets},
    }
    meta_docs = {"variant_id": "VCF ID, or chrom:pos:ref:alt", "chrom": "VCF CHROM", "pos": "VCF POS",
                 "ref": "VCF REF", "alt": "ALT allele", "status": "ok, or why the variant is not scored"}
    dl_yaml = {
        "type": "SampleIterator",
        "defined_as": "dataloader.py::VariantWindows",
        "args": {
            "vcf_file": {"doc": "VCF or bgzipped VCF of the variants (every record x ALT gives one row)",
                         "type": "str", "example": f"{EXAMPLE_DIR}/example.vcf"},
            "fasta_file": {"doc": "reference FASTA (the .fai is built if missing)", "type": "str",
                           "example": f"{EXAMPLE_DIR}/example.fa"},
        },
        "info": dict(info),
        "dependencies": deps,
        "output_schema": {
            "inputs": _input_schema(seq_len),
            "metadata": {k: {"type": "int" if k == "pos" else "str", "doc": d} for k, d in meta_docs.items()},
        },
    }
    return model_yaml, dl_yaml


def write_kipoi_spec(
    model: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    source: str | None = None,
    settings: Settings | None = None,
    copy_model: bool = True,
    example_vcf: str | os.PathLike | None = None,
    example_fasta: str | os.PathLike | None = None,
    n_example: int = 8,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Write a Kipoi model directory that scores DFIM and ISM for a VCF under ``kipoi predict``.

    Parameters
    ----------
    model
        The model to wrap: a Kipoi model directory or a .h5/.keras/.pt file (or a Kipoi model name with
        ``source``). It is loaded once here, so an unusable model fails now rather than under kipoi.
    out_dir
        Directory to create (written in a temporary sibling and renamed, so a failure leaves nothing).
    source
        Kipoi source of a model given by name.
    settings : Settings, optional
        Or its fields as keywords (``target``, ``window``, ``method``, ``n_refs``, ``references``, ``steps``,
        ``seed``, ``output``, ``batch_size``), as for :func:`kipoi_dfim.score_variants` (saved in ``dfim.yaml``;
        edit it to change them later). There is no null under ``kipoi predict``: it needs the whole file.
    copy_model
        Copy the model into ``out_dir/wrapped_model`` (default) rather than store its absolute path. A copy
        makes the directory self-contained: it can be moved, shared or uploaded to a Kipoi source, and it
        keeps scoring the model it was written for even if the original is retrained or deleted; the cost is
        disk space. A model directory whose model.yaml refers to files outside itself is never copied (the
        copy would break); its absolute path is stored instead, with a warning.
    example_vcf, example_fasta
        Example files for ``kipoi test``: the first ``n_example`` records and the FASTA contigs they use
        are copied. Default: ``example_vcfs/sim`` for a shipped simulation model, otherwise a generated
        random VCF + FASTA covering every kind of record (:func:`make_example`).
    overwrite
        Replace an existing non-empty ``out_dir``.

    Returns
    -------
    pathlib.Path
        The written directory.
    """
    st = make_settings(settings, **options).replace(null="none", null_shuffles=0, rc=False, all_alts=False)
    if (example_vcf is None) != (example_fasta is None):
        raise InputError("give both an example VCF and an example FASTA, or neither")
    out = Path(out_dir).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError("output directory exists and is not empty; choose a new one", path=str(out))
    src = _resolve_model(model, source)
    m = load_model(str(src), **load_options(st))
    if m.seq_len < 2 * st.window + 1:
        raise InputError(f"the model input ({m.seq_len} bp) is shorter than the +-{st.window} bp target window")
    tidx = list(range(len(m.targets))) if st.targets is None else [m.target_index(t) for t in st.targets]
    tnames = [str(m.targets[t]) for t in tidx]
    clash = sorted(set(tnames) & set(ID_COLUMNS))
    if clash or len(set(tnames)) != len(tnames):
        raise InputError(f"target names must be unique and differ from {', '.join(ID_COLUMNS)}: {tnames}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model_ref = _place_model(src, tmp, copy_model)
        for f in ("model.py", "dataloader.py", "README.md"):
            shutil.copy2(TEMPLATE_DIR / f, tmp / f)
        _write_example(tmp / EXAMPLE_DIR, src, example_vcf, example_fasta, n_example, m.seq_len)
        _write_config(tmp, model_ref, src, m.seq_len, tnames, tidx, st)
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_example(ex: Path, src: Path, example_vcf, example_fasta, n_example: int, seq_len: int) -> None:
    """The example VCF + FASTA of ``kipoi test``: the given files, the shipped example, or a generated one."""
    ex.mkdir()
    shipped = _shipped_example(src) if example_vcf is None else None
    if example_vcf is not None:
        subset_example(example_vcf, example_fasta, n_example, ex)
    elif shipped is not None:
        subset_example(shipped[0], shipped[1], n_example, ex)
    else:
        make_example(ex, seq_len, seed=0)


def _write_config(tmp: Path, model_ref: str, src: Path, seq_len: int, tnames: list[str], tidx: list[int],
                  st: Settings) -> None:
    """dfim.yaml (the settings), model.yaml and dataloader.yaml."""
    config = {
        "kipoi_dfim_version": __version__,
        "model": model_ref,
        "model_origin": str(src),
        "seq_len": int(seq_len),
        "targets": tnames,
        "target_index": [int(t) for t in tidx],
        "output": st.output,
        "window": int(st.window),
        "method": st.method,
        "n_refs": int(st.n_refs),
        "seed": int(st.seed),
        "batch_size": int(st.batch_size),
        "settings": {k: v for k, v in st.provenance().items() if k not in ("targets", "extra")},
    }
    (tmp / CONFIG_FILE).write_text(
        "# kipoi-dfim kipoi-spec settings, read by model.py and dataloader.py\n"
        + yaml.safe_dump(config, sort_keys=False))
    model_yaml, dl_yaml = _yaml_files(seq_len, tnames, st.window, st.method, src.name)
    (tmp / "model.yaml").write_text(yaml.safe_dump(model_yaml, sort_keys=False))
    (tmp / "dataloader.yaml").write_text(yaml.safe_dump(dl_yaml, sort_keys=False))


def run(args) -> None:
    """``kipoi-dfim kipoi-spec``."""
    out = write_kipoi_spec(args.model, args.out, source=args.source, settings=Settings.from_args(args),
                           example_vcf=args.example_vcf, example_fasta=args.example_fasta)
    print(f"wrote {out}\n  kipoi test {out} --source dir\n"
          f"  kipoi predict {out} --source dir --dataloader_args "
          "'{\"vcf_file\": \"in.vcf\", \"fasta_file\": \"ref.fa\"}' -o scores.tsv")


__all__ = ["write_kipoi_spec", "read_predictions", "iter_samples", "DfimPredictor", "make_example", "run"]
