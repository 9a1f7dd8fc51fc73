"""Bad input, faults and interrupts through the real ``kipoi-dfim score-variants`` (issue 11).

Every case runs the real command on real files (the simulated PyTorch Kipoi model ``model_specs/sim_torch``,
the simulated VCF/FASTA of ``example_vcfs/sim``) and checks what a user sees: the exit code and ONE line
naming the file (and line) with no traceback -- or, for a record that cannot be scored, its status in the
outputs with every other record still paired with its own scores. Runs that may crash or are signalled run in
a subprocess; the rest call ``kipoi_dfim.cli.main`` in-process (fast).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pysam
import pytest

from kipoi_dfim.cli import main
from kipoi_dfim.output.tsv import read_tsv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "model_specs", "sim_torch")
KERAS_MODEL = os.path.join(ROOT, "model_specs", "sim_keras")
SIM_VCF = os.path.join(ROOT, "example_vcfs", "sim", "sim_variants.vcf")
SIM_FASTA = os.path.join(ROOT, "example_vcfs", "sim", "sim_contigs.fa")
FAST = ["--method", "grad_input", "--window", "5"]

with open(SIM_VCF, "rb") as _fh:
    _LINES = _fh.read().split(b"\n")
HEADER = b"".join(ln + b"\n" for ln in _LINES if ln.startswith(b"#"))
RECORDS = [ln + b"\n" for ln in _LINES if ln and not ln.startswith(b"#")]
N_HEADER = HEADER.count(b"\n")  # records start at line N_HEADER + 1


# ------------------------------------------------------------------------------------------------ helpers
def rec(i: int, **fields: bytes) -> bytes:
    """Record ``i`` of the example VCF with some fixed fields replaced."""
    cols = RECORDS[i].rstrip(b"\n").split(b"\t")
    for k, v in fields.items():
        cols[("chrom", "pos", "id", "ref", "alt", "qual", "filter", "info").index(k)] = v
    return b"\t".join(cols) + b"\n"


@pytest.fixture
def fasta(tmp_path):
    """A private copy of the example FASTA and its index (nothing may write into the repository)."""
    d = tmp_path / "ref"
    d.mkdir()
    for ext in ("", ".fai"):
        shutil.copy(SIM_FASTA + ext, d / ("sim.fa" + ext))
    return str(d / "sim.fa")


def write(tmp_path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def cli(capsys, *args: str) -> tuple[int, str]:
    """Run the real CLI in-process: (exit code, stderr). A traceback fails the test by itself."""
    capsys.readouterr()
    try:
        rc = main(["score-variants", *args])
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    return rc, capsys.readouterr().err


def score(capsys, tmp_path, vcf: str, fasta: str, *extra: str, model: str = MODEL, quiet: bool = True
          ) -> tuple[int, str]:
    out, tsv = str(tmp_path / "out.vcf.gz"), str(tmp_path / "out.tsv")
    return cli(capsys, model, "--vcf", vcf, "--fasta", fasta, "-o", out, "--tsv", tsv, *FAST,
               *(["--quiet"] if quiet else []), *extra)


def assert_one_line_error(rc: int, err: str, *names: str, code: int = 2) -> str:
    """Exit ``code``; stderr holds exactly one error line, naming each of ``names``; no traceback."""
    assert rc == code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def table(tmp_path) -> object:
    return read_tsv(tmp_path / "out.tsv")


def vcf_body(tmp_path) -> list[bytes]:
    with gzip.open(tmp_path / "out.vcf.gz", "rb") as fh:
        return [ln for ln in fh.read().split(b"\n") if ln and not ln.startswith(b"#")]


def statuses(tmp_path) -> list[str]:
    return list(table(tmp_path)["status"])


@contextlib.contextmanager
def read_only(folder: str):
    """A folder nothing can be created in, also for root (chattr +i), restored afterwards."""
    root = os.geteuid() == 0
    os.chmod(folder, 0o555)
    if root and subprocess.run(["chattr", "+i", folder], capture_output=True).returncode != 0:
        os.chmod(folder, 0o755)
        pytest.skip("running as root without chattr: cannot make a read-only folder")
    try:
        yield
    finally:
        if root:
            subprocess.run(["chattr", "-i", folder], check=True)
        os.chmod(folder, 0o755)


# ------------------------------------------------------------------------------------------------ VCF lines
def test_lone_carriage_return_keeps_records_paired(capsys, tmp_path, fasta):
    """A lone \\r inside INFO is part of the line (htslib splits on \\n only): every row keeps its own record."""
    data = HEADER + RECORDS[0] + rec(1, info=b"CLASS=x\rY=1") + b"".join(RECORDS[2:8])
    rc, err = score(capsys, tmp_path, write(tmp_path, "cr.vcf", data), fasta)
    assert rc == 0, err
    df = table(tmp_path)
    want = [r.split(b"\t") for r in RECORDS[:8]]
    assert list(df["variant_id"]) == [c[2].decode() for c in want]
    assert list(df["pos"].astype(int)) == [int(c[1]) for c in want]
    assert list(df["vcf_line"].astype(int)) == list(range(N_HEADER + 1, N_HEADER + 9))
    body = vcf_body(tmp_path)
    assert [ln.split(b"\t")[2] for ln in body] == [c[2] for c in want]
    assert b"CLASS=x\rY=1" in body[1]
    assert all(b"DFIM_STATUS=ok" in ln and b"DFIM_interaction_MAXABS=" in ln for ln in body)  # none left without
    # the scores are those of the same records scored without the \r
    rc, _ = score(capsys, tmp_path, write(tmp_path, "plain.vcf", HEADER + b"".join(RECORDS[:8])), fasta)
    assert rc == 0
    np.testing.assert_array_equal(table(tmp_path)["max_abs_fis"], df["max_abs_fis"])


def test_crlf_file_scores_like_lf(capsys, tmp_path, fasta):
    rc, _ = score(capsys, tmp_path, write(tmp_path, "lf.vcf", HEADER + b"".join(RECORDS[:6])), fasta)
    lf = (tmp_path / "out.tsv").read_bytes()
    crlf = (HEADER + b"".join(RECORDS[:6])).replace(b"\n", b"\r\n")
    rc2, err = score(capsys, tmp_path, write(tmp_path, "crlf.vcf", crlf), fasta)
    assert rc == rc2 == 0, err
    assert (tmp_path / "out.tsv").read_bytes() == lf
    assert not any(b"\r" in ln for ln in vcf_body(tmp_path))


@pytest.mark.parametrize("pos, status, shown", [
    (str(2**32 + 194), "outside_contig", 2**32 + 194),   # no 32-bit wrap to position 194
    (str(2**31 + 194), "outside_contig", 2**31 + 194),
    (str(2**63 + 5), "bad_pos", 2**63 + 5),              # beyond 64 bits: printed as written
    ("-5", "bad_pos", -5),
    ("0", "bad_pos", 0),
])
def test_huge_and_negative_positions(capsys, tmp_path, fasta, pos, status, shown):
    data = HEADER + RECORDS[0] + rec(1, pos=pos.encode()) + RECORDS[2]
    rc, err = score(capsys, tmp_path, write(tmp_path, "pos.vcf", data), fasta)
    assert rc == 0, err
    assert statuses(tmp_path) == ["ok", status, "ok"]
    with open(tmp_path / "out.tsv") as fh:
        assert fh.read().splitlines()[2].split("\t")[2] == str(shown)  # exact text, no float rounding
    assert len(vcf_body(tmp_path)) == 3


def test_pos_not_a_number_is_bad_pos(capsys, tmp_path, fasta):
    data = HEADER + rec(0, pos=b"abc") + rec(1, pos=b"1e3") + RECORDS[2]
    rc, err = score(capsys, tmp_path, write(tmp_path, "pos.vcf", data), fasta)
    assert rc == 0, err
    df = table(tmp_path)
    assert list(df["status"]) == ["bad_pos", "bad_pos", "ok"]
    assert np.isnan(df["pos"].iloc[0]) and np.isnan(df["pos"].iloc[1])


@pytest.mark.parametrize("line, what", [
    (b"\n", "blank line"), (b"# a comment\n", "'#' line"), (b"##INFO=<ID=X,Number=1,Type=String>\n", "'#' line"),
    (None, "'#' line"),  # a second #CHROM line
])
def test_non_record_lines_among_records_are_skipped_with_their_line(capsys, caplog, tmp_path, fasta, line, what):
    caplog.set_level(logging.WARNING)
    line = HEADER.split(b"\n")[-2] + b"\n" if line is None else line
    vcf = write(tmp_path, "x.vcf", HEADER + RECORDS[0] + line + RECORDS[1])
    rc, err = score(capsys, tmp_path, vcf, fasta, quiet=False)
    assert rc == 0, err
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{vcf}, line {N_HEADER + 2}: {what}" in m for m in msgs), msgs
    assert statuses(tmp_path) == ["ok", "ok"]
    assert len(vcf_body(tmp_path)) == 2


def test_space_separated_line_names_file_and_line(capsys, tmp_path, fasta):
    vcf = write(tmp_path, "s.vcf", HEADER + RECORDS[0] + RECORDS[1].replace(b"\t", b" "))
    line = assert_one_line_error(*score(capsys, tmp_path, vcf, fasta), vcf, f"line {N_HEADER + 2}")
    assert "spaces" in line
    assert not (tmp_path / "out.tsv").exists()


def test_seven_columns_names_file_and_line(capsys, tmp_path, fasta):
    short = b"\t".join(RECORDS[1].split(b"\t")[:7]) + b"\n"
    vcf = write(tmp_path, "c.vcf", HEADER + RECORDS[0] + short)
    assert "has 7" in assert_one_line_error(*score(capsys, tmp_path, vcf, fasta), vcf, f"line {N_HEADER + 2}")


def test_undecodable_bytes_name_the_line(capsys, tmp_path, fasta):
    vcf = write(tmp_path, "u.vcf", HEADER + RECORDS[0] + rec(1, info=b"X=\xff\xfe"))
    assert_one_line_error(*score(capsys, tmp_path, vcf, fasta), vcf, f"line {N_HEADER + 2}", "UTF-8")


def test_undecodable_bytes_in_header_name_the_line(capsys, tmp_path, fasta):
    vcf = write(tmp_path, "u.vcf", HEADER.replace(b"##reference", b"##r\xe9f") + RECORDS[0])
    assert_one_line_error(*score(capsys, tmp_path, vcf, fasta), vcf, "line 3")


@pytest.mark.parametrize("data, where", [
    (b"", "no '#CHROM'"), (b"chr1\t5\t.\tA\tC\t.\t.\t.\n", "line 1"),
    (b"##fileformat=VCFv4.2\n" + RECORDS[0], "line 2"),
    (b"##fileformat=VCFv4.2\n#CHROM POS ID REF ALT QUAL FILTER INFO\n", "line 2"),
])
def test_broken_header(capsys, tmp_path, fasta, data, where):
    vcf = write(tmp_path, "h.vcf", data)
    assert_one_line_error(*score(capsys, tmp_path, vcf, fasta), vcf, where)


def test_vcf_missing_or_directory(capsys, tmp_path, fasta):
    missing = str(tmp_path / "nope.vcf")
    assert_one_line_error(*score(capsys, tmp_path, missing, fasta), missing, "not found")
    assert_one_line_error(*score(capsys, tmp_path, str(tmp_path), fasta), str(tmp_path), "directory")


def test_header_only_vcf_gives_empty_outputs(capsys, tmp_path, fasta):
    rc, err = score(capsys, tmp_path, write(tmp_path, "h.vcf", HEADER), fasta)
    assert rc == 0, err
    assert len(table(tmp_path)) == 0 and vcf_body(tmp_path) == []


@pytest.mark.parametrize("compress", ["bgzip", "gzip"])
def test_compressed_input_scores_like_plain(capsys, tmp_path, fasta, compress):
    plain = write(tmp_path, "p.vcf", HEADER + b"".join(RECORDS[:6]))
    rc, _ = score(capsys, tmp_path, plain, fasta)
    want = (tmp_path / "out.tsv").read_bytes()
    gz = str(tmp_path / "p.vcf.gz")
    if compress == "bgzip":
        pysam.tabix_compress(plain, gz, force=True)
    else:
        with open(plain, "rb") as a, gzip.open(gz, "wb") as b:
            b.write(a.read())
    rc2, err = score(capsys, tmp_path, gz, fasta)
    assert rc == rc2 == 0, err
    assert (tmp_path / "out.tsv").read_bytes() == want


def test_truncated_gzip_names_file(capsys, tmp_path, fasta):
    vcf = write(tmp_path, "t.vcf.gz", gzip.compress(HEADER + b"".join(RECORDS))[:-40])
    assert_one_line_error(*score(capsys, tmp_path, vcf, fasta), vcf, "line")


def test_allele_statuses_multi_alt_and_vcf_agree(capsys, tmp_path, fasta):
    """No ALT, '*', symbolic, breakend, multi-ALT (one ALT the same as REF), unknown contig, an indel whose REF
    is not the FASTA's, REF mismatch: one status per ALT."""
    data = HEADER + b"".join([
        rec(0, alt=b"."), rec(1, alt=b"*"), rec(2, alt=b"<DEL>"), rec(3, alt=b"A[sim01:5["),
        rec(3, alt=b"A,C,*,<X>"), rec(4, chrom=b"nope"), rec(5, ref=b"TC", alt=b"T"), rec(6, ref=b"A", alt=b"C"),
    ])
    rc, err = score(capsys, tmp_path, write(tmp_path, "a.vcf", data), fasta)
    assert rc == 0, err
    ref6 = RECORDS[6].split(b"\t")[3]
    assert ref6 != b"A"  # the last record's REF really mismatches
    assert RECORDS[3].split(b"\t")[3] == b"C"  # so the multi-ALT record's "C" is REF again
    want = ["missing_alt", "star_allele", "symbolic_allele", "symbolic_allele", "ok", "alt_equals_ref", "star_allele",
            "symbolic_allele", "unknown_contig", "ref_mismatch", "ref_mismatch"]
    assert statuses(tmp_path) == want
    body = vcf_body(tmp_path)
    assert len(body) == 8
    assert b"DFIM_STATUS=ok,alt_equals_ref,star_allele,symbolic_allele" in body[4]


# ------------------------------------------------------------------------------------------------ FASTA
def test_fasta_missing_or_directory(capsys, tmp_path):
    vcf = write(tmp_path, "v.vcf", HEADER + RECORDS[0])
    missing = str(tmp_path / "no.fa")
    assert_one_line_error(*score(capsys, tmp_path, vcf, missing), missing, "not found")
    assert_one_line_error(*score(capsys, tmp_path, vcf, str(tmp_path)), str(tmp_path), "directory")


@pytest.mark.parametrize("data", [b"", b"hello\x00\xff\xfe", gzip.compress(b">a\nACGT\n")],
                         ids=["empty", "binary", "gzip-not-bgzip"])
def test_unreadable_fasta(capsys, tmp_path, data):
    vcf = write(tmp_path, "v.vcf", HEADER + RECORDS[0])
    fa = write(tmp_path, "bad.fa", data)
    assert_one_line_error(*score(capsys, tmp_path, vcf, fa), fa, "FASTA")


def _stale(fasta: str) -> bytes:
    """Edit the FASTA after indexing (a contig added in front): every offset in the .fai is now wrong."""
    with open(fasta, "rb") as fh:
        data = fh.read()
    with open(fasta, "wb") as fh:
        fh.write(b">sim00\n" + b"ACGTTGCA" * 40 + b"\n" + data)
    with open(fasta + ".fai", "rb") as fh:
        return fh.read()


def test_stale_fai_is_detected_and_not_used(capsys, caplog, tmp_path, fasta):
    vcf = write(tmp_path, "v.vcf", HEADER + b"".join(RECORDS[:10]))
    rc, _ = score(capsys, tmp_path, vcf, fasta)
    want = (tmp_path / "out.tsv").read_bytes()
    old_fai = _stale(fasta)
    caplog.set_level(logging.WARNING)  # after the --quiet run above
    rc2, err = score(capsys, tmp_path, vcf, fasta, quiet=False)
    assert rc == rc2 == 0, err
    assert (tmp_path / "out.tsv").read_bytes() == want  # the same windows as with a correct index
    assert any(fasta + ".fai" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    with open(fasta + ".fai", "rb") as fh:
        assert fh.read() == old_fai  # the user's file is reported, not rewritten behind their back


def test_stale_fai_in_read_only_folder(capsys, tmp_path, fasta):
    vcf = write(tmp_path, "v.vcf", HEADER + b"".join(RECORDS[:4]))
    _stale(fasta)
    folder = os.path.dirname(fasta)
    before = sorted(os.listdir(folder))
    with read_only(folder):
        rc, err = score(capsys, tmp_path, vcf, fasta)
    assert rc == 0, err
    assert statuses(tmp_path) == ["ok"] * 4
    assert sorted(os.listdir(folder)) == before


def test_missing_fai_in_read_only_folder_is_built_elsewhere(capsys, tmp_path, fasta, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    os.remove(fasta + ".fai")
    vcf = write(tmp_path, "v.vcf", HEADER + b"".join(RECORDS[:4]))
    with read_only(os.path.dirname(fasta)):
        rc, err = score(capsys, tmp_path, vcf, fasta)
    assert rc == 0, err
    assert statuses(tmp_path) == ["ok"] * 4
    assert os.listdir(os.path.dirname(fasta)) == ["sim.fa"]
    assert os.listdir(tmp_path / "tmp") == []  # the temporary index is gone too


def test_missing_fai_is_built_beside_a_writable_fasta(capsys, tmp_path, fasta):
    os.remove(fasta + ".fai")
    rc, err = score(capsys, tmp_path, write(tmp_path, "v.vcf", HEADER + RECORDS[0]), fasta)
    assert rc == 0, err
    with open(fasta + ".fai") as a, open(SIM_FASTA + ".fai") as b:
        assert a.read() == b.read()
    assert sorted(os.listdir(os.path.dirname(fasta))) == ["sim.fa", "sim.fa.fai"]  # no temp left


def test_corrupt_fai_is_not_trusted(capsys, tmp_path, fasta):
    with open(fasta + ".fai", "w") as fh:
        fh.write("garbage\tline\n")
    rc, err = score(capsys, tmp_path, write(tmp_path, "v.vcf", HEADER + b"".join(RECORDS[:3])), fasta)
    assert rc == 0, err
    assert statuses(tmp_path) == ["ok"] * 3


# ------------------------------------------------------------------------------------------------ model
def _model(tmp_path, src: str = MODEL) -> str:
    d = str(tmp_path / "model")
    shutil.copytree(src, d)
    return d


def _truncate(path: str) -> None:
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])


@pytest.mark.parametrize("damage, file", [
    (os.remove, "model.pt"),
    (lambda p: open(p, "wb").write(b"not a torch file" * 8), "model.pt"),
    (_truncate, "model.pt"),
    (lambda p: __import__("torch").save({"w": __import__("torch").zeros(2)}, p), "model.pt"),
    (os.remove, "model.py"),
    (lambda p: open(p, "a").write("\nthis is not python(\n"), "model.py"),
    (lambda p: open(p, "a").write("\n  : : [\n"), "model.yaml"),
], ids=["weights-missing", "weights-corrupt", "weights-truncated", "weights-wrong-keys", "module-missing",
        "module-broken", "yaml-broken"])
def test_damaged_torch_model(capsys, tmp_path, fasta, damage, file):
    d = _model(tmp_path)
    damage(os.path.join(d, file))
    vcf = write(tmp_path, "v.vcf", HEADER + RECORDS[0])
    assert_one_line_error(*score(capsys, tmp_path, vcf, fasta, model=d), os.path.join(d, file))
    assert not (tmp_path / "out.tsv").exists()


def test_corrupt_keras_model(capsys, tmp_path, fasta):
    d = _model(tmp_path, KERAS_MODEL)
    with open(os.path.join(d, "model.keras"), "wb") as fh:
        fh.write(b"PK\x03\x04 not a zip")
    vcf = write(tmp_path, "v.vcf", HEADER + RECORDS[0])
    assert_one_line_error(*score(capsys, tmp_path, vcf, fasta, model=d), os.path.join(d, "model.keras"))


def test_model_dir_missing(capsys, tmp_path, fasta):
    d = str(tmp_path / "no_model")
    assert_one_line_error(*score(capsys, tmp_path, write(tmp_path, "v.vcf", HEADER), fasta, model=d), d)


# ------------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("opt, value", [
    ("--batch-size", "0"), ("--batch-size", "-1"), ("--n-refs", "0"), ("--chunk-size", "0"),
    ("--null-shuffles", "-1"), ("--window", "0"), ("--steps", "0"), ("--gc", "2"), ("--gc", "nan"),
    ("--seed", "-1"), ("--null-size", "0"), ("--references", "no_such_refs.fa"), ("--window", "150"),
    ("--target", "no_such_target"),
])
def test_bad_option_named(capsys, tmp_path, fasta, opt, value):
    vcf = write(tmp_path, "v.vcf", HEADER + RECORDS[0])
    rc, err = score(capsys, tmp_path, vcf, fasta, opt, value)
    line = assert_one_line_error(rc, err, value if opt in ("--target", "--references") else opt)
    assert opt in line or "window" in line or "target" in line
    assert not os.path.exists(tmp_path / "out.tsv")


@pytest.mark.parametrize("opt", ["--batch-size", "--window", "--gc"])
def test_option_not_a_number(capsys, tmp_path, fasta, opt):
    rc, err = score(capsys, tmp_path, write(tmp_path, "v.vcf", HEADER + RECORDS[0]), fasta, opt, "x")
    assert rc == 2 and "Traceback" not in err
    assert opt in err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------------ outputs
def _inputs(tmp_path, fasta):
    vcf = write(tmp_path, "in.vcf", HEADER + b"".join(RECORDS[:3]))
    return vcf, {p: open(p, "rb").read() for p in (vcf, fasta, fasta + ".fai")}


@pytest.mark.parametrize("case", ["o=vcf", "tsv=vcf", "maps=vcf", "o=tsv", "maps=tsv", "maps=o", "tsv=o.tbi",
                                  "tsv=fasta.fai", "o=fasta", "maps=fasta.fai", "o=symlink-to-vcf",
                                  "tsv=model-weights"])
def test_output_equal_to_input_refused(capsys, tmp_path, fasta, case):
    vcf, before = _inputs(tmp_path, fasta)
    model = _model(tmp_path)
    before[os.path.join(model, "model.pt")] = open(os.path.join(model, "model.pt"), "rb").read()
    o, tsv, maps = str(tmp_path / "o.vcf.gz"), str(tmp_path / "o.tsv"), None
    if case == "o=symlink-to-vcf":
        os.symlink(vcf, tmp_path / "link.vcf")
    target = {"vcf": vcf, "tsv": tsv, "o": o, "o.tbi": o + ".tbi", "fasta.fai": fasta + ".fai", "fasta": fasta,
              "symlink-to-vcf": str(tmp_path / "link.vcf"), "model-weights": os.path.join(model, "model.pt"),
              }[case.split("=")[1]]
    which = case.split("=")[0]
    o, tsv, maps = (target if which == "o" else o), (target if which == "tsv" else tsv), \
        (target if which == "maps" else maps)
    args = [model, "--vcf", vcf, "--fasta", fasta, "-o", o, "--tsv", tsv, *FAST, "--quiet"]
    rc, err = cli(capsys, *args, *(["--maps", maps] if maps else []))
    assert_one_line_error(rc, err, target)
    assert {p: open(p, "rb").read() for p in before} == before  # no input touched


def test_output_folder_not_writable(capsys, tmp_path, fasta):
    vcf, _ = _inputs(tmp_path, fasta)
    ro = tmp_path / "ro"
    ro.mkdir()
    with read_only(str(ro)):
        rc, err = cli(capsys, MODEL, "--vcf", vcf, "--fasta", fasta, "-o", str(ro / "o.vcf"), *FAST, "--quiet")
    assert_one_line_error(rc, err, str(ro / "o.vcf"), "folder")


@pytest.mark.parametrize("where", ["parent-is-file", "is-directory"])
def test_output_path_impossible(capsys, tmp_path, fasta, where):
    vcf, _ = _inputs(tmp_path, fasta)
    out = f"{vcf}/o.vcf" if where == "parent-is-file" else str(tmp_path)
    rc, err = cli(capsys, MODEL, "--vcf", vcf, "--fasta", fasta, "-o", out, *FAST, "--quiet")
    assert_one_line_error(rc, err, out)


# ------------------------------------------------------------------------------------------------ interrupts
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupt_leaves_no_temps_and_old_outputs(tmp_path, fasta, sig):
    vcf = write(tmp_path, "big.vcf", HEADER + b"".join(RECORDS) * 30)
    out = tmp_path / "out"
    tmpdir = tmp_path / "tmp"
    out.mkdir()
    tmpdir.mkdir()
    old = {n: f"earlier {n}\n".encode() for n in ("o.vcf.gz", "o.vcf.gz.tbi", "o.tsv", "o.h5")}
    for n, data in old.items():
        (out / n).write_bytes(data)
    env = dict(os.environ, PYTHONPATH=ROOT, TMPDIR=str(tmpdir))
    p = subprocess.Popen([sys.executable, "-m", "kipoi_dfim.cli", "score-variants", MODEL, "--vcf", vcf, "--fasta",
                          fasta, "-o", str(out / "o.vcf.gz"), "--tsv", str(out / "o.tsv"), "--maps",
                          str(out / "o.h5"), "--chunk-size", "4", "--n-refs", "4"],
                         env=env, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while time.time() - t0 < 120 and not any(n.endswith(".spool") for n in os.listdir(out)):
        time.sleep(0.1)
    assert p.poll() is None, "the run ended before it could be interrupted"
    time.sleep(1.0)  # mid-run: chunks are being scored and spooled
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err and f"signal {int(sig)}" in err
    assert sorted(os.listdir(out)) == sorted(old)
    assert {n: (out / n).read_bytes() for n in old} == old
    assert os.listdir(tmpdir) == []


def test_fault_while_finishing_keeps_every_earlier_output(capsys, tmp_path, fasta, monkeypatch):
    """A fault after the TSV is finished but before the VCF is (disk full in bgzip): no output changes at all.

    Outputs appear together (output.base.commit_together); one-by-one renames would leave a new TSV beside
    the old VCF, a set of outputs from two different runs.
    """
    vcf, _ = _inputs(tmp_path, fasta)
    out = tmp_path / "out"
    out.mkdir()
    old = {n: f"earlier {n}\n".encode() for n in ("o.vcf.gz", "o.vcf.gz.tbi", "o.tsv")}
    for n, data in old.items():
        (out / n).write_bytes(data)

    def disk_full(*_a, **_k):
        raise OSError(28, "No space left on device", str(out / "o.vcf.gz"))

    monkeypatch.setattr(pysam, "tabix_compress", disk_full)
    rc, err = cli(capsys, MODEL, "--vcf", vcf, "--fasta", fasta, "-o", str(out / "o.vcf.gz"), "--tsv",
                  str(out / "o.tsv"), *FAST, "--quiet")
    assert_one_line_error(rc, err, str(out / "o.vcf.gz"), "No space left", code=1)
    assert sorted(os.listdir(out)) == sorted(old)
    assert {n: (out / n).read_bytes() for n in old} == old
