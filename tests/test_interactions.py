"""``kipoi-dfim interactions`` end to end: a real Kipoi PyTorch model dir, a FASTA and a BED file."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests

import kipoi_dfim
from kipoi_dfim import fis as F
from kipoi_dfim import null as N
from kipoi_dfim.cli import main
from kipoi_dfim.errors import InputError
from kipoi_dfim.interactions import feature_interactions, fit_window
from kipoi_dfim.sequence import one_hot

L = 60
A, B, C = "GATAAG", "CAGCTG", "TGACTC"

MODEL_PY = textwrap.dedent('''
    import torch
    from torch import nn


    def _conv(motifs):
        conv = nn.Conv1d(4, len(motifs), 6)
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.fill_(-5.5)
            for i, m in enumerate(motifs):
                for j, c in enumerate(m):
                    conv.weight[i, "ACGT".index(c), j] = 1.0
        return conv


    class AndNet(nn.Sequential):
        """3 relu(2a + 2b - 1.5) + relu(c): motifs A and B interact, C is additive (see tests/test_fis.py)."""

        def __init__(self, length=60):
            lin1, lin2 = nn.Linear(3, 2), nn.Linear(2, 1)
            with torch.no_grad():
                lin1.weight.copy_(torch.tensor([[2.0, 2.0, 0.0], [0.0, 0.0, 1.0]]))
                lin1.bias.copy_(torch.tensor([-1.5, 0.0]))
                lin2.weight.copy_(torch.tensor([[3.0, 1.0]]))
                lin2.bias.zero_()
            super().__init__(_conv(["GATAAG", "CAGCTG", "TGACTC"]), nn.ReLU(), nn.MaxPool1d(length - 5),
                             nn.Flatten(), lin1, nn.ReLU(), lin2, nn.Sigmoid())


    class RandomNet(nn.Sequential):
        def __init__(self, length=60, seed=0):
            torch.manual_seed(seed)
            super().__init__(nn.Conv1d(4, 6, 5, padding=2), nn.ReLU(), nn.Conv1d(6, 4, 5, padding=2), nn.ReLU(),
                             nn.Flatten(), nn.Linear(4 * length, 8), nn.ReLU(), nn.Linear(8, 2))
''')


def model_dir(tmp_path, cls: str, labels: list[str]):
    d = tmp_path / cls
    d.mkdir()
    (d / "model.py").write_text(MODEL_PY)
    (d / "model.yaml").write_text(textwrap.dedent(f"""\
        type: pytorch
        args:
          module_file: model.py
          module_class: {cls}
          module_kwargs: {{length: {L}}}
        schema:
          inputs:
            shape: (4, {L})
          targets:
            shape: ({len(labels)},)
            column_labels: {labels}
        """))
    return d


def background(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    while True:
        s = list("".join(rng.choice(list("ACGT"), n)))
        if not any(m in "".join(s) for m in (A, B, C)):
            return s


def record(seed: int, n: int, at: dict[str, int]) -> str:
    s = background(seed, n)
    for m, p in at.items():
        s[p:p + 6] = m
    s = "".join(s)
    assert all(s.count(m) == 1 for m in at)
    return s


@pytest.fixture()
def inputs(tmp_path):
    recs = {
        "exact": record(0, 60, {A: 5, B: 25, C: 45}),
        "long": record(1, 80, {A: 15, B: 35, C: 55}),  # centre-cropped: window starts at 10
        "short": record(2, 50, {A: 0, B: 20, C: 40}),  # N-padded: 5 N on the left
        "nofeatures": record(3, 60, {}),
    }
    fa = tmp_path / "seqs.fa"
    fa.write_text("".join(f">{k} some description\n{v[:33]}\n{v[33:]}\n" for k, v in recs.items()))
    bed = tmp_path / "features.bed"
    bed.write_text(
        "track name=test\n"
        "exact\t5\t11\tA\nexact\t25\t31\tB\nexact\t45\t51\tC\n"
        "long\t15\t21\tA\nlong\t35\t41\tB\nlong\t55\t61\tC\nlong\t72\t78\tD\nlong\t2\t12\tE\n"
        "short\t0\t6\tA\nshort\t20\t26\tB\nshort\t40\t46\tC\n"
    )
    return fa, bed


def test_cli_writes_documented_columns(tmp_path, inputs, caplog):
    fa, bed = inputs
    out = tmp_path / "out.tsv"
    d = model_dir(tmp_path, "AndNet", ["bound"])
    rc = main(["interactions", str(d), "--fasta", str(fa), "--features", str(bed), "-o", str(out),
               "--method", "grad_input", "--quiet"])
    assert rc == 0
    df = pd.read_csv(out, sep="\t", keep_default_na=False, na_values=[""])
    assert list(df.columns) == ["seq", "source", "target", "source_start", "target_start", "fis", "abs_fis",
                                "pval", "qval", "status"]
    assert len(df) == 6 + 20 + 6  # ordered pairs per record; the record without features has none
    assert df["pval"].isna().all() and df["qval"].isna().all()  # no null requested
    # known answer (logit scored: the final sigmoid is removed): A<->B 36, anything with C 0
    for seq in ("exact", "long", "short"):
        s = df[df.seq == seq].set_index(["source", "target"])
        assert s.loc[("A", "B"), "fis"] == pytest.approx(36, abs=1e-4)
        assert s.loc[("B", "A"), "fis"] == pytest.approx(36, abs=1e-4)
        for pair in [("A", "C"), ("C", "A"), ("B", "C"), ("C", "B")]:
            assert s.loc[pair, "fis"] == pytest.approx(0, abs=1e-4)
        assert (s["abs_fis"].dropna() == s["fis"].dropna().abs()).all()
    long = df[df.seq == "long"].set_index(["source", "target"])
    assert long.loc[("A", "B"), "source_start"] == 15 and long.loc[("A", "B"), "target_start"] == 35
    assert long.loc[("D", "A"), "status"] == "source outside_model_input" and np.isnan(long.loc[("D", "A"), "fis"])
    assert long.loc[("A", "D"), "status"] == "target outside_model_input"
    assert long.loc[("E", "A"), "status"] == "clipped" and long.loc[("E", "A"), "fis"] == pytest.approx(0, abs=1e-5)
    assert (df[df.seq == "exact"]["status"] == "ok").all()
    short = df[df.seq == "short"].set_index(["source", "target"])
    assert short.loc[("B", "A"), "source_start"] == 20


def test_null_pvalues_pooled_per_task(tmp_path, inputs):
    fa, bed = inputs
    bed.write_text("exact\t5\t11\tA\nexact\t25\t31\tB\nexact\t45\t51\tC\nshort\t0\t6\tA\nshort\t20\t26\tB\n")
    d = model_dir(tmp_path, "RandomNet", ["t0", "t1"])
    df = feature_interactions(str(d), str(fa), str(bed), method="grad_input", null_shuffles=3, seed=11,
                              pvalue="gaussian", progress=False)
    assert "target_task" in df.columns and set(df["target_task"]) == {"t0", "t1"}
    assert len(df) == 2 * (6 + 2)
    # oracle: record i uses seed SeedSequence([11, i]); null = the same maps on 3 dinucleotide shuffles,
    # pooled over the records of a task; Gaussian two-sided p; BH over all rows
    model = kipoi_dfim.load_model(str(d))
    recs = {"exact": (0, [(5, 11), (25, 31), (45, 51)]), "short": (2, [(5, 11), (25, 31)])}
    from kipoi_dfim.interactions import read_fasta

    seqs = read_fasta(str(fa))
    exp = {}
    for t, task in enumerate(["t0", "t1"]):
        pool, obs = [], {}
        for name, (i, els) in recs.items():
            x = one_hot(fit_window(seqs[name], L).seq)
            rs = int(np.random.SeedSequence([11, i]).generate_state(1)[0])
            obs[name] = F.element_map(model, x, t, els, method="grad_input", seed=rs)
            nm = N.map_null(model, x, t, elements=els, n_shuffles=3, seed=rs, method="grad_input")
            pool.append(nm[~np.isnan(nm)])
        pool = np.concatenate(pool)
        for name, m in obs.items():
            z = (m - pool.mean()) / pool.std(ddof=1)
            exp[(task, name)] = (m, 2 * norm.sf(np.abs(z)))
    names = {"exact": ["A", "B", "C"], "short": ["A", "B"]}
    for _, r in df.iterrows():
        m, p = exp[(r["target_task"], r["seq"])]
        i, j = names[r["seq"]].index(r["source"]), names[r["seq"]].index(r["target"])
        assert r["fis"] == pytest.approx(m[i, j], rel=1e-5, abs=1e-7)
        assert r["pval"] == pytest.approx(p[i, j], rel=1e-6)
    np.testing.assert_allclose(df["qval"], multipletests(df["pval"], method="fdr_bh")[1])


@pytest.mark.parametrize("bed_text,fasta_text,msg", [
    ("exact\t5\n", None, "features.bed, line 1: a BED line needs at least 3 columns"),
    ("exact\t5\t11\tA\nexact\tx\t11\tB\n", None, "features.bed, line 2: start/end must be integers"),
    ("exact\t11\t5\tA\n", None, "line 1: need 0 <= start < end"),
    ("chrZ\t5\t11\tA\n", None, "line 1: feature 'A' is on 'chrZ'"),
    ("exact\t5\t70\tA\n", None, "past the end of record 'exact'"),
    ("exact\t5\t11\tA\n", ">exact\nACGT\nAC1T\n", "seqs.fa, line 3: invalid sequence character"),
    ("exact\t5\t11\tA\n", "ACGT\n", "seqs.fa, line 1: sequence before the first '>'"),
    ("exact\t5\t11\tA\n", ">exact\nACGT\n>exact\nACGT\n", "seqs.fa, line 3: duplicate FASTA record 'exact'"),
])
def test_bad_input_names_file_and_line(tmp_path, inputs, capsys, bed_text, fasta_text, msg):
    fa, bed = inputs
    bed.write_text(bed_text)
    if fasta_text is not None:
        fa.write_text(fasta_text)
    d = model_dir(tmp_path, "AndNet", ["bound"])
    out = tmp_path / "out.tsv"
    rc = main(["interactions", str(d), "--fasta", str(fa), "--features", str(bed), "-o", str(out),
               "--method", "grad_input", "--quiet"])
    assert rc == 2
    assert msg in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(InputError):
        feature_interactions(str(d), str(fa), str(bed), method="grad_input", progress=False)


def test_fit_window():
    w = fit_window("AAACCCGGGT", 4)
    assert (w.seq, w.offset, w.status) == ("CCCG", 3, "cropped")
    w = fit_window("ACG", 6)
    assert (w.seq, w.offset, w.status) == ("NACGNN", -1, "padded")
