"""One settings object: every flag a command lists reaches Settings, bad values fail naming the flag, and every
option that decides the numbers changes them where it should (and only there).

The model is a small PyTorch model (regions A and B interact through a tanh) with two outputs, so
that ``--target``, ``--output``, ``--references``, ``--steps``, ``--gc``, ``--seed``, ``--window``, the null
options, ``--rc`` and ``--all-alts`` each have a visible, checkable effect.
"""

import argparse
import os

import numpy as np
import pytest
import torch
from torch import nn

import kipoi_dfim
from kipoi_dfim.attribution import METHODS
from kipoi_dfim.errors import InputError
from kipoi_dfim.settings import COMMAND_FIELDS, OPTIONS, Settings, add_options

L = 80
A = range(38, 44)  # the variant sits at window position L // 2 = 40
B = range(50, 56)


class TwoOutputs(nn.Module):
    """out0 = sigmoid(3 tanh(a(x) + b(x))): A and B interact through tanh; out1 = sigmoid(a(x) + b(x)): additive."""

    def __init__(self, wa, wb):
        super().__init__()
        self.wa = nn.Parameter(torch.tensor(wa))
        self.wb = nn.Parameter(torch.tensor(wb))
        self.act = nn.Sigmoid()

    def forward(self, x):  # (N, 4, L)
        a = (x * self.wa).sum((1, 2))
        b = (x * self.wb).sum((1, 2))
        return self.act(torch.stack([3 * torch.tanh(a + b), a + b], 1))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("settings")
    rng = np.random.default_rng(3)
    wa = np.zeros((4, L), np.float32)
    wb = np.zeros((4, L), np.float32)
    wa[:, list(A)] = rng.normal(size=(4, len(A)))
    wb[:, list(B)] = rng.normal(size=(4, len(B)))
    seq = "".join(rng.choice(list("ACGT"), 3 * L))
    (d / "ref.fa").write_text(f">c1\n{seq}\n")
    lines = []
    for k, (pos0, shift) in enumerate([(10, 1), (L + 40, 1), (L + 40, 2)]):  # the first: window shifted, not in A
        alt = "ACGT"[("ACGT".index(seq[pos0]) + shift) % 4]
        lines.append(f"c1\t{pos0 + 1}\tv{k}\t{seq[pos0]}\t{alt}\t.\t.\t.")
    (d / "in.vcf").write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                              + "\n".join(lines) + "\n")
    models = {out: kipoi_dfim.load_model(TwoOutputs(wa, wb), seq_len=L, targets=["inter", "sum"], layout="(4,L)",
                                         output=out) for out in ("logit", "raw")}
    return {"dir": d, "models": models}


def _score(case, **kw):
    kw.setdefault("method", "grad_input")
    model = case["models"][kw.get("output", "logit")]
    return kipoi_dfim.score_variants(model, case["dir"] / "in.vcf", case["dir"] / "ref.fa", quiet=True, **kw)


# -- the command line reaches Settings ----------------------------------------------------------------------
_VALUES = {"method": "integrated_gradients", "references": "gc", "gc": 0.3, "n_refs": 3, "steps": 7, "window": 4,
           "null": "pooled", "null_shuffles": 2, "null_size": 9, "null_max_effect": 0.5, "seed": 5, "batch_size": 3,
           "chunk_size": 2, "output": "raw", "fill": "zero", "targets": ["sum"], "device": "cpu",
           "pvalue": "empirical", "motifs": "none", "seq_len": 100}


@pytest.mark.parametrize("command", sorted(COMMAND_FIELDS))
def test_every_flag_of_a_command_reaches_settings(command):
    p = argparse.ArgumentParser()
    add_options(p, command)
    for field in COMMAND_FIELDS[command]:
        flags, kw = OPTIONS[field]
        if kw.get("action") == "store_true":
            argv, want = [flags[0]], True
        elif field == "targets":
            argv, want = [flags[0], "sum"], ("sum",)
        else:
            argv, want = [flags[0], str(_VALUES[field])], _VALUES[field]
        got = getattr(Settings.from_args(p.parse_args(argv)), field)
        assert got == want, (command, field, got)


def test_defaults_come_from_settings_and_method_choices_from_the_registry():
    p = argparse.ArgumentParser()
    add_options(p, "score-variants")
    assert Settings.from_args(p.parse_args([])) == Settings()
    action = next(a for a in p._actions if a.dest == "method")
    assert list(action.choices) == list(METHODS)
    assert p.parse_args(["--baseline", "uniform"]).references == "uniform"  # the old flag name still works


@pytest.mark.parametrize("kw, flag", [
    ({"batch_size": 0}, "--batch-size"), ({"batch_size": -1}, "--batch-size"), ({"n_refs": 0}, "--n-refs"),
    ({"chunk_size": 0}, "--chunk-size"), ({"null_shuffles": -1}, "--null-shuffles"), ({"window": 0}, "--window"),
    ({"steps": 0}, "--steps"), ({"gc": 2.0}, "--gc"), ({"null_size": 0}, "--null-size"), ({"seed": -3}, "--seed"),
    ({"method": "saliency"}, "--method"), ({"references": "nonsense"}, "--references"),
    ({"null": "per-variant"}, "--null"), ({"output": "prob"}, "--output"), ({"fill": "noise"}, "--fill"),
    ({"pvalue": "bonferroni"}, "--pvalue"), ({"seq_len": 0}, "--seq-len"),
])
def test_bad_values_name_the_flag(kw, flag):
    with pytest.raises(InputError, match=flag):
        Settings(**kw)


# -- each option changes the numbers where it should --------------------------------------------------------
def test_method_references_steps_gc_change_importance(case):
    base = _score(case, method="integrated_gradients", target="inter")
    ok = base["status"] == "ok"
    def fis(**kw):
        return _score(case, target="inter", **kw).loc[ok, "fis_at_max"].to_numpy()
    zeros = fis(method="integrated_gradients")
    np.testing.assert_array_equal(zeros, base.loc[ok, "fis_at_max"].to_numpy())
    assert not np.allclose(zeros, fis(method="integrated_gradients", references="gc"))
    assert not np.allclose(fis(method="integrated_gradients", references="gc"),
                           fis(method="integrated_gradients", references="gc", gc=0.9))
    # steps change the Riemann sum: far from converged at 2, converged by 50 (200 agrees to 1%)
    s2, s200 = fis(method="integrated_gradients", steps=2), fis(method="integrated_gradients", steps=200)
    assert not np.allclose(s2, zeros, rtol=0.05) and np.allclose(s200, zeros, rtol=0.01, atol=1e-6)
    assert not np.allclose(zeros, fis(method="grad_input"))


def test_seed_and_n_refs_change_deeplift_only_through_the_references(case):
    def fis(**kw):
        return _score(case, method="deeplift", target="inter", **kw)["fis_at_max"].to_numpy()
    a = fis(seed=0, n_refs=4)
    np.testing.assert_array_equal(a, fis(seed=0, n_refs=4))
    assert not np.allclose(a, fis(seed=1, n_refs=4), equal_nan=True)
    assert not np.allclose(a, fis(seed=0, n_refs=6), equal_nan=True)
    # constant references draw nothing: the seed changes nothing
    np.testing.assert_array_equal(fis(references="gc", seed=0), fis(references="gc", seed=9))


def test_window_target_output_rc_and_all_alts(case):
    wide = _score(case, window=15)
    narrow = _score(case, window=2)
    ok = wide["status"] == "ok"
    assert (narrow.loc[ok, "max_fis_offset"].abs() <= 2).all()
    assert (narrow.loc[ok, "max_abs_fis"] <= wide.loc[ok, "max_abs_fis"] + 1e-12).all()
    assert set(_score(case, target="sum")["target"]) == {"sum"}
    assert set(wide["target"]) == {"inter", "sum"}
    # the additive output has no interactions: FIS is exactly 0 for it, whatever the output kind
    assert np.allclose(wide.loc[ok & (wide["target"] == "sum"), "max_abs_fis"], 0, atol=1e-6)
    raw = _score(case, output="raw", target="inter")
    logit = _score(case, output="logit", target="inter")
    assert not np.allclose(raw.loc[ok[:3].to_numpy(), "max_abs_fis"], logit.loc[ok[:3].to_numpy(), "max_abs_fis"])
    np.testing.assert_allclose(raw["ref_pred"], logit["ref_pred"])  # ISM scores use the raw output either way
    rc = _score(case, rc=True, target="inter")
    assert not np.allclose(rc["ref_pred"], logit["ref_pred"])
    np.testing.assert_array_equal(rc["max_abs_fis"], logit["max_abs_fis"])  # --rc only touches ISM
    alts = _score(case, all_alts=True, target="inter")
    assert alts["max_abs_maxfis"].notna().all() and logit["max_abs_maxfis"].isna().all()


def test_null_options(case):
    none = _score(case, target="inter")
    assert none["pval"].isna().all()
    per = _score(case, target="inter", null_shuffles=3)
    pooled = _score(case, target="inter", null="pooled", null_size=5)
    assert per["pval"].notna().all() and pooled["pval"].notna().all()
    np.testing.assert_array_equal(per["max_abs_fis"], none["max_abs_fis"])  # the null never changes the scores
    np.testing.assert_array_equal(pooled["max_abs_fis"], none["max_abs_fis"])
    assert not np.allclose(per["pval_empirical"], _score(case, target="inter", null_shuffles=6)["pval_empirical"])
    # empirical p-values are multiples of 1 / (1 + M): M = 5 pooled backgrounds, 3 x 3 per-variant ones
    for p, m in ((pooled["pval_empirical"], 5), (per["pval_empirical"], 9)):
        assert np.allclose(p * (m + 1), np.round(p * (m + 1)), atol=1e-3)


@pytest.mark.parametrize("user", [None, "ACTIVE"])
def test_openmp_threads_sleep_unless_the_user_chose(user):
    """Importing kipoi_dfim (the CLI does first) sets OMP_WAIT_POLICY=PASSIVE before torch is imported
    (spinning threads cost ~2x under CPU contention; benchmarks/README.md), and never overrides a user's own
    choice; torch imported afterwards runs under it (libgomp reads the variable when it loads)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user is not None:
        env["OMP_WAIT_POLICY"] = user
    code = "import os, kipoi_dfim, kipoi_dfim.cli; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (user or "PASSIVE")
