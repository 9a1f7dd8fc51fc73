"""The score-variants bar moves per variant, not per chunk (issue 14, point 3), and ``--quiet`` prints only errors.

Oracles: the record count of the VCF (counted here from its bytes), the number of model calls a method makes
(counted from the batch arithmetic), and the numbers of a run without a bar (a progress hook changes nothing).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import kipoi_dfim
from kipoi_dfim import fis as F
from kipoi_dfim import scoring
from kipoi_dfim.attribution import METHODS, register
from kipoi_dfim.backend import load_model
from kipoi_dfim.cli import main
from kipoi_dfim.progress import split
from kipoi_dfim.settings import Settings
from kipoi_dfim.shuffle import variant_seeds
from kipoi_dfim.variants import Fasta, iter_chunks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "model_specs", "sim_torch")
SIM_VCF = os.path.join(ROOT, "example_vcfs", "sim", "sim_variants.vcf")
SIM_FASTA = os.path.join(ROOT, "example_vcfs", "sim", "sim_contigs.fa")


def n_records(path: str) -> int:
    with open(path, "rb") as fh:
        return sum(1 for ln in fh.read().split(b"\n") if ln and not ln.startswith(b"#"))


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL, batch_size=8)


def record_bar(monkeypatch) -> list[tuple[float, float | None]]:
    """(n, total) of the score-variants bar after each of its updates."""
    seen: list[tuple[float, float | None]] = []
    update = scoring.RecordBar.update

    def recording(self, n=1):
        out = update(self, n)
        seen.append((float(self.n), self.total))
        return out

    monkeypatch.setattr(scoring.RecordBar, "update", recording)
    return seen


def test_bar_moves_within_a_chunk_and_ends_at_the_record_count(monkeypatch, tmp_path):
    chunk = 16  # every method's model calls are counted below, DeepLIFT's shared engine among them
    kw = dict(method="grad_input", chunk_size=chunk, batch_size=8, null_shuffles=2, motifs="none", seed=1)
    quiet = tmp_path / "quiet.tsv"
    kipoi_dfim.score_variants(MODEL, SIM_VCF, SIM_FASTA, tsv=str(quiet), quiet=True, return_table=False, **kw)
    seen = record_bar(monkeypatch)
    shown = tmp_path / "bar.tsv"
    kipoi_dfim.score_variants(MODEL, SIM_VCF, SIM_FASTA, tsv=str(shown), quiet=False, return_table=False, **kw)
    ns = [n for n, _ in seen]
    assert ns == sorted(ns) and ns[0] > 0  # never backwards
    assert ns[-1] == n_records(SIM_VCF) == 50  # ends exactly at the record count
    assert all(total is not None and n <= total for n, total in seen)  # never past the total
    within_first = {n for n in ns if 0 < n < chunk}
    assert len(within_first) >= chunk // 2, within_first  # per variant or finer, not once per chunk
    assert {16, 32, 48} <= set(ns)  # every chunk ends on its whole record count
    assert shown.read_bytes() == quiet.read_bytes()  # the bar changes no number


def test_quiet_prints_nothing_but_errors(capfd, tmp_path):
    args = ["score-variants", MODEL, "--vcf", SIM_VCF, "--fasta", SIM_FASTA, "--method", "grad_input",
            "--window", "5", "--null", "pooled", "--null-size", "20", "--motifs", "none"]
    capfd.readouterr()
    assert main([*args, "-o", str(tmp_path / "o.vcf"), "--quiet"]) == 0
    assert capfd.readouterr().err == ""
    assert main([*args, "-o", str(tmp_path / "o.vcf")]) == 0  # the same run with its bars
    err = capfd.readouterr().err
    assert "score-variants" in err and "| 50/50 [" in err and "pooled null" in err and "| 20/20 [" in err
    rc = main([*args, "-o", str(tmp_path / "o.vcf"), "--window", "-3", "--quiet"])
    err = capfd.readouterr().err
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "--window" in err


def _windows(model, settings: Settings, n: int):
    fa = Fasta(SIM_FASTA)
    records, variants = next(iter_chunks(SIM_VCF, fa, model.seq_len, chunk_size=n))
    from kipoi_dfim.variants import windows

    ok = [v for v in variants if v.ok][:n]
    X, Xalt = windows(ok, fa, model.seq_len)
    refs = F.window_references(X, settings, variant_seeds(settings.seed, ok, 0))
    return ok, X, Xalt, refs


@pytest.mark.parametrize("method, references", [("deeplift", None), ("deeplift", "gc"), ("grad_input", None),
                                                ("integrated_gradients", None), ("ism", None)])
def test_importance_reports_each_model_call_and_sums_to_one(model, method, references):
    settings = Settings(method=method, references=references, n_refs=2, steps=4, window=3, batch_size=8)
    ok, X, Xalt, refs = _windows(model, settings, 6)
    W = np.stack([X, Xalt])
    mask = F.target_mask(X.shape[1], np.array([v.offset for v in ok]), np.array([len(v.ref) for v in ok]), 3)
    pos = F.read_positions(mask, ok)
    targets = list(range(len(model.targets)))
    steps: list[float] = []
    with_hook = F.windows_importance(model, W, refs, targets, settings, pos, progress=steps.append)
    assert np.array_equal(with_hook, F.windows_importance(model, W, refs, targets, settings, pos))
    assert all(s > 0 for s in steps) and sum(steps) == pytest.approx(1.0, abs=1e-12)
    T, n = len(targets), 2 * len(ok)  # model calls, counted from the batch arithmetic of each method
    calls = {("deeplift", None): -(-len(ok) // max(1, 8 // (2 * 2))),  # shared: 2 windows x 2 refs per variant
             ("deeplift", "gc"): T * -(-n // 8),  # one reference: 8 windows per call, per target
             ("grad_input", None): T * -(-n // 8),
             ("integrated_gradients", None): T * -(-n // 2),  # 4 steps x 1 baseline: 2 windows per call
             ("ism", None): 1 + -(-int(3 * 2 * pos.sum()) // 8)}[(method, references)]  # f0, 3 mutants a base
    assert len(steps) == calls


def test_a_method_without_progress_reports_when_it_returns(model):
    @register("test_plain_grad")
    def plain(model, x, target, *, hypothetical=False, batch_size=64, seed=0):
        return METHODS["grad_input"](model, x, target, hypothetical=hypothetical, batch_size=batch_size)

    try:
        settings = Settings(method="test_plain_grad", window=3, batch_size=8)
        _, X, Xalt, refs = _windows(model, settings, 4)
        steps: list[float] = []
        F.windows_importance(model, np.stack([X, Xalt]), refs, [0, 0], settings, progress=steps.append)
        assert steps == [0.5, 0.5]  # one report per target, when the method returns
    finally:
        METHODS.pop("test_plain_grad", None)


def test_score_windows_weighs_every_part_and_sums_to_one(model):
    settings = Settings(method="deeplift", n_refs=2, window=3, batch_size=8, null_shuffles=2, all_alts=True,
                        rc=True, motifs="none")
    fa = Fasta(SIM_FASTA)
    _, variants = next(iter_chunks(SIM_VCF, fa, model.seq_len, chunk_size=6))
    from kipoi_dfim.null import NullRecord
    from kipoi_dfim.variants import windows

    ok = [v for v in variants if v.ok]
    X, Xalt = windows(ok, fa, model.seq_len)
    targets = list(range(len(model.targets)))
    steps: list[float] = []
    scoring.score_windows(model, variants, X, Xalt, targets, model.targets, settings, NullRecord(), steps.append)
    assert sum(steps) == pytest.approx(1.0, abs=1e-12) and all(s > 0 for s in steps)
    costs = scoring.chunk_costs(model, ok, settings, null=True)
    assert all(c > 0 for c in costs)  # importance, the three alternative bases, ISM predictions, the null
    # the null is K = 2 times the work of the scores' importance, so it is two thirds of the two together
    assert costs[3] == 2 * costs[0]
    # and the largest step is less than one variant's share of the chunk
    assert max(steps) < 1 / len(ok)


def test_split_weights_parts_by_cost():
    got: list[float] = []
    a, b, c = split(got.append, [1.0, 3.0, 0.0])
    a(1.0)
    b(0.5)
    c(1.0)
    assert got == [0.25, 0.375, 0.0]
    assert split(None, [1, 2]) == [None, None]


def test_pooled_null_reports_each_model_call(model):
    from kipoi_dfim import null as N

    settings = Settings(method="grad_input", window=3, batch_size=8, null="pooled", null_size=20, motifs="none")
    fa = Fasta(SIM_FASTA)
    sampler = N.PooledNullSampler(20, 0)
    for _, variants in iter_chunks(SIM_VCF, fa, model.seq_len, chunk_size=16):
        sampler.offer([v for v in variants if v.ok])
    steps: list[float] = []
    with_hook, without = N.NullAccumulator(1), N.NullAccumulator(1)
    N.pooled_null(model, fa, sampler, [0], settings, with_hook, progress=steps.append)
    N.pooled_null(model, fa, sampler, [0], settings, without)
    assert np.array_equal(with_hook.null(0), without.null(0))
    assert sum(steps) == pytest.approx(1.0, abs=1e-12) and all(s > 0 for s in steps)
    batches = N.pooled_batches(sampler, 64)
    assert len(steps) == sum(-(-2 * len(b) * k // 8) for k, b in batches)  # reference + alternate windows, 8 a call
    assert len(steps) > len(batches)
