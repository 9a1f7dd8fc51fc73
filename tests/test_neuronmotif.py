"""NeuronMotif (issue 17): substructures, gradients, and CRMs recovered from models with a known answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import kipoi_dfim
from kipoi_dfim.backend.introspect import probe
from kipoi_dfim.cli import main
from kipoi_dfim.errors import InputError, UnsupportedModelError
from kipoi_dfim.motifs import MotifSet, load_motifs, read_meme, tomtom
from kipoi_dfim.neuronmotif import CRM, interpret_neurons, layer1
from kipoi_dfim.neuronmotif.interpret import NeuronResult
from kipoi_dfim.neuronmotif.match import match_segments, motif_dictionary
from kipoi_dfim.neuronmotif.ppm import binned_ppm, information_content, onehot
from kipoi_dfim.neuronmotif.segment import Segment, segment
from kipoi_dfim.neuronmotif.syntax import syntax_tree, tree_lines
from kipoi_dfim.simulation import motif_pwm

SIM_TORCH = "model_specs/sim_torch"
SIM_KERAS = "model_specs/sim_keras"
MOTIF_A, MOTIF_B = "TTGACGCA", "GGCATTAC"


@pytest.fixture(scope="module")
def jaspar() -> MotifSet:
    return load_motifs()


def _with(db: MotifSet, ids: list[str], ppms: list[np.ndarray]) -> MotifSet:
    """JASPAR plus the planted motifs: Tomtom's null needs a whole database of targets."""
    return MotifSet(db.ids + ids, db.names + ids, db.ppms + ppms)


def _two_motif_cnn():
    """Layer 1: exact-ish detectors of A and B (>= 7 of 8 matches); max-pool 2; layer 2: CN = A or B.

    The layer-2 CN sees 9 bp and fires for A or B at either of the two shifts its max-pool merges: four modes.
    """
    net = nn.Sequential(nn.Conv1d(4, 2, 8), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(2, 1, 1), nn.ReLU())
    with torch.no_grad():
        for i, m in enumerate((MOTIF_A, MOTIF_B)):
            net[0].weight[i] = torch.from_numpy(2 * onehot([m])[0].T - 1)
            net[0].bias[i] = -5.0
        net[3].weight[:] = 1.0
        net[3].bias[:] = -0.5
    return kipoi_dfim.load_model(net, seq_len=9, layout="(4,L)", output="raw")


@pytest.mark.parametrize("path", [SIM_TORCH, SIM_KERAS])
def test_substructure_of_sim_models(path):
    m = kipoi_dfim.load_model(path)
    sub = probe(m, 2).substructure
    # conv 7 -> pool 2 -> conv 9: RF = 7 + (2 - 1) * 1 + (9 - 1) * 2 = 24 bp
    assert [(c.kind, c.size, c.stride) for c in sub.chain] == [("conv", 7, 1), ("pool", 2, 2), ("conv", 9, 1)]
    assert (sub.receptive_field, sub.n_neurons) == (24, 16)
    assert probe(m, 1).receptive_field == 7
    with pytest.raises(InputError, match="--layer 3"):
        probe(m, 3)


def test_substructure_of_converted_keras1_model():
    sub = probe(kipoi_dfim.load_model("model_specs/tal_gata_k562"), 3).substructure
    assert sub.receptive_field == 28 and sub.n_neurons == 25 and not sub.pools  # 1 + 3 * 9


@pytest.mark.parametrize("path", [SIM_TORCH, SIM_KERAS])
def test_neuron_gradient_matches_finite_differences(path):
    p = probe(kipoi_dfim.load_model(path), 2)
    rng = np.random.default_rng(1)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (6, p.receptive_field))]
    # a small move of one base column per sequence (random directions on every column cross ReLU/max-pool kinks)
    d = np.zeros_like(x)
    d[np.arange(6), rng.integers(0, p.receptive_field, 6)] = rng.normal(size=(6, 4))
    h = 1e-3
    fd = (p.values(x + h * d)[:, 5] - p.values(x - h * d)[:, 5]) / (2 * h)
    np.testing.assert_allclose((p.gradient(x, 5) * d).sum(axis=(1, 2)), fd, rtol=2e-3, atol=2e-3)


def test_pool_inputs_are_the_relu_maps():
    m = kipoi_dfim.load_model(SIM_TORCH)
    p = probe(m, 2)
    x = np.eye(4, dtype=np.float32)[np.random.default_rng(2).integers(0, 4, (3, 24))]
    net = m.raw_model.module
    with torch.no_grad():
        want = net[1](net[0](torch.from_numpy(x).permute(0, 2, 1))).permute(0, 2, 1).numpy()
    np.testing.assert_allclose(p.pool_inputs(x, 0), want, rtol=1e-6)


def test_unsupported_architecture_is_named():
    net = nn.Sequential(nn.Conv1d(4, 3, 5, padding=2), nn.ReLU(), nn.Conv1d(3, 2, 3))
    m = kipoi_dfim.load_model(net, seq_len=20, layout="(4,L)")
    with pytest.raises(UnsupportedModelError, match="padding"):
        probe(m, 2)
    net = nn.Sequential(nn.Conv1d(4, 3, 5), nn.AvgPool1d(2), nn.Conv1d(3, 2, 3))
    with pytest.raises(UnsupportedModelError, match="AvgPool1d"):
        probe(kipoi_dfim.load_model(net, seq_len=20, layout="(4,L)"), 2)


def test_binned_ppm_weights_bins_by_mean_activation():
    x = onehot(["AA", "CC", "CA"])
    # bins of (0, 4] with 2 bins: "AA" (v=1) alone in bin 1, "CC" and "CA" (v=4, 3) in bin 2 (mean 3.5)
    got = binned_ppm(x, np.array([1.0, 4.0, 3.0]), n_bins=2)
    bin1 = np.array([[1, 0, 0, 0], [1, 0, 0, 0]])
    bin2 = np.array([[0, 1, 0, 0], [0.5, 0.5, 0, 0]])
    np.testing.assert_allclose(got, (1.0 * bin1 + 3.5 * bin2) / 4.5)


def test_segments_cut_at_one_bit_of_smoothed_ic():
    ppm = np.full((12, 4), 0.25)
    ppm[3:8] = onehot(["GATAA"])[0] * 0.97 + 0.0075
    segs = segment(ppm)
    assert [(s.start, s.end, s.consensus) for s in segs] == [(3, 8, "GATAA")]
    assert segs[0].mean_ic == pytest.approx(information_content(ppm[3:8]).mean())


def test_demixing_recovers_both_planted_motifs_where_stacking_does_not(jaspar):
    res = interpret_neurons(_two_motif_cnn(), 2, [0], progress=False, population=300)[0]
    db = _with(jaspar, ["A", "B"], [onehot([MOTIF_A])[0] * 0.9 + 0.025, onehot([MOTIF_B])[0] * 0.9 + 0.025])
    queries = [c.ppm for c in res.crms] + [res.stacked_ppm]
    df = tomtom(queries, db, n_nearest=None)
    best = {t: df[df.target_id == t].groupby("query").q.min() for t in ("A", "B")}
    n = len(res.crms)
    # every planted motif is the significant match of some demixed CRM ...
    assert best["A"].iloc[:n].min() < 0.01 and best["B"].iloc[:n].min() < 0.01
    # ... and each CRM is one motif (4 modes: A or B at either pooled shift)
    assert res.groups >= 2 and n == 4
    assert sorted(int(best["A"][i] < 0.01) + 2 * int(best["B"][i] < 0.01) for i in range(n)) == [1, 1, 2, 2]
    # stacking everything into one PPM recovers neither
    assert best["A"][n] > 0.01 and best["B"][n] > 0.01
    assert all(c.quality == pytest.approx(1.0) for c in res.crms)
    # segments are the whole 8-bp motifs; unmatched in JASPAR, the two copies of each motif share one label, and
    # the syntax tree is the CN's grammar: A or B, each at pooled shifts 0-1
    match_segments([res], jaspar)
    assert sorted(s.end - s.start for c in res.crms for s in c.segments) == [8, 8, 8, 8]
    branches = {b["motif"]: (sorted(b["crms"]), b["start"]) for b in syntax_tree(res)["children"]}
    assert sorted(branches) == [f"novel:{MOTIF_B}", f"novel:{MOTIF_A}"]
    assert sorted(v[0] for v in branches.values()) == [[0, 1], [2, 3]]
    assert all(v[1] == [0, 1] for v in branches.values())


def test_same_seed_same_crms_whatever_the_batch_size():
    a = interpret_neurons(_two_motif_cnn(), 2, [0], progress=False, population=100, batch_size=7)[0]
    b = interpret_neurons(_two_motif_cnn(), 2, [0], progress=False, population=100, batch_size=256)[0]
    assert len(a.crms) == len(b.crms)
    for x, y in zip(a.crms, b.crms, strict=True):
        np.testing.assert_allclose(x.ppm, y.ppm, atol=1e-6)


def _planted_hits(path, jaspar):
    res = interpret_neurons(path, 1, progress=False)
    db = _with(jaspar, ["GATA", "EBOX"], [motif_pwm("gata"), motif_pwm("tal1")])
    df = tomtom([r.crms[0].ppm for r in res], db, n_nearest=None)
    return res, df


def test_sim_torch_layer1_recovers_gata_and_ebox(jaspar):
    res, df = _planted_hits(SIM_TORCH, jaspar)
    gata = df[df.target_id == "GATA"].sort_values("p").iloc[0]
    ebox = df[df.target_id == "EBOX"].sort_values("p").iloc[0]
    assert gata.p < 0.01 and ebox.p < 0.01 and ebox.q < 0.05
    assert "GATA" in res[gata["query"]].crms[0].consensus  # WGATAR
    assert "CAGCTG" in res[ebox["query"]].crms[0].consensus


def test_sim_keras_layer1_recovers_gata(jaspar):
    res, df = _planted_hits(SIM_KERAS, jaspar)
    gata = df[df.target_id == "GATA"].sort_values("p").iloc[0]
    con = res[gata["query"]].crms[0].consensus
    assert gata.p < 0.05 and ("AGATA" in con or "TATCT" in con)
    # its best JASPAR match is a GATA factor
    top = df[df["query"] == gata["query"]].sort_values("p").iloc[0]
    assert "GATA" in top.target_name.upper()


def test_cli_writes_meme_tsv_and_html(tmp_path):
    out = tmp_path / "nm"
    assert main(["neuron-motifs", SIM_TORCH, "--layer", "1", "--neurons", "0,11", "-o", str(out), "--quiet"]) == 0
    tsv = pd.read_csv(out / "neuron_motifs.tsv", sep="\t")
    assert list(tsv.cn) == [0, 11] and (tsv.quality > 0.5).all()
    meme = read_meme(str(out / "layer1_cn11.meme"))
    assert meme.ids == ["L1_CN11_CRM0"] and meme.ppms[0].shape == (7, 4)
    assert "CAGCTG" in tsv.consensus[1]
    page = (out / "neuron_motifs.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "Syntax tree" in page
    assert main(["neuron-motifs", SIM_TORCH, "--layer", "1", "--neurons", "16", "-o", str(out)]) == 2


def test_sim_keras_layer2_cn_learned_the_gata_ebox_pair():
    """The grammar conv of sim_keras ANDs GATA and the E-box: its CRMs show both motifs, 7-14 bp apart."""
    res = interpret_neurons(SIM_KERAS, 2, [3], progress=False, population=160, max_generations=15)[0]
    pairs = []
    for c in res.crms:
        s = c.consensus
        g = max(s.find("TATCT"), s.find("AGATA"))
        e = s.find("CAGCTG") if "CAGCTG" in s else s.find("CAGC")
        if g >= 0 and e >= 0:
            pairs.append(abs(e - g))
    assert len(pairs) >= len(res.crms) // 2 and all(4 <= d <= 16 for d in pairs)


def test_tilted_layer1_sampling_gives_the_enumerated_ppm():
    """Exponential tilting leaves each activation bin's PPM as uniform sampling (here: enumeration) gives it."""
    p = probe(kipoi_dfim.load_model(SIM_TORCH), 1)
    w, b = layer1.affine_weights(p, [0, 8, 11])
    for c in range(3):
        xe, ve = layer1.sample_layer1(w[c], b[c], 0, np.random.default_rng(0), enumerate_max=4**7)
        xt, vt = layer1.sample_layer1(w[c], b[c], 20000, np.random.default_rng(0), enumerate_max=1)
        assert len(xe) < len(xt) and ve.max() == pytest.approx(vt.max())  # the tilt reaches the best sequence
        np.testing.assert_allclose(binned_ppm(xt, vt), binned_ppm(xe, ve), atol=0.05)
    # the weights read through gradients are the conv's
    np.testing.assert_allclose(w[0], kipoi_dfim.load_model(SIM_TORCH).raw_model.module[0].weight[0].numpy().T,
                               rtol=1e-5)


def _crm(i, segs):
    ppm = np.full((30, 4), 0.25)
    return CRM(i, 10, ppm, 1.0, 1.0, 1.0, [Segment(s, e, ppm[s:e], 1.5) for s, e in segs],
               [[{"label": lab, "q": 0.001, "p": 1e-5, "id": lab, "name": lab, "orientation": "+"}]
                for lab in ("GATA", "EBOX", "GATA")[:len(segs)]])


def test_syntax_tree_merges_shared_prefixes_with_gap_ranges():
    res = NeuronResult(2, 0, None, 30, 1.0, 1, [_crm(0, [(2, 8), (11, 17)]), _crm(1, [(4, 10), (15, 21)]),
                                                 _crm(2, [(2, 8)])], np.full((30, 4), 0.25))
    tree = syntax_tree(res)
    (gata,) = tree["children"]
    assert (gata["motif"], gata["start"], gata["crms"]) == ("GATA", [2, 4], [0, 1, 2])
    (ebox,) = gata["children"]
    assert (ebox["motif"], ebox["gap"], ebox["crms"]) == ("EBOX", [3, 5], [0, 1])
    assert tree_lines(tree)[1] == "    -[gap 3-5 bp]- EBOX @11-15 (CRMs 0,1)"
    assert motif_dictionary([res]) == {"GATA": [(0, 0, 0), (0, 1, 0), (0, 2, 0)], "EBOX": [(0, 0, 1), (0, 1, 1)]}


def test_segments_are_named_by_their_jaspar_motif(jaspar):
    i = jaspar.names.index("GATA1")
    ppm = np.full((24, 4), 0.25)
    w = len(jaspar.ppms[i])
    ppm[6:6 + w] = jaspar.ppms[i]
    crm = CRM(0, 100, ppm, 1.0, 1.0, 1.0, [Segment(6, 6 + w, jaspar.ppms[i], 1.5)])
    match_segments([NeuronResult(1, 0, None, 100, 1.0, 1, [crm], ppm)], jaspar)
    top = crm.matches[0][0]
    assert top["id"] == jaspar.ids[i] and top["q"] < 0.01


@pytest.mark.parametrize("layout", ["(4,L,1)", "(4,1,L)"])
def test_torch7_layouts_match_a_conv1d_twin(layout):
    """The zoo's torch7-converted layouts (Basset (4, L, 1) with (k, 1) kernels, DeepSEA (4, 1, L) with
    (1, k) kernels, torch7's Threshold as relu, Lambda guards fx cannot trace): the same substructure,
    neuron values and gradients as the Conv1d twin of the same weights."""

    class Guard(nn.Module):
        def forward(self, x):
            return x.view(1, -1) if 1 == len(x.size()) else x  # untraceable, like the converter's Lambda

    torch.manual_seed(5)
    twin = nn.Sequential(nn.Conv1d(4, 6, 5), nn.ReLU(), nn.MaxPool1d(3), nn.Conv1d(6, 4, 3), nn.ReLU()).eval()

    def k2(k):
        return (k, 1) if layout == "(4,L,1)" else (1, k)

    conv = [nn.Conv2d(4, 6, k2(5)), nn.Conv2d(6, 4, k2(3))]
    with torch.no_grad():
        for c, t in zip(conv, (twin[0], twin[3]), strict=True):
            c.weight.copy_(t.weight.unsqueeze(-1) if layout == "(4,L,1)" else t.weight.unsqueeze(2))
            c.bias.copy_(t.bias)
    net = nn.Sequential(conv[0], nn.Threshold(0, 0), nn.MaxPool2d(k2(3), k2(3)), conv[1], nn.ReLU(),
                        nn.Flatten(), nn.Sequential(Guard(), nn.Linear(4, 2))).eval()
    got = probe(kipoi_dfim.load_model(net, seq_len=15, layout=layout, output="raw"), 2)
    want = probe(kipoi_dfim.load_model(twin, seq_len=15, layout="(4,L)", output="raw"), 2)
    assert [(c.kind, c.size, c.stride) for c in got.substructure.chain] == [
        ("conv", 5, 1), ("pool", 3, 3), ("conv", 3, 1)]
    assert got.receptive_field == want.receptive_field == 13  # 5 + (3 - 1) + (3 - 1) * 3
    x = np.eye(4, dtype=np.float32)[np.random.default_rng(3).integers(0, 4, (5, 13))]
    np.testing.assert_allclose(got.values(x), want.values(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.gradient(x, 2), want.gradient(x, 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.conv_weight(), want.conv_weight(), rtol=0, atol=0)
