"""The simulated GATA-TAL1 grammar, the two Kipoi models trained on it and the simulated example VCF.

Oracles: the grammar's own definition (IUPAC consensus expanded independently with itertools), scikit-learn's
roc_auc_score, kipoiseq's one-hot encoder, pyfaidx/cyvcf2 readings of the example files, and the grammar's
causal structure (removing one motif of the pair must switch the models off; removing a distractor must not).
Nothing is trained here.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from kipoi_dfim import simulation as sim
from kipoi_dfim.sequence import decode, one_hot, reverse_complement_str

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERAS_DIR = os.path.join(ROOT, "model_specs", "sim_keras")
TORCH_DIR = os.path.join(ROOT, "model_specs", "sim_torch")
EX_DIR = os.path.join(ROOT, "example_vcfs", "sim")
HELDOUT_SEED = 2024  # not used by the training scripts (1, 2, 3)

IUPAC = {"A": "A", "C": "C", "G": "G", "T": "T", "R": "AG", "Y": "CT", "S": "CG", "W": "AT", "K": "GT"}


def expand(consensus: str) -> set[str]:
    """All concrete sites of an IUPAC consensus and their reverse complements (an independent oracle)."""
    fwd = {"".join(p) for p in itertools.product(*(IUPAC[c] for c in consensus))}
    return fwd | {reverse_complement_str(s) for s in fwd}


SITES = {name: expand(c) for name, c in sim.MOTIFS.items()}


def scan(seq: str) -> list[tuple[str, int]]:
    """Every (motif, start) where ``seq`` spells a site of a motif, by brute force."""
    return sorted((name, i) for name, sites in SITES.items() for i in range(len(seq))
                  if seq[i:i + len(sim.MOTIFS[name])] in sites)


# ---------------------------------------------------------------- the grammar


@pytest.fixture(scope="module")
def heldout():
    return sim.simulate_dataset(500, seed=HELDOUT_SEED)


def test_placements_are_the_complete_truth(heldout):
    x, y, placements = heldout
    for xi, yi, sites in zip(x[:200], y[:200], placements[:200], strict=True):
        seq = decode(xi)
        assert scan(seq) == sorted((s.name, s.start) for s in sites)
        for s in sites:
            assert seq[s.start:s.end] == s.site
        names = [s.name for s in sites]
        if yi == 1:
            assert names.count("gata") == 1 and names.count("tal1") == 1
            (a, b), = sim.interacting_pairs(sites)
            assert sim.PAIR_SPACING[0] <= abs(a.centre - b.centre) <= sim.PAIR_SPACING[1]
        else:
            assert names.count("gata") + names.count("tal1") == 1
            assert sim.interacting_pairs(sites) == []


def test_distractors_carry_no_label_information_and_background_gc(heldout):
    x, y, placements = heldout
    for name in sim.DISTRACTORS:
        has = np.array([any(s.name == name for s in p) for p in placements])
        for cls in (0, 1):
            frac = has[y == cls].mean()
            assert abs(frac - 0.5) < 0.1, (name, cls, frac)  # ~ 4.5 binomial s.d. at n ~ 250
    mask = np.ones(x.shape[:2], dtype=bool)
    for i, p in enumerate(placements):
        for s in p:
            mask[i, s.start:s.end] = False
    gc = x[mask][:, 1:3].sum() / mask.sum()
    assert abs(gc - sim.GC) < 0.01


def test_simulation_is_seeded_per_sequence():
    a, ya, pa = sim.simulate_dataset(30, seed=5)
    b, yb, pb = sim.simulate_dataset(10, seed=5)
    np.testing.assert_array_equal(a[:10], b)
    assert pa[:10] == pb and list(ya[:10]) == list(yb)
    c, _, _ = sim.simulate_dataset(10, seed=6)
    assert not np.array_equal(b, c)


def test_embed_motif_and_ablate_site():
    seq = "A" * 20
    assert sim.embed_motif(seq, "CAGCTG", 3) == "AAACAGCTGAAAAAAAAAAA"
    np.testing.assert_array_equal(sim.embed_motif(one_hot(seq), "CAGCTG", 3), one_hot("AAACAGCTGAAAAAAAAAAA"))
    with pytest.raises(ValueError):
        sim.embed_motif(seq, "CAGCTG", 15)
    ablated = sim.ablate_site(one_hot(seq), sim.MotifSite("tal1", 3, 9, "+", "CAGCTG"))
    np.testing.assert_allclose(ablated[3:9], np.tile([0.27, 0.23, 0.23, 0.27], (6, 1)), atol=1e-6)
    np.testing.assert_array_equal(ablated[:3], one_hot("AAA"))


def test_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # with ties
    assert sim.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


# ---------------------------------------------------------------- the models


@pytest.fixture(scope="module")
def models():
    kipoi = pytest.importorskip("kipoi")
    return {"keras": kipoi.get_model(KERAS_DIR, source="dir"), "torch": kipoi.get_model(TORCH_DIR, source="dir")}


def predict(models, name: str, x: np.ndarray) -> np.ndarray:
    """Probabilities (N,) of one model for one-hot (N, 200, 4), in the model's own layout."""
    inp = x if name == "keras" else np.ascontiguousarray(x.transpose(0, 2, 1))
    return np.asarray(models[name].predict_on_batch(inp.astype(np.float32))).ravel()


@pytest.mark.parametrize("name", ["keras", "torch"])
def test_model_auroc_on_fresh_data(models, heldout, name):
    from sklearn.metrics import roc_auc_score

    x, y, _ = heldout
    assert roc_auc_score(y, predict(models, name, x)) >= 0.95


def test_models_agree_on_the_positive_class(models, heldout):
    from scipy.stats import spearmanr

    x, y, _ = heldout
    pk, pt = predict(models, "keras", x), predict(models, "torch", x)
    for p in (pk, pt):
        assert p[y == 1].mean() > 0.8 and p[y == 0].mean() < 0.2
    assert ((pk > 0.5) == (pt > 0.5)).mean() > 0.9
    assert spearmanr(pk, pt).statistic > 0.7


@pytest.mark.parametrize("name", ["keras", "torch"])
def test_models_need_both_motifs_and_ignore_distractors(models, heldout, name):
    """The causal structure of the grammar: each motif of the pair is necessary, distractors are irrelevant."""
    x, y, placements = heldout
    pos = [i for i in np.flatnonzero(y == 1)[:100] if predict(models, name, x[i:i + 1])[0] > 0.5]
    for motif in sim.INTERACTING_PAIR:
        ablated = np.stack([sim.ablate_site(x[i], next(s for s in placements[i] if s.name == motif))
                            for i in pos])
        assert (predict(models, name, ablated) < 0.5).mean() > 0.85, motif  # measured 0.93-0.99
    with_distractor = [(i, s) for i in pos for s in placements[i] if s.name in sim.DISTRACTORS]
    before = predict(models, name, x[[i for i, _ in with_distractor]])
    after = predict(models, name, np.stack([sim.ablate_site(x[i], s) for i, s in with_distractor]))
    assert np.median(np.abs(after - before)) < 0.01
    assert np.abs(after - before).max() < 0.2


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


@pytest.mark.parametrize("name", ["keras", "torch"])
def test_models_carry_the_planted_epistasis(models, heldout, name):
    """Double-ablation epistasis on the logit, f(AB) - f(A) - f(B) + f(0): large for the GATA-TAL1 pair,
    about zero for an interacting motif with a distractor. This is the ground truth DFIM should recover."""
    x, y, placements = heldout
    pair_eps, distractor_eps = [], []
    for i in np.flatnonzero(y == 1)[:60]:
        sites = {s.name: s for s in placements[i]}
        for partner, out in (("tal1", pair_eps), ("ctcf", distractor_eps), ("ap1", distractor_eps)):
            if partner not in sites:
                continue
            g, t = sites["gata"], sites[partner]
            both = sim.ablate_site(sim.ablate_site(x[i], g), t)
            f = logit(predict(models, name, np.stack([x[i], sim.ablate_site(x[i], t),
                                                      sim.ablate_site(x[i], g), both])))
            out.append(f[0] - f[1] - f[2] + f[3])
    assert np.median(pair_eps) > 3
    assert np.median(np.abs(distractor_eps)) < 0.1


@pytest.mark.parametrize("model_dir,layout", [(KERAS_DIR, (200, 4)), (TORCH_DIR, (4, 200))])
def test_kipoi_dataloader_encodes_like_kipoi_dfim(models, model_dir, layout):
    """The model dir's own dataloader yields the schema layout; its one-hot equals ours on the example FASTA."""
    pyfaidx = pytest.importorskip("pyfaidx")
    name = "keras" if model_dir == KERAS_DIR else "torch"
    ex = os.path.join(model_dir, "example_files")
    dl = models[name].default_dataloader(intervals_file=os.path.join(ex, "intervals.bed"),
                                         fasta_file=os.path.join(ex, "sim_sequences.fa"))
    batch = dl.load_all()["inputs"]
    bed = pd.read_csv(os.path.join(ex, "intervals.bed"), sep="\t", header=None)
    fa = pyfaidx.Fasta(os.path.join(ex, "sim_sequences.fa"))
    expected = one_hot([str(fa[c][s:e]) for c, s, e in zip(bed[0], bed[1], bed[2], strict=True)])
    assert batch.shape == (len(bed), *layout) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch if name == "keras" else batch.transpose(0, 2, 1), expected)
    labels = bed[3].to_numpy()
    assert ((predict(models, name, expected) > 0.5) == labels).mean() >= 0.9


@pytest.mark.parametrize("model_dir", [KERAS_DIR, TORCH_DIR])
def test_kipoi_test_passes(model_dir, tmp_path):
    kipoi_bin = os.path.join(os.path.dirname(sys.executable), "kipoi")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    res = subprocess.run([kipoi_bin, "test", model_dir, "--source", "dir"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Successfully ran test_predict" in res.stdout + res.stderr
    assert not os.path.exists(os.path.join(model_dir, "downloaded"))  # nothing fetched from the network


# ---------------------------------------------------------------- the simulated example VCF


@pytest.fixture(scope="module")
def examples():
    cyvcf2 = pytest.importorskip("cyvcf2")
    pyfaidx = pytest.importorskip("pyfaidx")
    fasta = pyfaidx.Fasta(os.path.join(EX_DIR, "sim_contigs.fa"))
    vcf = cyvcf2.VCF(os.path.join(EX_DIR, "sim_variants.vcf"))
    header_contigs = dict(zip(vcf.seqnames, vcf.seqlens, strict=True))
    records = [(v.CHROM, v.POS, v.ID, v.REF, list(v.ALT)) for v in vcf]
    truth = pd.read_csv(os.path.join(EX_DIR, "sim_truth.tsv"), sep="\t", keep_default_na=False)
    truth = truth.rename(columns={"class": "cls"})  # "class" is not a namedtuple field name
    return fasta, header_contigs, records, truth


def test_vcf_header_records_and_truth_are_consistent(examples):
    fasta, header_contigs, records, truth = examples
    assert header_contigs == {k: len(fasta[k]) for k in fasta.keys()}
    assert 45 <= len(records) <= 55
    order = {c: i for i, c in enumerate(header_contigs)}
    keys = [(order[c], p) for c, p, *_ in records]
    assert keys == sorted(keys)
    assert [r[2] for r in records] == list(truth["id"])
    assert len(set(truth["id"])) == len(truth)
    for (chrom, pos, vid, ref, alts), row in zip(records, truth.itertuples(), strict=True):
        assert (chrom, pos, ref, ",".join(alts)) == (row.chrom, row.pos, row.ref, row.alt)
        assert vid.rsplit("_", 1)[0].split("_")[0] in {"int", "lone", "distractor", "bg", "indel",
                                                         "multiallelic", "refmismatch", "spacer"}
        genome = str(fasta[chrom][pos - 1:pos - 1 + len(ref)])
        assert (genome == ref) == (row.cls != "ref_mismatch"), vid
        assert 100 <= pos - 1 <= len(fasta[chrom]) - 100  # a centred 200 bp window fits
    classes = truth["cls"].value_counts().to_dict()
    assert classes["interacting"] >= 10 and classes["background"] >= 5 and classes["distractor"] >= 4
    assert {"indel", "multiallelic", "ref_mismatch", "interacting_indel", "background_indel"} <= set(classes)


def test_truth_motifs_and_partners_match_the_fasta(examples):
    fasta, _, _, truth = examples
    for row in truth.itertuples():
        seq = str(fasta[row.chrom])
        hits = scan(seq)
        v0 = row.pos - 1
        if row.motif:
            s, e = int(row.motif_start) - 1, int(row.motif_end)
            assert s <= v0 < e and (row.motif, s) in hits
            alt = seq[:v0] + row.alt + seq[v0 + len(row.ref):]
            assert (row.motif, s) not in scan(alt)  # the ALT breaks the motif
        if row.cls in ("interacting", "interacting_indel"):
            lo, hi = int(row.partner_start_offset), int(row.partner_end_offset)
            assert -15 <= lo <= hi <= 15
            assert (row.partner, v0 + lo) in hits and {row.motif, row.partner} == set(sim.INTERACTING_PAIR)
        if row.cls in ("background", "distractor"):
            pair = [i for n, i in hits if n in sim.INTERACTING_PAIR]
            assert min(abs(v0 - i) for i in pair) >= 30
            # the whole pair still lies in the variant's 200 bp window
            assert v0 - 100 <= min(pair) and max(pair) + 6 <= v0 + 100
        if row.cls == "background":
            assert all(abs(v0 - i) >= 20 for _, i in hits)


def test_models_see_the_planted_interactions_in_the_examples(models, examples):
    """ISM on the example SNVs: breaking an interacting motif kills the prediction, background does nothing."""
    fasta, _, _, truth = examples
    snv = truth[truth["cls"].isin(["interacting", "lone", "distractor", "background"])]
    ref = [str(fasta[c][p - 101:p + 99]) for c, p in zip(snv["chrom"], snv["pos"], strict=True)]
    alt = [r[:100] + a + r[101:] for r, a in zip(ref, snv["alt"], strict=True)]
    cls = snv["cls"].to_numpy()
    for name in ("keras", "torch"):
        pr, pa = predict(models, name, one_hot(ref)), predict(models, name, one_hot(alt))
        d = logit(pa) - logit(pr)
        assert (pr[cls != "lone"] > 0.9).all(), name  # every window holds the pair
        assert (pr[cls == "lone"] < 0.1).all(), name
        assert (d[cls == "interacting"] < -3).all(), name
        assert (np.abs(d[np.isin(cls, ["background", "distractor"])]) < 0.5).all(), name
