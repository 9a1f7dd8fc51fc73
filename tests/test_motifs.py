"""kipoi_dfim.motifs: JASPAR offline, MEME/JASPAR files, PWM scan vs memelite's FIMO, Tomtom, and the own/partner
annotation recovering the planted GATA / E-box grammar of the shipped sim example."""

from __future__ import annotations

import socket
import sqlite3
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest

from kipoi_dfim import motifs as M
from kipoi_dfim.cli import main as cli_main
from kipoi_dfim.errors import InputError

SIM = "example_vcfs/sim"


@pytest.fixture(scope="module")
def jaspar() -> M.MotifSet:
    return M.load_motifs()


def _family(motifs: M.MotifSet, label: str) -> str:
    index = {motifs.label(i): i for i in range(len(motifs))}
    i = index.get(label)
    return "" if i is None else f"{motifs.tf_class[i]} | {motifs.tf_family[i]}"


def test_jaspar_loads_offline_and_matches_the_sqlite_counts(monkeypatch):
    """No socket may be opened while loading; Gata1's matrix equals the raw counts in the bundled database."""
    import pyjaspar
    from pyjaspar.utils import get_jaspardb_path

    def no_network(*a, **k):
        raise AssertionError("load_motifs tried to open a network socket")

    monkeypatch.setattr(socket, "socket", no_network)
    M._load_jaspar_db.cache_clear()
    ms = M.load_motifs()
    monkeypatch.undo()
    assert ms.source == f"{pyjaspar.JASPAR_LATEST_RELEASE} CORE vertebrates"
    assert 900 <= len(ms) <= 1500  # 1,019 in JASPAR2026
    i = [k for k, mid in enumerate(ms.ids) if mid.startswith("MA0035.")][0]
    con = sqlite3.connect(get_jaspardb_path(pyjaspar.jaspar_releases[pyjaspar.JASPAR_LATEST_RELEASE]))
    (mid,) = con.execute("SELECT ID FROM MATRIX WHERE BASE_ID='MA0035' ORDER BY VERSION DESC LIMIT 1").fetchone()
    rows = con.execute("SELECT row, col, val FROM MATRIX_DATA WHERE ID=?", (mid,)).fetchall()
    counts = np.zeros((max(r[1] for r in rows), 4))
    for base, col, val in rows:
        counts[col - 1, "ACGT".index(base.upper())] = val
    np.testing.assert_allclose(ms.ppms[i], counts / counts.sum(1, keepdims=True), rtol=1e-12)
    assert ms.names[i].upper() == "GATA1" and "GATA" in ms.tf_family[i]
    assert len(M.load_motifs(collection="CORE", tax_group="insects")) < len(ms)
    with pytest.raises(InputError, match="unknown JASPAR release"):
        M.load_motifs(release="JASPAR1999")


def test_meme_roundtrip_and_memelite_reads_our_file(tmp_path, jaspar):
    from memelite.io import read_meme as memelite_read

    sub = jaspar.subset(range(5))
    path = tmp_path / "m.meme"
    M.write_meme(sub, str(path))
    back = M.read_meme(str(path))
    assert back.ids == sub.ids and back.names == sub.names
    for a, b in zip(back.ppms, sub.ppms, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-6)
    theirs = memelite_read(str(path))  # an independent reader: keys are "id name", values (4, W)
    assert list(theirs) == [f"{i} {n}" for i, n in zip(sub.ids, sub.names, strict=True)]
    for a, b in zip(theirs.values(), sub.ppms, strict=True):
        np.testing.assert_allclose(a.T, b, atol=2e-6)
    assert M.load_motifs(str(path)).ids == sub.ids


def test_bad_motif_files_name_the_line(tmp_path):
    bad = tmp_path / "bad.meme"
    bad.write_text("MEME version 4\n\nMOTIF X\nletter-probability matrix: alength= 4 w= 2\n"
                   "0.2 0.3 0.5 0\n0.2 x 0.5 0.3\n")
    with pytest.raises(InputError, match=r"bad.meme, line 6: expected 4 probabilities"):
        M.read_meme(str(bad))
    short = tmp_path / "short.meme"
    short.write_text("MOTIF X\nletter-probability matrix: alength= 4 w= 3\n0.2 0.3 0.5 0\n")
    with pytest.raises(InputError, match="w=3 but 1 matrix rows"):
        M.read_meme(str(short))
    empty = tmp_path / "empty.txt"
    empty.write_text("hello\n")
    with pytest.raises(InputError, match="empty.txt"):
        M.load_motifs(str(empty))


def test_jaspar_format_file(tmp_path):
    path = tmp_path / "m.jaspar"
    path.write_text(">MA9999.1 Toy\nA [ 8 0 1 ]\nC [ 0 0 1 ]\nG [ 2 10 1 ]\nT [ 0 0 7 ]\n")
    ms = M.load_motifs(str(path))
    assert ms.ids == ["MA9999.1"] and ms.names == ["Toy"] and ms.label(0) == "Toy(MA9999.1)"
    np.testing.assert_allclose(ms.ppms[0], [[0.8, 0, 0.2, 0], [0, 0, 1, 0], [0.1, 0.1, 0.1, 0.7]])


def test_best_site_matches_memelite_fimo(jaspar):
    """Scores equal FIMO's on the same smoothed matrices; p-values agree within FIMO's binning; the covering
    restriction equals filtering FIMO's per-site hits."""
    from memelite import fimo

    rng = np.random.default_rng(5)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 80)]
    pick = [jaspar.ids.index(m) for m in jaspar.ids if m.split(".")[0] in ("MA0035", "MA0139", "MA0099", "MA0500")]
    assert len(pick) == 4
    for k in pick:
        one = jaspar.subset([k])
        smooth = (one.ppms[0] + M.PSEUDOCOUNT) / (1 + 4 * M.PSEUDOCOUNT)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hits = fimo({"m": smooth.T}, x.T[None], threshold=1.0, eps=0.0)[0]
        best = M.best_site(x, one)
        top = hits.loc[hits["score"].idxmax()]
        assert best["score"] == pytest.approx(top["score"], abs=1e-4)
        assert (best["start"], best["strand"]) == (int(top["start"]), top["strand"])
        assert np.log10(best["p"]) == pytest.approx(np.log10(top["p-value"]), abs=0.15)
        a, b = 30, 31
        over = hits[(hits["start"] < b) & (hits["end"] > a)]
        cov = M.best_site(x, one, covering=(a, b))
        assert cov["score"] == pytest.approx(over["score"].max(), abs=1e-4)
        assert cov["start"] <= a < cov["end"]


def test_tomtom_finds_a_motif_and_its_reverse_complement(jaspar):
    k = [i for i, m in enumerate(jaspar.ids) if m.startswith("MA0035.")][0]
    ppm = jaspar.ppms[k]
    df = M.tomtom([ppm, ppm[::-1, ::-1]], jaspar, n_nearest=5)
    first = df.groupby("query").head(1).set_index("query")
    assert first.loc[0, "target"] == k and first.loc[0, "orientation"] == "+"
    assert first.loc[1, "target"] == k and first.loc[1, "orientation"] == "-"
    assert (first["p"] < 1e-8).all()
    assert np.allclose(df["E"], df["p"] * len(jaspar)) and (df["q"] >= df["p"] - 1e-15).all()
    assert df.groupby("query")["p"].apply(lambda p: p.is_monotonic_increasing).all()


@pytest.fixture(scope="module")
def sim_maps(tmp_path_factory) -> str:
    """The current pipeline on the shipped sim example (sim_torch, DeepLIFT, seed 0)."""
    out = tmp_path_factory.mktemp("sim")
    rc = cli_main(["score-variants", "model_specs/sim_torch", "--vcf", f"{SIM}/sim_variants.vcf", "--fasta",
                   f"{SIM}/sim_contigs.fa", "-o", str(out / "sim.vcf"), "--tsv", str(out / "sim.tsv"), "--maps",
                   str(out / "sim.h5"), "--quiet"])
    assert rc == 0
    return str(out / "sim.h5")


def test_sim_grammar_recovered_as_own_and_partner_motifs(sim_maps, jaspar):
    """For the 20 interacting variants (an SNV in GATA or in the TAL1 E-box, partner within +-15 bp) the own
    motif is of the broken site's family and the partner of the other one; measured 20/20 and 20/20, partner
    span inside the planted partner for 20/20 (sim_keras: 20/20, 18/20)."""
    with h5py.File(sim_maps) as f:
        center = int(np.flatnonzero(f["offsets"][:] == 0)[0])
        ann = M.annotate_variants(f["seq_ref"][:], f["seq_alt"][:], f["fis"][:], center, jaspar,
                                  window=int(f.attrs["window"]))
        ann["id"] = f["variant_id"].asstr()[:]
    truth = pd.read_csv(f"{SIM}/sim_truth.tsv", sep="\t")
    d = ann.merge(truth, on="id")
    inter = d[d["class"] == "interacting"]
    assert len(inter) == 20

    def is_family(label: str, motif: str) -> bool:
        fam = _family(jaspar, label)
        return "GATA" in fam if motif == "gata" else "bHLH" in fam  # TAL1 E-box CAGCTG: bHLH (TAL/TCF/MyoD)

    own = sum(is_family(r.own_motif_ref, r.motif) for r in inter.itertuples())
    partner = sum(is_family(r.partner_motif, r.partner) for r in inter.itertuples())
    overlap = (np.minimum(inter.partner_end, inter.partner_end_offset)
               - np.maximum(inter.partner_offset, inter.partner_start_offset) + 1)
    assert own >= 19 and partner >= 19, (own, partner)
    assert (overlap >= 4).sum() >= 19
    assert (inter["own_delta"] < 0).sum() >= 18  # the ALT breaks the REF motif
    # the variants without an interaction have (almost) no partner FIS: >= 50x below the weakest interacting one
    quiet = d[d["class"].isin(["background", "distractor"])]
    assert np.abs(quiet["partner_fis"]).max() * 50 < np.abs(inter["partner_fis"]).min()


def test_annotate_variant_is_one_row_of_annotate_variants(sim_maps, jaspar):
    with h5py.File(sim_maps) as f:
        center = int(np.flatnonzero(f["offsets"][:] == 0)[0])
        ref, alt, fis = f["seq_ref"][:4], f["seq_alt"][:4], f["fis"][:4]
    many = M.annotate_variants(ref, alt, fis, center, jaspar, window=15)
    one = M.annotate_variant(ref[2], alt[2], fis[2], center, jaspar, window=15)
    assert list(one) == list(M.ANNOTATION_COLUMNS)
    for c in M.ANNOTATION_COLUMNS:
        assert one[c] == many.loc[2, c] or (pd.isna(one[c]) and pd.isna(many.loc[2, c]))
    # the score columns are the named motif's best site covering the variant (best_site, checked against FIMO)
    index = {jaspar.label(i): i for i in range(len(jaspar))}
    checked = 0
    for i in range(4):
        for allele, seq in (("ref", ref[i]), ("alt", alt[i])):
            label = many.loc[i, f"own_motif_{allele}"]
            if label:
                site = M.best_site(seq, jaspar.subset([index[label]]), covering=(center, center + 1))
                assert many.loc[i, f"own_score_{allele}"] == pytest.approx(site["score"], abs=1e-4)
                checked += 1
    assert checked >= 4
    with pytest.raises(InputError, match="must be"):
        M.annotate_variants(ref, alt[:, :10], fis, center, jaspar)


def test_plot_names_the_motifs_and_shows_progress_for_several_variants(sim_maps, jaspar, tmp_path, capfd):
    import argparse

    from matplotlib.image import imread

    from kipoi_dfim import plot

    args = argparse.Namespace(model="sim_torch", targets=None, maps=sim_maps, variant="int_tal1_1", window=15,
                              vcf=None, fasta=None)  # fmt: skip
    fig = plot.figure_for(args, jaspar)
    own, partner = fig.axes[0].get_title(loc="right"), fig.axes[2].get_title(loc="right")
    own_label = own.split(": ", 1)[1].split(" (")[0]
    partner_label = partner.split(": ", 1)[1].split(" (")[0]
    assert "bHLH" in _family(jaspar, own_label) and "GATA" in _family(jaspar, partner_label)
    assert partner.endswith("at -10..-6 bp")  # the planted GATA site is at -10..-5
    spans = [p for p in fig.axes[2].patches if p.get_gid() == plot.MOTIF_GID]
    assert len(spans) == 1 and spans[0].get_x() == pytest.approx(-10.5)

    out = tmp_path / "f.png"
    capfd.readouterr()
    assert cli_main(["plot", "sim_torch", "--variant", "int_gata_1", "--variant", "int_tal1_1", "--maps", sim_maps,
                     "-o", str(out)]) == 0
    err = capfd.readouterr().err
    assert "plot: 100%" in err and "2/2" in err and "variant/s" in err
    assert imread(tmp_path / "f.int_gata_1.png").shape[0] > 500 and (tmp_path / "f.int_tal1_1.png").exists()
    assert cli_main(["plot", "sim_torch", "--variant", "int_gata_1", "--variant", "int_tal1_1", "--maps", sim_maps,
                     "-o", str(tmp_path / "{variant}.pdf"), "--quiet", "--motifs", "none"]) == 0
    assert capfd.readouterr().err == "" and (tmp_path / "int_gata_1.pdf").exists()
