"""Figures: what is drawn (tracks, glyph heights, the variant mark, heatmap cells, labels), not only that a file
exists. Inputs are maps files written here with h5py, following docs/architecture.md to the letter."""

from __future__ import annotations

import argparse
import os

import h5py
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import AxesImage, imread
from matplotlib.patches import PathPatch

from kipoi_dfim import plot
from kipoi_dfim.cli import main
from kipoi_dfim.errors import InputError

# logomaker's "classic" colours identify the letter of a glyph
CLASSIC = {"A": (0.0, 0.5, 0.0), "C": (0.0, 0.0, 1.0), "G": (1.0, 0.65, 0.0), "T": (1.0, 0.0, 0.0)}
FLANK = 5
OFFSETS = np.arange(-FLANK, FLANK + 1)
D = len(OFFSETS)
V = FLANK  # index of the variant in a window


# ----------------------------------------------------------------------------------------------- builders
def _window(rng: np.random.Generator, base: str) -> np.ndarray:
    idx = rng.integers(0, 4, D)
    idx[V] = "ACGT".index(base)
    return np.eye(4, dtype=np.float32)[idx]


def make_maps(rows: list[dict], seed: int = 0, all_alts: bool = True, null: bool = True) -> dict:
    """Arrays for a maps file: rows give variant_id, chrom, pos, ref, alt, target, tsv_row; numbers are drawn
    from a seeded generator, and FIS / maxAbsFIS are derived from them exactly as the contract defines."""
    rng = np.random.default_rng(seed)
    m = len(rows)
    seq_ref = np.stack([_window(rng, r["ref"]) for r in rows])
    seq_alt = seq_ref.copy()
    for i, r in enumerate(rows):
        seq_alt[i, V] = np.eye(4)["ACGT".index(r["alt"])]
    scale = np.array([r.get("scale", 1.0) for r in rows], dtype=np.float32)[:, None, None]
    c_ref = rng.normal(size=(m, D, 1)).astype(np.float32) * scale
    c_alt = c_ref + rng.normal(scale=0.5, size=(m, D, 1)).astype(np.float32) * scale
    imp_ref, imp_alt = seq_ref * c_ref, seq_alt * c_alt
    fis = (imp_ref - imp_alt).sum(-1)
    fis[:, V] = np.nan
    pv = rng.uniform(0.2, 1.0, size=(m, D)).astype(np.float32)
    pv[:, [1, 7]] = 0.001  # offsets -4 and +2 significant
    pv[:, V] = np.nan
    if not null:
        pv[:] = np.nan
    data = {
        "variant_id": [r["variant_id"] for r in rows],
        "chrom": [r["chrom"] for r in rows],
        "ref": [r["ref"] for r in rows],
        "alt": [r["alt"] for r in rows],
        "target": [r["target"] for r in rows],
        "pos": np.array([r["pos"] for r in rows], dtype=np.int64),
        "tsv_row": np.array([r["tsv_row"] for r in rows], dtype=np.int64),
        "offsets": OFFSETS.astype(np.int64),
        "seq_ref": seq_ref,
        "seq_alt": seq_alt,
        "imp_ref": imp_ref.astype(np.float32),
        "imp_alt": imp_alt.astype(np.float32),
        "fis": fis.astype(np.float32),
        "fis_pval": pv,
        "max_abs_fis": np.nanmax(np.abs(fis), axis=1).astype(np.float32),
        "pval": np.array([r.get("pval", np.nan) for r in rows], dtype=np.float32),
        "qval": np.array([r.get("qval", np.nan) for r in rows], dtype=np.float32),
        "attrs": {"window": FLANK, "flank": FLANK, "method": "deeplift", "model": "toy", "seed": 0,
                  "targets": sorted({r["target"] for r in rows}), "version": "0.1.0"},  # fmt: skip
    }
    if all_alts:
        fa = rng.normal(size=(m, 3, D)).astype(np.float32)
        fa[:, :, V] = np.nan
        data["fis_all_alts"] = fa
        data["all_alts_bases"] = [[b for b in "ACGT" if b != r["ref"]] for r in rows]
    return data


def write_maps_h5(path: str, data: dict) -> str:
    """Write ``data`` as the contract says: vlen UTF-8 strings, int64 pos/tsv_row/offsets, float32 tracks."""
    s = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if k == "attrs":
                for ak, av in v.items():
                    f.attrs[ak] = av
            elif k in ("variant_id", "chrom", "ref", "alt", "target", "all_alts_bases"):
                f.create_dataset(k, data=np.array(v, dtype=object), dtype=s)
            else:
                f.create_dataset(k, data=v)
    return path


ROWS = [
    {"variant_id": "rs1", "chrom": "chr1", "pos": 100, "ref": "C", "alt": "G", "target": "t0", "tsv_row": 0},
    {"variant_id": "rs1", "chrom": "chr1", "pos": 100, "ref": "C", "alt": "G", "target": "t1", "tsv_row": 1,
     "scale": 3.0},
    {"variant_id": "rs3", "chrom": "chr2", "pos": 50, "ref": "A", "alt": "T", "target": "t0", "tsv_row": 3},
]  # fmt: skip


@pytest.fixture
def maps_data() -> dict:
    return make_maps(ROWS)


@pytest.fixture
def maps_h5(tmp_path, maps_data) -> str:
    return write_maps_h5(str(tmp_path / "maps.h5"), maps_data)


# ----------------------------------------------------------------------------------------------- inspectors
def glyphs(ax) -> list[tuple[float, str, float, float]]:
    """(x centre, letter, floor, ceiling) of each logomaker glyph drawn on ``ax``."""
    out = []
    for p in ax.patches:
        if not isinstance(p, PathPatch):
            continue
        ext = p.get_path().get_extents()
        rgb = tuple(round(float(c), 2) for c in p.get_facecolor()[:3])
        letter = next(b for b, col in CLASSIC.items() if np.allclose(col, rgb, atol=0.01))
        out.append(((ext.x0 + ext.x1) / 2, letter, ext.y0, ext.y1))
    return out


def glyph_heights(ax) -> dict[int, tuple[str, float]]:
    """offset -> (letter, signed height) for one-letter-per-position tracks."""
    out = {}
    for x, letter, lo, hi in glyphs(ax):
        off = int(round(x))
        assert off not in out, f"two glyphs at offset {off}"
        out[off] = (letter, hi if lo >= -1e-9 else lo)
    return out


def expected_track(values: np.ndarray) -> dict[int, tuple[str, float]]:
    """Independent oracle: the one non-zero base and its value at each offset of a (D, 4) array."""
    out = {}
    for i, off in enumerate(OFFSETS):
        nz = np.nonzero(np.abs(values[i]) > 1e-6)[0]
        if len(nz):
            assert len(nz) == 1
            out[int(off)] = ("ACGT"[nz[0]], float(values[i, nz[0]]))
    return out


def assert_track(ax, values: np.ndarray) -> None:
    got, want = glyph_heights(ax), expected_track(values)
    assert sorted(got) == sorted(want)
    for off, (letter, h) in want.items():
        assert got[off][0] == letter, f"offset {off}"
        assert got[off][1] == pytest.approx(h, abs=1e-4), f"offset {off}"


def variant_spans(ax) -> list[tuple[float, float]]:
    return [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches if p.get_gid() == plot.VARIANT_GID]


def heatmap_image(ax) -> AxesImage:
    ims = [c for c in ax.get_children() if isinstance(c, AxesImage)]
    assert len(ims) == 1
    return ims[0]


# ----------------------------------------------------------------------------------------------- tracks
def test_delta_tracks_letters_heights_and_variant_mark():
    imp_ref = np.zeros((D, 4))
    imp_alt = np.zeros((D, 4))
    bases = "ACGTGCCATGA"
    vals = np.array([0.5, -1.2, 0.3, 2.0, -0.4, 1.1, 0.7, -0.9, 0.25, 1.5, -0.6])
    for i, b in enumerate(bases):
        imp_ref[i, "ACGT".index(b)] = vals[i]
        imp_alt[i, "ACGT".index(b)] = vals[i] * (0.5 if i in (2, 8) else 1.0)  # only offsets -3, +3 change
    imp_alt[V] = 0
    imp_alt[V, 0] = -0.8  # the ALT base A at the variant
    pvalues = np.full(D, 0.5)
    pvalues[2] = 0.01  # offset -3 significant, +3 not

    fig = plot.plot_delta_tracks(imp_ref, imp_alt, offsets=OFFSETS, pvalues=pvalues, ref="C", alt="A", title="x")
    axes = fig.axes
    assert len(axes) == 4
    titles = [ax.get_title(loc="left") for ax in axes]
    assert titles[0].startswith("importance, reference") and titles[1].startswith("importance, alternate")
    assert titles[2].startswith("FIS") and titles[3] == "significant FIS (p < 0.05)"
    # variant shaded at offset 0 on every track, labelled ref>alt once
    for ax in axes:
        assert variant_spans(ax) == [(pytest.approx(-0.5), pytest.approx(0.5))]
    assert [t.get_text() for t in axes[0].texts if t.get_gid() == "variant_label"] == ["C>A"]
    assert axes[0].get_shared_x_axes().joined(axes[0], axes[3])
    # letters: one glyph per non-zero position, letter and height = the input
    assert_track(axes[0], imp_ref)
    assert_track(axes[1], imp_alt)
    fis = imp_ref - imp_alt
    fis[V] = 0  # not an interaction: the variant itself
    assert_track(axes[2], fis)
    assert glyph_heights(axes[2]) == {-3: ("G", pytest.approx(0.15)), 3: ("T", pytest.approx(0.125))}
    assert glyph_heights(axes[3]) == {-3: ("G", pytest.approx(0.15))}
    assert axes[3].get_xlabel() == "bp relative to the variant"


def test_delta_tracks_per_position_fis_on_observed_base_and_mask():
    rng = np.random.default_rng(3)
    seq = np.eye(4)[rng.integers(0, 4, D)]
    imp = seq * rng.normal(size=(D, 1))
    fis = np.linspace(-1, 1, D)
    fis[V] = np.nan
    mask = np.zeros(D, bool)
    mask[[0, 9]] = True
    fig = plot.plot_delta_tracks(imp, imp, fis=fis, seq=seq, fis_significant=mask)
    want = np.nan_to_num(fis)[:, None] * seq
    assert_track(fig.axes[2], want)
    assert_track(fig.axes[3], want * mask[:, None])
    assert fig.axes[3].get_title(loc="left") == "significant FIS"


def test_delta_tracks_without_null_says_so():
    imp = np.eye(4)[[0, 1, 2, 3, 0]] * 0.5
    fig = plot.plot_delta_tracks(imp, imp * 0.9, pvalues=np.full(5, np.nan))
    assert glyphs(fig.axes[3]) == []
    assert any(t.get_gid() == "no_null" for t in fig.axes[3].texts)
    assert variant_spans(fig.axes[3]) == [(pytest.approx(-0.5), pytest.approx(0.5))]  # default offsets centred


def test_delta_tracks_rejects_bad_shapes():
    with pytest.raises(InputError, match="imp_ref"):
        plot.plot_delta_tracks(np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(InputError, match="offsets"):
        plot.plot_delta_tracks(np.zeros((5, 4)), np.zeros((5, 4)), offsets=[0, 1])


# ----------------------------------------------------------------------------------------------- heatmaps
def test_position_base_labels():
    assert plot.position_base_labels([-1, 0, 2])[:5] == ["A@-1", "C@-1", "G@-1", "T@-1", "A@0"]
    assert plot.position_base_labels([-1, 0, 2])[-1] == "T@+2"
    assert plot.observed_base_labels([-1, 0, 1], np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])) == [
        "G@-1", "A@0", "N@+1"]  # fmt: skip


def test_plot_dfim_cells_labels_and_centred_colormap():
    rng = np.random.default_rng(1)
    offs = [-3, -2, -1]
    dfim = rng.normal(size=(3, 12))
    dfim[1, 4] = np.nan
    src = ["G>A@0", "G>C@0", "G>T@0"]
    fig = plot.plot_dfim(dfim, src, plot.position_base_labels(offs), title="DFIM")
    ax = fig.axes[0]
    im = heatmap_image(ax)
    arr = im.get_array()
    np.testing.assert_array_equal(arr.mask, np.isnan(dfim))
    np.testing.assert_allclose(arr.filled(np.nan), dfim)
    assert [t.get_text() for t in ax.get_xticklabels()][:5] == ["A@-3", "C@-3", "G@-3", "T@-3", "A@-2"]
    assert [t.get_text() for t in ax.get_yticklabels()] == src
    vmax = np.nanmax(np.abs(dfim))
    assert (im.norm.vmin, im.norm.vcenter, im.norm.vmax) == (pytest.approx(-vmax), 0, pytest.approx(vmax))
    assert len(ax.child_axes) == 1  # the colourbar
    assert ax.get_title(loc="left") == "DFIM"


def test_plot_dfim_label_mismatch():
    with pytest.raises(InputError, match="labels"):
        plot.plot_dfim(np.zeros((3, 8)), ["a", "b", "c"], plot.position_base_labels([0]))


def test_plot_aggregated_map_values_and_annotations():
    m = pd.DataFrame([[0.2, -0.5], [1.0, 0.0]], index=["GATA", "TAL1"], columns=["GATA", "TAL1"])
    counts = np.array([[10, 3], [7, 1]])
    fig = plot.plot_aggregated_map(m, counts=counts, title="mean FIS")
    ax = fig.axes[0]
    np.testing.assert_allclose(heatmap_image(ax).get_array(), m.to_numpy())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["GATA", "TAL1"]
    cells = {(t.get_position()): t.get_text() for t in ax.texts if t.get_gid() == "cell_value"}
    assert cells[(1, 0)] == "-0.5\nn=3" and cells[(0, 1)] == "1\nn=7" and len(cells) == 4
    assert heatmap_image(ax).norm.vmax == pytest.approx(1.0)


def test_plot_aggregated_map_from_aggregate_fis_table():
    from kipoi_dfim.fis import aggregate_fis, fis_table, marginalise_offsets

    m1 = np.array([[np.nan, 2.0], [1.0, np.nan]])
    m2 = np.array([[np.nan, 4.0], [-3.0, np.nan]])
    names = ["GATA", "TAL1"]
    table = pd.concat([fis_table(m1, names, names, seq="s1"), fis_table(m2, names, names, seq="s2")])
    fig = plot.plot_aggregated_map(aggregate_fis(table))
    ax = fig.axes[0]
    want = np.array([[np.nan, 3.0], [-1.0, np.nan]])  # means by hand
    np.testing.assert_allclose(heatmap_image(ax).get_array().filled(np.nan), want)
    assert [t.get_text() for t in ax.get_xticklabels()] == names == [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(t.get_text() for t in ax.texts if t.get_gid() == "cell_value") == ["-1\nn=2", "3\nn=2"]
    # pooled by distance: one row, columns = offsets target - source
    pos = fis_table(np.array([[0.5, 1.5, np.nan], [np.nan, 2.5, -1.0]]), [10, 11], [10, 11, 12])
    fig = plot.plot_aggregated_map(marginalise_offsets(pos), annotate=False)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1"]
    np.testing.assert_allclose(heatmap_image(ax).get_array(), [[1.5, 0.25]])  # (0.5+2.5)/2, (1.5-1)/2


# ----------------------------------------------------------------------------------------------- maps file
def test_plot_variant_from_h5_draws_the_stored_numbers(maps_h5, maps_data):
    fig = plot.plot_variant(maps_h5, "rs3")
    axes = [a for a in fig.axes if a.get_title(loc="left")]
    assert len(axes) == 5
    assert_track(axes[0], maps_data["imp_ref"][2])
    assert_track(axes[1], maps_data["imp_alt"][2])
    fis_letters = np.nan_to_num(maps_data["fis"][2])[:, None] * maps_data["seq_ref"][2]
    assert_track(axes[2], fis_letters)
    sig = fis_letters.copy()
    sig[[i for i in range(D) if i not in (1, 7)]] = 0
    assert_track(axes[3], sig)
    for ax in axes:
        assert variant_spans(ax) == [(pytest.approx(-0.5), pytest.approx(0.5))]
    im = heatmap_image(axes[4])
    np.testing.assert_allclose(im.get_array().filled(np.nan), maps_data["fis_all_alts"][2])
    assert [t.get_text() for t in axes[4].get_yticklabels()] == ["A>C@0", "A>G@0", "A>T@0"]
    labels = [t.get_text() for t in axes[4].get_xticklabels()]
    assert labels[V] == "A@0" and len(labels) == D
    assert labels[V + 2] == "ACGT"[int(maps_data["seq_ref"][2, V + 2].argmax())] + "@+2"
    # heatmap columns sit under the tracks' positions
    assert tuple(im.get_extent()[:2]) == (pytest.approx(-FLANK - 0.5), pytest.approx(FLANK + 0.5))
    assert "rs3" in fig.get_suptitle() and "chr2:50 A>T" in fig.get_suptitle()


def test_plot_variant_row_selection(maps_h5, maps_data):
    # several targets: the largest maxAbsFIS (t1, scaled x3) unless a target is asked for
    assert maps_data["max_abs_fis"][1] > maps_data["max_abs_fis"][0]
    fig = plot.plot_variant(maps_h5, "rs1")
    assert_track(fig.axes[0], maps_data["imp_ref"][1])
    fig = plot.plot_variant(maps_h5, "rs1", target="t0")
    assert_track(fig.axes[0], maps_data["imp_ref"][0])
    fig = plot.plot_variant(maps_h5, "rs1", target=0)  # index into attrs["targets"]
    assert_track(fig.axes[0], maps_data["imp_ref"][0])
    fig = plot.plot_variant(maps_data, "chr2:50:A:T")  # a dict works as well as a file
    assert_track(fig.axes[0], maps_data["imp_ref"][2])
    with pytest.raises(InputError, match=r"'rs2'.*rs1, rs3"):
        plot.plot_variant(maps_h5, "rs2")
    with pytest.raises(InputError, match="no target 't9'.*t0, t1"):
        plot.plot_variant(maps_h5, "rs1", target="t9")


def test_plot_variant_without_all_alts_has_four_tracks(tmp_path):
    path = write_maps_h5(str(tmp_path / "m.h5"), make_maps(ROWS[:1], all_alts=False, null=False))
    fig = plot.plot_variant(path, "rs1")
    assert len(fig.axes) == 4
    assert glyphs(fig.axes[3]) == []


def test_maps_file_missing_dataset(tmp_path, maps_data):
    del maps_data["fis_pval"]
    path = write_maps_h5(str(tmp_path / "bad.h5"), maps_data)
    with pytest.raises(InputError, match="missing dataset.*fis_pval"):
        plot.plot_variant(path, "rs1")


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_plot_from_maps_does_not_load_the_model(tmp_path, maps_h5, capsys):
    out = tmp_path / "fig.png"
    rc = main(["plot", str(tmp_path / "no_such_model"), "--variant", "rs3", "--maps", maps_h5, "-o", str(out)])
    assert rc == 0
    img = imread(out)
    assert img.ndim == 3 and img.shape[0] > 600 and img.shape[1] > 800
    assert sorted(os.listdir(tmp_path)) == ["fig.png", "maps.h5"]  # atomic: no temp file left
    pdf = tmp_path / "fig.pdf"
    assert main(["plot", "m", "--variant", "rs1", "--target", "t0", "--maps", maps_h5, "-o", str(pdf)]) == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert main(["plot", "m", "--variant", "rsX", "--maps", maps_h5, "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "rsX" in err and "rs1" in err
    assert not (tmp_path / "x.png").exists()
    assert main(["plot", "m", "--variant", "rs1", "--maps", maps_h5, "-o", str(tmp_path / "x.jpg")]) == 2
    assert main(["plot", "m", "--variant", "rs1", "-o", str(tmp_path / "x.png")]) == 2


def test_plot_variant_crops_to_the_window_and_marks_it(tmp_path):
    data = make_maps(ROWS[2:])
    data["attrs"]["window"] = 3  # targets +-3; tracks stored +-5 for context
    path = write_maps_h5(str(tmp_path / "m.h5"), data)
    fig = plot.plot_variant(path, "rs3")
    assert fig.axes[0].get_xlim() == (pytest.approx(-3.5), pytest.approx(3.5))
    keep = np.abs(OFFSETS) <= 3
    assert glyph_heights(fig.axes[0]) == {
        int(o): v for o, v in expected_track(data["imp_ref"][0]).items() if abs(o) <= 3
    }  # fmt: skip
    np.testing.assert_allclose(heatmap_image(fig.axes[4]).get_array().filled(np.nan), data["fis_all_alts"][0][:, keep])
    fig = plot.plot_variant(path, "rs3", flank=5)
    assert fig.axes[0].get_xlim() == (pytest.approx(-5.5), pytest.approx(5.5))
    lines = [ln.get_xdata()[0] for ln in fig.axes[2].lines if ln.get_gid() == "target_window"]
    assert sorted(lines) == [-3.5, 3.5]


# ----------------------------------------------------------------------------------------------- end to end
SEQ_LEN = 41  # the variant sits at index 20 of its window


def _product_model(seed: int = 5):
    """f(x) = (w1 . x) (w2 . x): grad x input gives C_X[t] = x_t . (w1_t s2 + w2_t s1), so the FIS of a
    target t given the variant is x_t . (w1_t (s2 - s2') + w2_t (s1 - s1')), known in closed form."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    w1, w2 = rng.normal(size=(2, SEQ_LEN, 4))

    class Product(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w1", torch.tensor(w1.T.copy(), dtype=torch.float32))  # (4, L) layout
            self.register_buffer("w2", torch.tensor(w2.T.copy(), dtype=torch.float32))

        def forward(self, x):
            return ((x * self.w1).sum((1, 2)) * (x * self.w2).sum((1, 2)))[:, None]

    from kipoi_dfim import load_model

    return load_model(Product().eval(), seq_len=SEQ_LEN, layout="(4,L)", output="raw"), w1, w2


def _oracle_fis(x: np.ndarray, xm: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    d1, d2 = (w1 * x).sum() - (w1 * xm).sum(), (w2 * x).sum() - (w2 * xm).sum()
    return (x * (w1 * d2 + w2 * d1)).sum(-1)


def test_end_to_end_score_variants_maps_to_figure_and_report(tmp_path):
    scoring = pytest.importorskip("kipoi_dfim.scoring")
    from kipoi_dfim import report
    from kipoi_dfim.sequence import one_hot

    model, w1, w2 = _product_model()
    rng = np.random.default_rng(11)
    chrom = "".join(rng.choice(list("ACGT"), 160))
    fa = tmp_path / "ref.fa"
    fa.write_text(">chr1\n" + "\n".join(chrom[i : i + 60] for i in range(0, len(chrom), 60)) + "\n")
    alts = {60: "ACGT"[("ACGT".index(chrom[59]) + 1) % 4], 100: "ACGT"[("ACGT".index(chrom[99]) + 2) % 4]}
    wrong = "ACGT"[("ACGT".index(chrom[79]) + 1) % 4]
    vcf = tmp_path / "v.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=160>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        f"chr1\t60\trsA\t{chrom[59]}\t{alts[60]}\t.\t.\t.\n"
        f"chr1\t80\trsBad\t{wrong}\tA\t.\t.\t.\n"  # REF does not match the FASTA: listed, not scored
        f"chr1\t100\trsC\t{chrom[99]}\t{alts[100]}\t.\t.\t.\n"
    )
    tsv, maps = str(tmp_path / "s.tsv"), str(tmp_path / "m.h5")
    scoring.score_variants(model, str(vcf), str(fa), tsv=tsv, maps=maps, window=5, method="grad_input",
                           all_alts=True, null_shuffles=8, quiet=True, return_table=False)  # fmt: skip

    for vid, pos in (("rsA", 60), ("rsC", 100)):
        x = one_hot(chrom[pos - 1 - 20 : pos + 20]).astype(np.float64)
        xa = x.copy()
        xa[20] = one_hot(alts[pos])[0]
        fis = _oracle_fis(x, xa, w1, w2)
        fig = plot.plot_variant(maps, vid)
        keep = slice(20 - 5, 20 + 6)  # the figure shows the +-5 bp targets
        want = fis[keep, None] * x[keep]
        want[5] = 0
        got = glyph_heights(fig.axes[2])
        assert sorted(got) == sorted(o for o in range(-5, 6) if o != 0 and abs(fis[20 + o]) > 1e-6)
        for o, (letter, h) in got.items():
            assert letter == chrom[pos - 1 + o] and h == pytest.approx(fis[20 + o], rel=1e-3, abs=1e-4)
        assert_track(fig.axes[0], x[keep] * (w1[keep] * (w2 * x).sum() + w2[keep] * (w1 * x).sum()))  # C_X
        # DFIM row of each mutant base = the same closed form with that base at the variant
        im = heatmap_image(fig.axes[4]).get_array().filled(np.nan)
        bases = [t.get_text()[2] for t in fig.axes[4].get_yticklabels()]
        assert sorted(bases) == sorted(set("ACGT") - {chrom[pos - 1]})
        for g, b in enumerate(bases):
            xm = x.copy()
            xm[20] = one_hot(b)[0]
            want_g = _oracle_fis(x, xm, w1, w2)[keep]
            want_g[5] = np.nan
            np.testing.assert_allclose(im[g], want_g, rtol=1e-3, atol=1e-4)
        assert variant_spans(fig.axes[4]) == [(pytest.approx(-0.5), pytest.approx(0.5))]

    # without --maps: the one variant is scored (grad_input), then drawn; same numbers as the closed form
    args = argparse.Namespace(
        model=model, source=None, targets=None, output="raw", vcf=str(vcf), fasta=str(fa), maps=None,
        variant=f"chr1:100:{chrom[99]}:{alts[100]}", out=str(tmp_path / "one.png"), window=5,
        method="grad_input", n_refs=10, null_shuffles=0, batch_size=7, seed=0, quiet=True,
    )  # fmt: skip
    fig = plot.figure_for(args)
    x = one_hot(chrom[100 - 1 - 20 : 100 + 20]).astype(np.float64)
    xa = x.copy()
    xa[20] = one_hot(alts[100])[0]
    fis = _oracle_fis(x, xa, w1, w2)
    for o, (_, h) in glyph_heights(fig.axes[2]).items():
        assert h == pytest.approx(fis[20 + o], rel=1e-3, abs=1e-4)
    assert len(glyph_heights(fig.axes[2])) == 10 and "rsC" in fig.get_suptitle()
    assert glyphs(fig.axes[3]) == [] and heatmap_image(fig.axes[4]).get_array().shape == (3, 11)
    with pytest.raises(InputError, match=r"'rsZ' is not in the VCF.*rsA, rsBad, rsC"):
        plot.figure_for(argparse.Namespace(**dict(vars(args), variant="rsZ")))

    out = tmp_path / "fig.png"
    assert main(["plot", "product", "--variant", "rsC", "--maps", maps, "--window", "5", "-o", str(out)]) == 0
    assert imread(out).shape[0] > 600
    html = tmp_path / "r.html"
    report.write_report(tsv, maps, str(html), progress=False)
    text = html.read_text()
    assert text.count("data:image/png;base64,") == 2 and "rsBad" in text and "http" not in text
