"""kipoi_dfim.references: user references from FASTA / .npy, checked against hand-built arrays and a real model."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from kipoi_dfim import load_model
from kipoi_dfim.attribution import gc_background, importance
from kipoi_dfim.errors import InputError
from kipoi_dfim.references import load_references

HERE = os.path.dirname(os.path.abspath(__file__))
SIM_TORCH = os.path.join(HERE, "..", "model_specs", "sim_torch")

# the one-hot of "ACGTN" built by hand, independent of kipoi_dfim.sequence
ACGTN = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], np.float32)


def test_fasta_records_multiline_lowercase_and_n(tmp_path):
    p = tmp_path / "refs.fa"
    p.write_text(">r1 first\nACG\nTN\n>r2\nacgtn\n>r3\nNNNNA\n")
    refs = load_references(p, 5)
    assert refs.dtype == np.float32 and refs.shape == (3, 5, 4)
    np.testing.assert_array_equal(refs[0], ACGTN)
    np.testing.assert_array_equal(refs[1], ACGTN)
    np.testing.assert_array_equal(refs[2], np.r_[np.zeros((4, 4)), [[1, 0, 0, 0]]])


def test_gzipped_fasta(tmp_path):
    p = tmp_path / "refs.fa.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(">a\nACGTN\n")
    np.testing.assert_array_equal(load_references(p, 5)[0], ACGTN)


def test_npy_2d_and_3d(tmp_path):
    freq = np.tile([0.27, 0.23, 0.23, 0.27], (5, 1))
    np.save(tmp_path / "one.npy", freq)
    got = load_references(tmp_path / "one.npy", 5)
    assert got.shape == (1, 5, 4)
    np.testing.assert_allclose(got[0], freq, rtol=1e-7)
    both = np.stack([ACGTN, freq])
    np.save(tmp_path / "two.npy", both)
    np.testing.assert_allclose(load_references(tmp_path / "two.npy", 5), both, rtol=1e-7)


@pytest.mark.parametrize(
    "text, fragment",
    [
        (">r1\nACGTN\n>short\nACG\n", "record 2 (short) has 3 bases, the model takes 5"),
        (">r1\nACGTR\n", "record 1 (r1): letters R are not ACGTN"),
        ("", "no FASTA records found"),
    ],
)
def test_fasta_errors_name_file_and_record(tmp_path, text, fragment):
    p = tmp_path / "bad.fa"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        load_references(p, 5)
    msg = str(e.value)
    assert str(p) in msg and fragment in msg and "\n" not in msg


@pytest.mark.parametrize(
    "arr, fragment",
    [
        (np.zeros((2, 6, 4)), "must be (R, 5, 4) or (5, 4), got (2, 6, 4)"),
        (np.full((5, 4), 0.5), "reference 0, position 0: base values sum to 2 > 1"),
        (np.full((5, 4), np.nan), "finite and in [0, 1]"),
        (np.zeros((0, 5, 4)), "must be (R, 5, 4)"),
    ],
)
def test_npy_errors(tmp_path, arr, fragment):
    p = tmp_path / "bad.npy"
    np.save(p, arr)
    with pytest.raises(InputError, match=None) as e:
        load_references(p, 5)
    assert str(p) in str(e.value) and fragment in str(e.value)


def test_missing_and_unknown_extension(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_references(tmp_path / "nope.fa", 5)
    (tmp_path / "refs.txt").write_text("ACGTN\n")
    with pytest.raises(InputError, match="FASTA .* or a .npy"):
        load_references(tmp_path / "refs.txt", 5)


def test_file_references_drive_deeplift_and_ig_like_the_builtin_choices(tmp_path):
    """On the real sim_torch model: a .npy holding the GC background gives the same DeepLIFT and IG scores as
    the built-in ``"gc"`` choice, and a FASTA of K sequences gives the mean of the K single-reference runs."""
    m = load_model(SIM_TORCH, target=0)
    rng = np.random.default_rng(3)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (3, m.seq_len))]
    np.save(tmp_path / "gc.npy", gc_background(m.seq_len, 0.46))
    gc_file = load_references(tmp_path / "gc.npy", m.seq_len)
    for method, key in (("deeplift", "references"), ("integrated_gradients", "baseline")):
        want = importance(m, x, 0, method, **{key: "gc"})
        got = importance(m, x, 0, method, **{key: gc_file})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    seqs = ["".join(rng.choice(list("ACGT"), m.seq_len)) for _ in range(2)]
    (tmp_path / "two.fa").write_text("".join(f">s{k}\n{s}\n" for k, s in enumerate(seqs)))
    two = load_references(tmp_path / "two.fa", m.seq_len)
    both = importance(m, x, 0, "deeplift", references=two)
    each = [importance(m, x, 0, "deeplift", references=two[k: k + 1]) for k in range(2)]
    np.testing.assert_allclose(both, (each[0] + each[1]) / 2, rtol=1e-4, atol=1e-6)
    assert np.abs(both).max() > 1e-3  # the references change something: not a vacuous equality
