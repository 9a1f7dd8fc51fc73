"""``kipoi-dfim kipoi-spec``: the written Kipoi directory run by the real ``kipoi predict`` / ``kipoi test``.

Oracles: (1) a bilinear torch model whose gradient x input FIS is known in closed form (as in test_scoring),
scored through ``kipoi predict``; (2) a small Keras model scored with DeepLIFT through ``kipoi predict`` at a
kipoi batch size that splits records, against ``kipoi_dfim.score_variants`` on the same VCF/FASTA/seed
(shuffled references are seeded per record and ALT, so the two must agree), and its ISM predictions against
the Keras model called directly on windows cut by hand from the FASTA; (3) ``kipoi test`` on the generated
example files; (4) if the shipped simulation model (model_specs/sim_keras) is built: ``kipoi test`` on its
example_vcfs/sim subset and ``kipoi predict`` on the whole simulated VCF == ``score_variants``.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import kipoi_dfim
from kipoi_dfim.cli import main as cli_main
from kipoi_dfim.errors import InputError
from kipoi_dfim.kipoi_spec import (
    ID_COLUMNS,
    SCORE_COLUMNS,
    iter_samples,
    read_config,
    read_predictions,
    write_kipoi_spec,
)
from kipoi_dfim.sequence import ALPHABET, one_hot

REPO = Path(__file__).resolve().parents[1]


def _kipoi(*args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", KERAS_BACKEND="tensorflow")
    r = subprocess.run([sys.executable, "-m", "kipoi", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"kipoi {args[0]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _predict(spec, vcf, fasta, out, cwd, batch_size):
    dl_args = json.dumps({"vcf_file": str(vcf), "fasta_file": str(fasta)})
    _kipoi("predict", spec, "--source", "dir", "--batch_size", batch_size, "--dataloader_args", dl_args,
           "-o", out, cwd=cwd)
    return read_predictions(out, spec)


def _write_vcf(path, records, contigs):
    header = ["##fileformat=VCFv4.2"] + [f"##contig=<ID={c},length={n}>" for c, n in contigs]
    header.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    body = [f"{c}\t{p}\t{i}\t{r}\t{a}\t.\tPASS\t." for c, p, i, r, a in records]
    Path(path).write_text("\n".join(header + body) + "\n")


# -- (1) closed form through kipoi predict ---------------------------------------------------------------

LB = 60
A = range(20, 26)
B = range(32, 38)

BILINEAR_PY = '''
import torch
from torch import nn


class Bilinear(nn.Module):
    def __init__(self, length=60):
        super().__init__()
        self.wa = nn.Parameter(torch.zeros(4, length))
        self.wb = nn.Parameter(torch.zeros(4, length))

    def forward(self, x):  # (N, 4, L)
        return ((x * self.wa).sum((1, 2)) * (x * self.wb).sum((1, 2)))[:, None]
'''


def test_kipoi_predict_gives_the_closed_form_fis_of_a_bilinear_model(tmp_path):
    rng = np.random.default_rng(5)
    wa = np.zeros((4, LB), np.float32)
    wb = np.zeros((4, LB), np.float32)
    wa[:, list(A)] = rng.normal(size=(4, len(A)))
    wb[:, list(B)] = rng.normal(size=(4, len(B)))
    mdir = tmp_path / "bilinear"
    mdir.mkdir()
    (mdir / "bilinear.py").write_text(BILINEAR_PY)
    torch.save({"wa": torch.tensor(wa), "wb": torch.tensor(wb)}, mdir / "weights.pth")
    (mdir / "model.yaml").write_text(yaml.safe_dump({
        "type": "pytorch",
        "args": {"module_file": "bilinear.py", "module_class": "Bilinear", "weights": "weights.pth"},
        "schema": {"inputs": {"name": "seq", "shape": f"(4, {LB})"},
                   "targets": {"name": "y", "shape": "(1,)", "column_labels": ["y"]}},
    }))
    seq = "".join(rng.choice(list("ACGT"), LB))
    (tmp_path / "ref.fa").write_text(f">c1\n{seq}\n")
    recs = []
    for k, p0 in enumerate([21, 23, 24]):
        recs.append(("c1", p0 + 1, f"v{k}", seq[p0], ALPHABET[(ALPHABET.index(seq[p0]) + 1 + k) % 4]))
    recs.append(("c1", 30, "ins", seq[29], seq[29] + "A"))
    _write_vcf(tmp_path / "in.vcf", sorted(recs, key=lambda r: r[1]), [("c1", LB)])

    spec = tmp_path / "spec"
    assert cli_main(["kipoi-spec", str(mdir), "-o", str(spec), "--method", "grad_input"]) == 0
    got = _predict(spec, tmp_path / "in.vcf", tmp_path / "ref.fa", tmp_path / "out.tsv", tmp_path, 2)

    assert list(got["variant_id"]) == [r[2] for r in sorted(recs, key=lambda r: r[1])]
    # the insertion after A moves B one base right, onto other weights: aligned FIS C_X[t] - C_X'[align(t)]
    ins = got.set_index("variant_id").loc["ins"]
    assert ins["status"] == "ok"

    def gi(x):  # gradient x input summed over bases, closed form
        a, b = (x * wa.T).sum(), (x * wb.T).sum()
        return (x * wa.T).sum(-1) * b + (x * wb.T).sum(-1) * a

    cr, ca = gi(one_hot(seq)), gi(one_hot((seq[:30] + "A" + seq[30:])[:LB]))
    fis_ins = {t: cr[t] - ca[t if t < 29 else t + 1] for t in range(29 - 15, 29 + 16) if t != 29 and t + 1 < LB}
    t_ins = max(fis_ins, key=lambda t: abs(fis_ins[t]))
    np.testing.assert_allclose(ins["fis_at_max"], fis_ins[t_ins], rtol=1e-5)
    assert ins["max_fis_offset"] == t_ins - 29 and abs(fis_ins[t_ins]) > 0.1
    for _c, pos, vid, r, g in recs[:3]:
        p0 = pos - 1
        delta = wa[ALPHABET.index(g), p0] - wa[ALPHABET.index(r), p0]
        fis = {t: -wb[ALPHABET.index(seq[t]), t] * delta for t in B}
        t_max = max(fis, key=lambda t: abs(fis[t]))
        row = got.set_index("variant_id").loc[vid]
        assert row["status"] == "ok"
        np.testing.assert_allclose(row["max_abs_fis"], abs(fis[t_max]), rtol=1e-5)
        np.testing.assert_allclose(row["fis_at_max"], fis[t_max], rtol=1e-5)
        assert row["max_fis_offset"] == t_max - p0
        assert row["max_fis_base"] == seq[t_max]
        x = one_hot(seq)
        xa = x.copy()
        xa[p0] = one_hot(g)[0]
        f = [(v * wa.T).sum() * (v * wb.T).sum() for v in (x, xa)]
        np.testing.assert_allclose([row["ref_pred"], row["alt_pred"], row["diff"]], [f[0], f[1], f[1] - f[0]],
                                   rtol=1e-5, atol=1e-6)


# -- (2) deeplift: kipoi predict == score_variants; (3) kipoi test ----------------------------------------

LK = 100


@pytest.fixture(scope="module")
def keras_dir(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("keras_model")
    keras.utils.set_random_seed(1)
    inp = keras.Input((LK, 4))
    h = keras.layers.Conv1D(8, 7, activation="relu")(inp)
    h = keras.layers.MaxPooling1D(3)(h)
    h = keras.layers.Conv1D(6, 5, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    model = keras.Model(inp, keras.layers.Dense(3, activation="sigmoid")(h))
    model.save(d / "model.keras")
    (d / "model.yaml").write_text(yaml.safe_dump({
        "type": "keras", "args": {"weights": "model.keras"},
        "schema": {"inputs": {"name": "seq", "shape": f"({LK}, 4)"},
                   "targets": {"name": "out", "shape": "(3,)", "column_labels": ["up", "down", "flat"]}},
    }))
    return d, model


def test_kipoi_predict_equals_score_variants_and_kipoi_test_passes(keras_dir, tmp_path):
    mdir, kmodel = keras_dir
    rng = np.random.default_rng(11)
    seq = "".join(rng.choice(list("ACGT"), 300))
    (tmp_path / "ref.fa").write_text(f">chr1\n{seq}\n")
    snvs = [(120, "s1"), (150, "s2"), (151, "s3"), (180, "s4")]
    recs = []
    for p0, vid in snvs:
        alts = [b for b in ALPHABET if b != seq[p0]]
        recs.append(("chr1", p0 + 1, vid, seq[p0], ",".join(alts[:2]) if vid == "s2" else alts[0]))
    recs += [("chr1", 131, "del", seq[130:132], seq[130]),
             ("chr1", 141, "mismatch", ALPHABET[(ALPHABET.index(seq[140]) + 1) % 4], seq[140])]
    recs.append(("chrX", 50, "nocontig", "A", "C"))
    recs = sorted(recs, key=lambda r: (r[0] != "chr1", r[1]))
    _write_vcf(tmp_path / "in.vcf", recs, [("chr1", 300), ("chrX", 100)])

    spec = tmp_path / "spec"
    assert cli_main(["kipoi-spec", str(mdir), "-o", str(spec), "--target", "flat", "--target", "up",
                     "--n-refs", "4", "--seed", "3"]) == 0
    cfg = read_config(spec)
    assert cfg["model"] == "wrapped_model" and (spec / "wrapped_model" / "model.keras").exists()
    assert cfg["targets"] == ["flat", "up"]

    got = _predict(spec, tmp_path / "in.vcf", tmp_path / "ref.fa", tmp_path / "out.tsv", tmp_path, 3)
    want = kipoi_dfim.score_variants(mdir, tmp_path / "in.vcf", tmp_path / "ref.fa", target=["flat", "up"],
                                     n_refs=4, seed=3, batch_size=5, chunk_size=2, quiet=True)
    # every record x ALT x target, none dropped, same order
    assert len(got) == len(want) == 2 * 8
    for c in ("variant_id", "chrom", "ref", "alt", "target", "status"):
        assert list(got[c]) == list(want[c].astype(str)), c
    assert list(got["pos"]) == list(want["pos"])
    ok = (got["status"] == "ok").to_numpy()
    assert ok.sum() == 2 * 6  # the deletion is scored too (aligned; kipoi_dfim.indels)
    assert got.loc[ok, "max_abs_fis"].gt(0).all()
    assert got.loc[~ok, list(c for c in SCORE_COLUMNS if c != "max_fis_base")].isna().all().all()
    for c in SCORE_COLUMNS:
        if c == "max_fis_base":
            assert list(got.loc[ok, c]) == list(want.loc[ok, c])
            continue
        # score_variants' TSV keeps 6 significant digits; the windows are batched differently (float32 noise)
        np.testing.assert_allclose(got[c], want[c].astype(float), rtol=2e-5, atol=1e-6 if c != "deepsea_effect"
                                   else 1e-9, err_msg=c)

    # ISM against the Keras model called directly on windows cut by hand
    for _, row in got[ok & (got["target"] == "up").to_numpy()].iterrows():
        p0 = int(row["pos"]) - 1
        ws = p0 - (LK - len(row["ref"]) + 1) // 2  # the REF allele centred (an SNV at index LK // 2)
        win = seq[ws: ws + LK]
        alt = (seq[ws:p0] + row["alt"] + seq[p0 + len(row["ref"]):])[:LK]  # same left end, filled from the genome
        pr, pa = np.asarray(kmodel(np.stack([one_hot(win), one_hot(alt)])))[:, 0]
        np.testing.assert_allclose([row["ref_pred"], row["alt_pred"]], [pr, pa], rtol=1e-5)
        np.testing.assert_allclose(row["logit"], np.log(pa / (1 - pa)) - np.log(pr / (1 - pr)), atol=1e-5)

    # kipoi test on the generated example (every kind of record) passes offline
    ex = (spec / "example_files" / "example.vcf").read_text()
    assert all(k in ex for k in ("ex_indel", "ex_refmismatch", "ex_unknown_contig", "ex_padded"))
    _kipoi("test", spec, "--source", "dir", "--batch_size", 4, cwd=tmp_path)


def test_write_kipoi_spec_refuses_and_falls_back(keras_dir, tmp_path):
    mdir, _ = keras_dir
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        write_kipoi_spec(mdir, busy)
    with pytest.raises(InputError, match="nope.vcf.*not found"):
        iter_samples(tmp_path / "nope.vcf", REPO / "example_vcfs" / "spi1_bqtls" / "spi1_bqtls_hg19_1kb.fa", 100)
    with pytest.raises(InputError, match="shorter than"):
        write_kipoi_spec(mdir, tmp_path / "w", window=60)
    assert not (tmp_path / "w").exists()
    # a model.yaml pointing outside its directory cannot be copied: the absolute path is stored
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copy(mdir / "model.keras", shared / "model.keras")
    outside = tmp_path / "grouped" / "m"
    outside.mkdir(parents=True)
    descr = yaml.safe_load((mdir / "model.yaml").read_text())
    descr["args"]["weights"] = "../../shared/model.keras"
    (outside / "model.yaml").write_text(yaml.safe_dump(descr))
    spec = write_kipoi_spec(outside, tmp_path / "spec_abs", target="down")
    cfg = read_config(spec)
    assert cfg["model"] == str(outside.resolve()) and not (spec / "wrapped_model").exists()
    assert cfg["targets"] == ["down"] and cfg["target_index"] == [1]
    model_yaml = yaml.safe_load((spec / "model.yaml").read_text())
    assert model_yaml["type"] == "custom" and set(ID_COLUMNS) < set(model_yaml["schema"]["targets"])


SIM = REPO / "model_specs" / "sim_keras"


@pytest.mark.skipif(not (SIM / "model.yaml").exists() or not (REPO / "example_vcfs" / "sim").is_dir(),
                    reason="model_specs/sim_keras and example_vcfs/sim not built yet")
def test_shipped_sim_model_kipoi_test_and_predict_equal_score_variants(tmp_path):
    spec = write_kipoi_spec(SIM, tmp_path / "sim_spec", n_refs=2, n_example=4)
    n = sum(1 for ln in (spec / "example_files" / "example.vcf").read_text().splitlines()
            if ln and not ln.startswith("#"))
    assert n == 4
    src = next((REPO / "example_vcfs" / "sim").glob("*.vcf*"))
    first = [ln for ln in src.read_text().splitlines() if ln and not ln.startswith("#")][:4]
    assert (spec / "example_files" / "example.vcf").read_text().splitlines()[-4:] == first
    _kipoi("test", spec, "--source", "dir", cwd=tmp_path)
    # the whole simulated VCF through kipoi predict == score_variants (same per-variant seeds)
    fasta = REPO / "example_vcfs" / "sim" / "sim_contigs.fa"
    got = _predict(spec, src, fasta, tmp_path / "sim.tsv", tmp_path, 5)
    want = kipoi_dfim.score_variants(SIM, src, fasta, n_refs=2, batch_size=16, quiet=True)
    assert list(got["variant_id"]) == list(want["variant_id"].astype(str))
    assert list(got["status"]) == list(want["status"])
    for c in ("max_abs_fis", "fis_at_max", "ref_pred", "alt_pred", "logit"):
        # logit = logit(alt) - logit(ref) of float32 probabilities: batch-shape rounding reaches ~1e-5 absolute
        np.testing.assert_allclose(got[c], want[c].astype(float), rtol=2e-5, atol=1e-4 if c == "logit" else 1e-6,
                                   err_msg=c)
