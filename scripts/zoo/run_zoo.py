"""Run the kipoi-dfim zoo harness: build each zoo fixture, check it, print/write the coverage table.

    .venv/bin/python scripts/zoo/run_zoo.py --table docs/zoo.md            # every model (slow, minutes)
    .venv/bin/python scripts/zoo/run_zoo.py --models Basset DeepBind        # a subset
    KIPOI_MODELS_DIR=/path/to/kipoi/models .venv/bin/python scripts/zoo/run_zoo.py --zoo-files ...

Checks per model (each cell of the table): kipoi 0.8.6 loads the directory; ``kipoi_dfim.load_model`` finds the
zoo's sequence length, target names and alphabet; predictions equal kipoi's ``predict_on_batch`` (raw, and
logits against the logit of kipoi's probabilities) or, where kipoi cannot load the model on Keras 3, an
independent numpy forward pass; gradients equal central finite differences; DeepLIFT multipliers satisfy
summation-to-delta for every (sequence, reference) pair, or DeepLIFT raises an error naming the layer (then
grad_input / integrated_gradients / ism must still work); ``kipoi-dfim score-variants`` keeps every VCF record.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zoo_fixtures as zf  # noqa: E402

import kipoi_dfim  # noqa: E402
from kipoi_dfim.attribution import importance  # noqa: E402
from kipoi_dfim.backend.layouts import alphabet_index, to_model_layout  # noqa: E402
from kipoi_dfim.errors import UnsupportedModelError  # noqa: E402

#: name -> builder, in table order (flagships first).
BUILDERS = {
    "Basset": zf.build_basset,
    "DeepSEA/predict": zf.build_deepsea_predict,
    "DeepSEA/variantEffects": zf.build_deepsea_variant_effects,
    "DeepSEA/beluga": zf.build_beluga,
    **{k: zf.KERAS_BUILDERS[k] for k in ("scbasset", "DeepSTARR", "DeepBind")},
}
BUILDERS.update({k: v for k, v in zf.KERAS_BUILDERS.items() if k not in BUILDERS})

COLUMNS = ["model", "format", "kipoi loads", "load_model", "predictions", "gradient vs FD", "DeepLIFT",
           "other methods", "score-variants", "time"]


def _onehot(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    return np.eye(4, dtype=np.float32)[rng.integers(0, 4, (n, length))]


def _model_input(x: np.ndarray, layout: str, alphabet: str) -> np.ndarray:
    """What the zoo's dataloader feeds the model: one-hot in the model's alphabet and layout."""
    idx = alphabet_index(alphabet)
    xm = x[..., idx] if idx is not None else x
    return np.ascontiguousarray(to_model_layout(xm, layout))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def check_kipoi(fx: zf.Fixture) -> tuple[str, object | None]:
    """Try kipoi 0.8.6 itself on the directory (Keras 1/2 files usually fail on Keras 3: reported as is)."""
    import kipoi

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            km = kipoi.get_model(str(fx.model_dir), source="dir")
        return "yes", km
    except Exception as e:  # noqa: BLE001 - report whatever kipoi raises
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"no: {type(e).__name__}: {msg[:70]}", None


def check_load(fx: zf.Fixture, km=None):
    """seq_len, target names (also against kipoi's own reading of column_labels) and alphabet."""
    m = kipoi_dfim.load_model(str(fx.model_dir), **fx.load_kw)
    problems = []
    kl = getattr(getattr(getattr(km, "schema", None), "targets", None), "column_labels", None)
    if kl and list(kl) != list(m.targets):
        problems.append(f"targets differ from kipoi's {list(kl)[:2]}...")
    if m.seq_len != fx.seq_len:
        problems.append(f"seq_len {m.seq_len} != {fx.seq_len}")
    if list(m.targets) != list(fx.targets):
        problems.append(f"targets {m.targets[:2]}... != {fx.targets[:2]}...")
    if getattr(m, "alphabet", "ACGT") != fx.alphabet:
        problems.append(f"alphabet {getattr(m, 'alphabet', None)} != {fx.alphabet}")
    cell = f"L={m.seq_len}, {len(m.targets)} targets, {getattr(m, 'alphabet', '?')}, {m.layout}"
    if any("post-processing" in n for n in getattr(m, "notes", [])):
        cell += "; post-processing reported"
    return m, ("ok " + cell if not problems else "WRONG: " + "; ".join(problems))


def _compare(raw: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(raw - ref).max() / max(np.abs(ref).max(), 1e-6))


def check_predictions(fx: zf.Fixture, m, km, x: np.ndarray) -> str:
    """Raw outputs vs kipoi's predict_on_batch and/or the numpy oracle; logits vs logit(kipoi/numpy p)."""
    raw = m.predict(x, output="raw").astype(np.float64)
    xm = _model_input(x, m.layout, fx.alphabet)
    refs = {}
    if km is not None:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                refs["kipoi"] = np.asarray(km.predict_on_batch(xm), dtype=np.float64).reshape(len(x), -1)
        except Exception as e:  # noqa: BLE001 - kipoi loads but cannot predict: report, use numpy
            refs.pop("kipoi", None)
            print(f"kipoi predict_on_batch failed: {e}", file=sys.stderr)
    if fx.numpy_oracle is not None:
        refs["numpy"] = np.asarray(fx.numpy_oracle(xm), dtype=np.float64).reshape(len(x), -1)
    if not refs:
        return "no oracle"
    errs = {who: _compare(raw, ref) for who, ref in refs.items()}
    cell = ", ".join(f"{who}: raw rel err {e:.1e}" for who, e in errs.items())
    ok = max(errs.values()) < 1e-4
    ref = next(iter(refs.values()))
    if m.activation == "sigmoid" and fx.sigmoid_output:
        lg = m.predict(x).astype(np.float64)
        inside = (ref > 1e-4) & (ref < 1 - 1e-4)
        lerr = float(np.abs(lg - _logit(ref))[inside].max()) if inside.any() else 0.0
        cell += f", logit abs err {lerr:.1e}"
        ok = ok and lerr < 1e-2
    return ("ok " if ok else "MISMATCH ") + cell


def check_gradient(m, x: np.ndarray, rng: np.random.Generator, n_entries: int = 8, eps: float = 1e-3) -> str:
    """Gradient of the scored output vs central differences at random (position, base) entries.

    The error is relative to the largest gradient entry (float32 forward passes, eps = 1e-3).
    """
    g = m.gradient(x[:1], 0)[0].astype(np.float64)
    pos = rng.choice(x.shape[1], n_entries, replace=False)
    base = rng.integers(0, 4, n_entries)
    batch = []
    for p, b in zip(pos, base, strict=True):
        for s in (eps, -eps):
            xx = x[0].copy()
            xx[p, b] += s
            batch.append(xx)
    f = m.predict(np.stack(batch))[:, 0].astype(np.float64)
    fd = (f[0::2] - f[1::2]) / (2 * eps)
    mine = g[pos, base]
    err = float(np.abs(fd - mine).max() / max(np.abs(g).max(), 1e-4))
    return ("ok" if err < 5e-2 else "MISMATCH") + f" rel err {err:.1e} ({n_entries} entries)"


def check_deeplift(m, x: np.ndarray, rng: np.random.Generator, n_refs: int = 3) -> tuple[str, bool]:
    refs = np.stack([np.stack([s[rng.permutation(len(s))] for _ in range(n_refs)]) for s in x])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            mult = m.deeplift_multipliers(x, refs, 0)
    except UnsupportedModelError as e:
        layer = re.search(r"(layer|function|method|module)[^;:]*", str(e))
        return "raises: " + (layer.group(0)[:90] if layer else str(e)[:90]), False
    except RuntimeWarning as e:
        return f"FAIL (warning): {str(e)[:90]}", False
    fx_ = m.predict(x)[:, 0].astype(np.float64)
    fr = m.predict(refs.reshape(-1, *x.shape[1:]))[:, 0].reshape(len(x), n_refs).astype(np.float64)
    total = (mult.astype(np.float64) * (x[:, None] - refs)).sum(axis=(2, 3))
    delta = fx_[:, None] - fr
    err = float(np.abs(total - delta).max() / max(np.abs(np.stack([fx_[:, None] + 0 * fr, fr])).max(), 1e-2))
    return ("ok" if err < 1e-3 else "FAIL") + f" sum-to-delta rel err {err:.1e} ({delta.size} pairs)", True


def check_other_methods(m, x: np.ndarray) -> str:
    out = []
    for method, kw in (("grad_input", {}), ("integrated_gradients", {"steps": 8}), ("ism", {})):
        try:
            a = importance(m, x[:1], 0, method, **kw)
            out.append(f"{method} {'ok' if np.isfinite(a).all() else 'NaN'}")
        except Exception as e:  # noqa: BLE001 - report
            out.append(f"{method} FAIL {type(e).__name__}")
    return ", ".join(out)


def _write_genome(d: Path, seq_len: int, rng: np.random.Generator) -> tuple[Path, Path, int]:
    """A one-chromosome FASTA and a VCF with SNVs, a multi-allelic record, an indel and an edge variant."""
    length = seq_len * 3
    seq = "".join(rng.choice(list("ACGT"), length))
    fa = d / "genome.fa"
    fa.write_text(">chr1\n" + "\n".join(seq[i : i + 60] for i in range(0, length, 60)) + "\n")
    recs = []
    for pos in sorted(rng.choice(np.arange(seq_len, 2 * seq_len), 4, replace=False)):
        ref = seq[pos - 1]
        alt = "ACGT"[("ACGT".index(ref) + 1) % 4]
        recs.append((pos, ref, alt))
    pos = int(seq_len * 1.5)
    ref = seq[pos - 1]
    recs.append((pos, ref, ",".join(b for b in "ACGT" if b != ref)[:3]))
    recs.append((pos + 7, seq[pos + 6 : pos + 8], seq[pos + 6]))  # a deletion
    recs.append((3, seq[2], "ACGT"[("ACGT".index(seq[2]) + 1) % 4]))  # too close to the start
    recs.sort()
    vcf = d / "variants.vcf"
    lines = ["##fileformat=VCFv4.2", f"##contig=<ID=chr1,length={length}>",
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    lines += [f"chr1\t{p}\tv{i}\t{r}\t{a}\t.\tPASS\t." for i, (p, r, a) in enumerate(recs)]
    vcf.write_text("\n".join(lines) + "\n")
    return fa, vcf, len(recs)


def check_cli(fx: zf.Fixture, m, rng: np.random.Generator, method: str) -> str:
    from kipoi_dfim.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        fa, vcf, n = _write_genome(d, m.seq_len, rng)
        out = d / "out.vcf"
        args = ["score-variants", str(fx.model_dir), "--vcf", str(vcf), "--fasta", str(fa), "-o", str(out),
                "--method", method,
                "--target", "0", "--window", "5", "--null-shuffles", "2", "--n-refs", "2", "--quiet",
                "--batch-size", "8", "--tsv", str(d / "out.tsv")]
        if fx.load_kw.get("seq_len") is not None:  # a variable-length model: the length the API gets too
            args += ["--seq-len", str(fx.load_kw["seq_len"])]
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                rc = main(args)
        except SystemExit as e:
            rc = e.code
        if rc not in (0, None) or not out.exists():
            return f"FAIL rc={rc}: {buf.getvalue().strip().splitlines()[-1:]}"
        kept = sum(1 for ln in out.read_text().splitlines() if ln and not ln.startswith("#"))
        return ("ok" if kept == n else "LOST RECORDS") + f" {kept}/{n} records ({method})"


def run_one(name: str, root: Path, seed: int = 0, zoo: Path | None = None) -> dict[str, str]:
    row = {c: "" for c in COLUMNS}
    row["model"] = name if zoo is None else f"{name} (zoo files)"
    t0 = time.time()
    rng = np.random.default_rng(seed)
    try:
        fx = zf.build_from_zoo(zoo, name, root, seed) if zoo is not None else BUILDERS[name](root, seed)
        row["format"] = fx.notes[0] if fx.notes else fx.framework
        row["kipoi loads"], km = check_kipoi(fx)
        m, row["load_model"] = check_load(fx, km)
        x = _onehot(rng, 3, m.seq_len)
        row["predictions"] = check_predictions(fx, m, km, x)
        del km
        row["gradient vs FD"] = check_gradient(m, x, rng)
        row["DeepLIFT"], dl_ok = check_deeplift(m, x[:2], rng)
        row["other methods"] = check_other_methods(m, x)
        row["score-variants"] = check_cli(fx, m, rng, "deeplift" if dl_ok else "grad_input")
    except Exception as e:  # noqa: BLE001 - one model failing must not stop the table
        row["load_model"] = row["load_model"] or f"FAIL {type(e).__name__}: {str(e)[:120]}"
        traceback.print_exc()
    row["time"] = f"{time.time() - t0:.0f} s"
    return row


def markdown(rows: list[dict[str, str]]) -> str:
    esc = [[str(r[c]).replace("|", "/").replace("\n", " ") for c in COLUMNS] for r in rows]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(lines) + "\n"


def write_table(path: Path, table: str, marker: str = "zoo-table") -> None:
    """Replace the table between the markers of docs/zoo.md (the rest of the page is hand-written)."""
    BEGIN, END = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"  # noqa: N806
    text = path.read_text() if path.exists() else f"# Zoo coverage\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=None, help=f"subset of: {', '.join(BUILDERS)}")
    ap.add_argument("--table", type=Path, default=None, help="markdown file whose zoo table is replaced")
    ap.add_argument("--workdir", type=Path, default=None, help="where fixtures are built (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--zoo-files", action="store_true",
                    help="run on the zoo's own files of the PyTorch entries from a kipoi/models checkout named by "
                         "the KIPOI_MODELS_DIR environment variable (weights random, made local)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    zoo = None
    known = BUILDERS
    if args.zoo_files:
        if not os.environ.get("KIPOI_MODELS_DIR"):
            ap.error("--zoo-files needs KIPOI_MODELS_DIR (a kipoi/models checkout)")
        zoo, known = Path(os.environ["KIPOI_MODELS_DIR"]), zf.ZOO_TORCH
    names = args.models or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown models {unknown}; known: {', '.join(known)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        for name in names:
            print(f"== {name}", file=sys.stderr, flush=True)
            rows.append(run_one(name, root, args.seed, zoo))
            print(markdown(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    table = markdown(rows)
    print(table)
    if args.table:
        write_table(args.table, table, "zoo-files-table" if args.zoo_files else "zoo-table")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
