"""Indels scored on aligned coordinates, against a hand-built model whose FIS is known exactly.

The model detects two 6 bp motifs anywhere in the window (a convolution with the one-hot consensus, a ReLU that
fires only on an exact match) and outputs ``f = pA * pB**2``, where pA, pB count the exact matches. With
gradient x input the importance is, at every base of the A site, ``pB**2`` = 1 and, at every base of the B site,
``2 pA pB`` = 2; elsewhere 0. Because the model is translation invariant, moving a motif does not change its
importance, which makes the two known answers of the issue exact:

* deleting one base of A breaks it: ``pA = 0`` in the alternate window, so the aligned FIS is 2 at every base of
  B, at B's reference coordinates (B has moved one base to the left in the alternate window), 1 at the rest of A,
  0 elsewhere;
* inserting k bases between A and B moves B by k: aligned, nothing changes (FIS exactly 0); compared position by
  position without the alignment, B's importance seems to vanish and reappear k bases away (|FIS| = 2).
"""

import numpy as np
import pytest
import torch
from tangermeme.variant_effect import deletion_effect, insertion_effect
from torch import nn

import kipoi_dfim
from kipoi_dfim import indels
from kipoi_dfim.attribution import importance
from kipoi_dfim.output.maps import MapsFile
from kipoi_dfim.sequence import ALPHABET, decode, one_hot
from kipoi_dfim.variants import Fasta, iter_variants, windows

# the model's outputs are not probabilities: kipoi-veff's logit scores are NaN, as they should be
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

L = 80
NEXT = {"A": "C", "C": "G", "G": "T", "T": "A"}
MOTIF_A, MOTIF_B = "TGACGT", "GGCCAA"
A0, B0 = 90, 104  # 0-based starts of the planted sites on contig c1 (A before B, 8 bp apart)
CONTIG = 200


class MotifPair(nn.Module):
    """f = pA * pB^2, pX = number of exact matches of motif X anywhere in the window."""

    def __init__(self):
        super().__init__()
        w = torch.tensor(np.stack([one_hot(MOTIF_A).T, one_hot(MOTIF_B).T]))  # (2, 4, 6)
        self.register_buffer("w", w)

    def forward(self, x):  # (N, 4, L)
        p = torch.relu(nn.functional.conv1d(x, self.w) - 5.0).sum(-1)  # (N, 2)
        return (p[:, 0] * p[:, 1] ** 2)[:, None]


def _background(rng, n):
    """Random bases without either motif (or its partial copies that an indel could complete)."""
    while True:
        s = "".join(rng.choice(list("ACGT"), n))
        if not any(m[:4] in s or m[2:] in s for m in (MOTIF_A, MOTIF_B)):
            return s


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    d = tmp_path_factory.mktemp("indels")
    rng = np.random.default_rng(7)
    s = list(_background(rng, CONTIG))
    s[A0 : A0 + 6], s[B0 : B0 + 6] = MOTIF_A, MOTIF_B
    c1 = "".join(s)
    # c2: the pair near the contig's right end, a background deletion after it (the contig end forces a left fill)
    s2 = list(_background(rng, 120))
    s2[88:94], s2[100:106] = MOTIF_A, MOTIF_B
    c2 = "".join(s2)
    (d / "ref.fa").write_text(f">c1\n{c1}\n>c2\n{c2}\n")
    return {"dir": d, "c1": c1, "c2": c2, "fa": str(d / "ref.fa")}


def _vcf(path, rows):
    head = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    body = [f"{c}\t{p}\t{i}\t{r}\t{a}\t.\t.\t." for c, p, i, r, a in rows]
    path.write_text("\n".join(head + body) + "\n")
    return str(path)


def _records(g):
    c1, c2 = g["c1"], g["c2"]
    p = A0 + 3  # delete the 4th base of A (anchored on the 3rd); A's bases differ, so this is left-aligned
    ins_at = A0 + 8  # insertion of 3 bases after this anchor, between A (ends A0+6) and B (starts A0+14)
    # background deletion on c2, 5 bases right of B, near the contig end (window shifted, filled left)
    q = 110
    return [
        ("c1", p, "delA", c1[p - 1 : p + 1], c1[p - 1]),
        ("c1", ins_at + 1, "insAB", c1[ins_at], c1[ins_at] + "TTC"),
        ("c1", 30, "snv_bg", c1[29], "A" if c1[29] != "A" else "C"),
        ("c2", q + 1, "del_end", c2[q : q + 2], c2[q]),
        # a complex substitution: one base of A replaced by two others (A broken, B moved one base right)
        ("c1", A0 + 4, "cplxA", c1[A0 + 3], "".join(b for b in "ACGT" if b != c1[A0 + 3])[:2]),
    ]


@pytest.fixture(scope="module")
def scored(genome):
    d = genome["dir"]
    vcf = _vcf(d / "in.vcf", _records(genome))
    m = kipoi_dfim.load_model(MotifPair(), seq_len=L, layout="(4,L)")
    df = kipoi_dfim.score_variants(m, vcf, genome["fa"], method="grad_input", window=15, maps=str(d / "m.h5"),
                                   quiet=True)
    return df.set_index("variant_id"), m, vcf


def test_deletion_in_a_removes_partner_importance_at_b_reference_coordinates(scored, genome):
    df, _, _ = scored
    r = df.loc["delA"]
    assert r.status == "ok"
    anchor0 = A0 + 2  # the variant (POS) is the anchor base
    assert r.max_abs_fis == pytest.approx(2.0, abs=1e-6)
    assert (r.max_fis_offset, r.max_fis_base) == (B0 - anchor0, MOTIF_B[0])  # first base of B, reference coords
    with MapsFile(genome["dir"] / "m.h5") as mf:
        row = mf.row(mf.find("delA"))
    off, fis = row["offsets"], row["fis"]
    exp = np.zeros(len(off))
    t = anchor0 + off  # contig coordinate of each displayed reference position
    exp[(t >= B0) & (t < B0 + 6)] = 2.0
    exp[(t >= A0) & (t < A0 + 6)] = 1.0
    inside = (off >= 0) & (off < 2)  # REF allele (anchor + deleted base): not targets
    exp[inside] = np.nan
    win = np.abs(off) <= 15
    np.testing.assert_allclose(fis[win], exp[win], atol=1e-6)
    # the stored alignment: left of the deletion same offset, right of it one base to the left
    ao = row["alt_offset"]
    assert (ao[off < 0] == off[off < 0]).all() and (ao[inside] == indels.NO_ALT).all()
    right = (off >= 2) & (ao != indels.NO_ALT)
    assert (ao[right] == off[right] - 1).all()
    # the stored alternate window is aligned: B (one base to the left in the alternate window) at B's offsets
    b = (t >= B0) & (t < B0 + 6)
    assert decode(row["seq_alt"][b]) == MOTIF_B and decode(row["seq_ref"][b]) == MOTIF_B
    # and the maps' invariant: fis = sum over bases of imp_ref - imp_alt (alternate in reference coordinates)
    np.testing.assert_allclose(np.nansum(row["imp_ref"] - row["imp_alt"], -1)[win & ~inside], fis[win & ~inside],
                               atol=1e-6)


def test_complex_substitution_breaking_a_is_aligned_like_a_deletion(scored, genome):
    df, _, _ = scored
    r = df.loc["cplxA"]
    assert r.status == "ok" and r["flags"] == "complex"
    v0 = A0 + 3
    assert r.max_abs_fis == pytest.approx(2.0, abs=1e-6)
    assert (r.max_fis_offset, r.max_fis_base) == (B0 - v0, MOTIF_B[0])
    with MapsFile(genome["dir"] / "m.h5") as mf:
        row = mf.row(mf.find("cplxA"))
    t = v0 + row["offsets"]
    exp = np.where((t >= B0) & (t < B0 + 6), 2.0, np.where((t >= A0) & (t < A0 + 6), 1.0, 0.0))
    exp[t == v0] = np.nan
    win = np.abs(row["offsets"]) <= 15
    np.testing.assert_allclose(row["fis"][win], exp[win], atol=1e-6)
    right = (row["offsets"] > 0) & (row["alt_offset"] != indels.NO_ALT)
    assert (row["alt_offset"][right] == row["offsets"][right] + 1).all()


def test_insertion_that_shifts_b_is_zero_aligned_and_large_misaligned(scored, genome):
    df, m, vcf = scored
    assert df.loc["insAB", "status"] == "ok"
    assert df.loc["insAB", "max_abs_fis"] == pytest.approx(0.0, abs=1e-6)  # aligned: B moved, nothing changed
    assert df.loc["snv_bg", "max_abs_fis"] == pytest.approx(0.0, abs=1e-6)
    # the same windows compared position by position (no alignment): B seems to lose and regain importance
    fa = Fasta(genome["fa"])
    v = next(v for ch in iter_variants(vcf, fa, L) for v in ch if v.variant_id == "insAB")
    X, Xa = windows([v], fa, L)
    assert decode(Xa[0]) == (decode(X[0])[: v.offset + 1] + "TTC" + decode(X[0])[v.offset + 1 :])[:L]
    C = importance(m, np.concatenate([X, Xa]), 0, method="grad_input")
    naive = (C[0] - C[1]).sum(-1)
    targets = np.abs(np.arange(L) - v.offset) <= 15
    targets[v.offset] = False
    assert np.abs(naive[targets]).max() == pytest.approx(2.0, abs=1e-6)
    # and the aligned difference computed here by hand from the alignment is zero
    j = indels.alignment(v, L)
    have = targets & (j >= 0)
    np.testing.assert_allclose(C[0].sum(-1)[have], C[1].sum(-1)[j[have]], atol=1e-6)


def test_contig_end_fills_the_alternate_window_on_the_left(scored, genome):
    df, m, vcf = scored
    r = df.loc["del_end"]
    assert r.status == "ok" and "alt_filled_left=1" in r["flags"] and "window_shifted" in r["flags"]
    fa = Fasta(genome["fa"])
    v = next(v for ch in iter_variants(vcf, fa, L) for v in ch if v.variant_id == "del_end")
    X, Xa = windows([v], fa, L)
    c2, q = genome["c2"], 110
    assert decode(X[0]) == c2[-L:]
    assert decode(Xa[0]) == (c2[: q + 1] + c2[q + 2 :])[-L:]  # the deleted base gone, one more base on the left
    # the motif pair left of the deletion moved one base right in the alternate window; aligned, FIS = 0, while
    # position by position B (within the +-15 bp targets) seems to change
    assert r.max_abs_fis == pytest.approx(0.0, abs=1e-6)
    C = importance(m, np.concatenate([X, Xa]), 0, method="grad_input")
    targets = np.abs(np.arange(L) - v.offset) <= 15
    assert np.abs((C[0] - C[1]).sum(-1)[targets]).max() == pytest.approx(2.0, abs=1e-6)


def test_ism_equals_tangermeme_deletion_and_insertion_effect(scored, genome):
    """kipoi-veff's diff = f(alt) - f(ref) on our windows equals tangermeme's y_after - y_before (left=False:
    the window keeps its left end and is filled/trimmed on the right, our convention away from contig ends)."""
    df, _, vcf = scored
    fa = Fasta(genome["fa"])
    vs = {v.variant_id: v for ch in iter_variants(vcf, fa, L) for v in ch}
    torch_model = MotifPair()
    c1 = genome["c1"]
    v = vs["delA"]
    ws = v.window_start
    X = torch.tensor(one_hot(c1[ws : ws + L + 1]).T[None].copy())
    res = deletion_effect(torch_model, X, torch.tensor([[0, v.pos - ws]]), device="cpu")
    exp = float(res.y_after[0, 0] - res.y_before[0, 0])
    assert exp == pytest.approx(-1.0)  # A is gone
    assert df.loc["delA", "diff"] == pytest.approx(exp, abs=1e-6)
    assert df.loc["delA", "ref_pred"] == pytest.approx(float(res.y_before[0, 0]), abs=1e-6)
    v = vs["insAB"]
    ws = v.window_start
    X = torch.tensor(one_hot(c1[ws : ws + L]).T[None].copy())
    ins = [[0, v.pos - ws, ALPHABET.index(b)] for b in reversed("TTC")]
    res = insertion_effect(torch_model, X, torch.tensor(ins), device="cpu")
    assert df.loc["insAB", "diff"] == pytest.approx(float(res.y_after[0, 0] - res.y_before[0, 0]), abs=1e-6)
    assert df.loc["insAB", "alt_pred"] == pytest.approx(float(res.y_after[0, 0]), abs=1e-6)


# -- VCF conventions --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ref, alt, exp", [
    ("GT", "G", (1, 1, 0, 1, "deletion")),  # VCF 4.2 anchored deletion
    ("A", "ATC", (1, 0, 2, 1, "insertion")),
    ("GTT", "GT", (1, 1, 0, 2, "deletion")),  # not parsimonious: two shared bases
    ("ACG", "TT", (0, 3, 2, 0, "complex")),
    ("AC", "GT", (0, 2, 2, 0, "mnv")),
    ("ACT", "AGT", (1, 1, 1, 2, "snv")),
    ("TC", "C", (0, 1, 0, 1, "deletion")),  # anchored on the right (an event at POS 1)
])
def test_allele_event(ref, alt, exp):
    ev = indels.allele_event(ref, alt)
    assert (ev.start, ev.ref_len, ev.alt_len, ev.trimmed, ev.kind) == exp


def test_statuses_and_flags_of_indels_mnvs_and_symbolic_alleles(tmp_path):
    rng = np.random.default_rng(3)
    bg = _background(rng, 300)
    # 0-based: G at 100, an A run at 101-104; a CA repeat at 151-156 after a T at 150
    # and a run of two T at 201-202 after a C at 200
    c = bg[:100] + "GAAAAT" + bg[106:150] + "TCACACAG" + bg[158:200] + "CTTG" + bg[204:]
    (tmp_path / "r.fa").write_text(f">c\n{c}\n")
    rows = [
        ("c", 101, "del_left", "GA", "G"),  # deletes the first A of the run: left-aligned
        ("c", 104, "del_right", "AA", "A"),  # the same deletion written three bases to the right
        ("c", 101, "del_fat", "GAA", "GA"),  # the left-aligned deletion, not parsimonious
        ("c", 105, "ins_right", "A", "AA"),  # inserting an A at the end of the run
        ("c", 101, "ins_left", "G", "GA"),
        ("c", 151, "ins_rep", "T", "TCA"),  # before the CA repeat: left-aligned
        ("c", 153, "ins_rep_right", "A", "ACA"),  # inside it: could move left
        ("c", 201, "del_tt", "CT", "C"),
        ("c", 202, "del_tt_right", "TT", "T"),  # no shared anchor on the left: bcftools would write del_tt
        ("c", 230, "complex", c[229:232], "".join(NEXT[b] for b in c[229] + c[231])),
        ("c", 235, "complex_fat", c[234:237], next(b for b in "ACGT" if b not in c[234:236]) + c[236]),  # shares
        # its last base with REF: not parsimonious
        ("c", 240, "mnv", c[239:241], "".join("A" if b != "A" else "C" for b in c[39:41])),
        ("c", 60, "sym", c[59], "<DEL>"),
        ("c", 61, "bnd", c[60], f"{c[60]}[c:200["),
        ("c", 62, "star", c[61], "*"),
        ("c", 70, "too_long", c[69], c[69] + "A" * 30),
        ("c", 2, "n_alt", c[1], c[1] + "N"),
    ]
    vcf = _vcf(tmp_path / "v.vcf", rows)
    fa = Fasta(str(tmp_path / "r.fa"))
    vs = {v.variant_id: v for ch in iter_variants(vcf, fa, L) for v in ch}
    got = {k: (v.status, v.flags) for k, v in vs.items()}
    assert got == {
        "del_left": ("ok", []), "del_right": ("ok", ["not_normalized"]), "del_fat": ("ok", ["not_normalized"]),
        "ins_right": ("ok", ["not_normalized"]), "ins_left": ("ok", []), "ins_rep": ("ok", []),
        "ins_rep_right": ("ok", ["not_normalized"]), "complex": ("ok", ["complex"]), "mnv": ("ok", []),
        "del_tt": ("ok", []), "del_tt_right": ("ok", ["not_normalized"]),
        "complex_fat": ("ok", ["complex", "not_normalized"]),
        "sym": ("symbolic_allele", []), "bnd": ("symbolic_allele", []), "star": ("star_allele", []),
        "too_long": ("too_long", []), "n_alt": ("n_at_variant", []),
    }
    ok = [v for v in vs.values() if v.ok]
    X, Xa = windows(ok, fa, L)
    for v, x, xa in zip(ok, decode(X), decode(Xa), strict=True):
        ws = v.window_start
        hap = c[: v.pos - 1] + v.alt + c[v.pos - 1 + len(v.ref) :]  # the alternate haplotype
        assert x == c[ws : ws + L] and xa == hap[ws : ws + L], v.variant_id  # same start, filled on the right
    # normalize() writes each record as bcftools norm would
    assert indels.normalize(fa, "c", 103, "AA", "A") == (100, "GA", "G")
    assert indels.normalize(fa, "c", 104, "A", "AA") == (100, "G", "GA")
    assert indels.normalize(fa, "c", 152, "A", "ACA") == (150, "T", "TCA")
    assert indels.normalize(fa, "c", 201, "TT", "T") == (200, "CT", "C")
    assert indels.normalize(fa, "c", 100, "GAA", "GA") == (100, "GA", "G")
    assert indels.normalize(fa, "c", 0, c[:2], c[1]) == (0, c[:2], c[1])  # at POS 1 the anchor is on the right
    # scored as written: the deletion written right-shifted is the same haplotype as the left-aligned one,
    # so its windows are the same sequence (their windows, centred on POS, start 3 bases apart)
    d_l, d_r = ok.index(vs["del_left"]), ok.index(vs["del_right"])
    assert decode(Xa[d_l])[3:] == decode(Xa[d_r])[:-3]


def test_alignment_and_null_alternates_keep_the_event(genome):
    """The null applies the indel to each shuffled background: left of the event the background, then the ALT
    bases, then the background shifted by the length difference (the right-hand fill from the genome)."""
    from kipoi_dfim.null import variant_backgrounds

    fa = Fasta(genome["fa"])
    rows = [("c1", A0 + 9, "ins", genome["c1"][A0 + 8], genome["c1"][A0 + 8] + "TTC"),
            ("c1", A0 + 3, "del", genome["c1"][A0 + 2 : A0 + 5], genome["c1"][A0 + 2])]
    vcf = _vcf(genome["dir"] / "null.vcf", rows)
    ok = [v for ch in iter_variants(vcf, fa, L) for v in ch]
    X, Xa = windows(ok, fa, L)
    K = 3
    spans = [slice(v.offset, v.offset + len(v.ref)) for v in ok]
    nref, nalt = variant_backgrounds(X, Xa, spans, K, np.array([5, 6], dtype=np.uint64))
    nalt = indels.null_alternates(nref, nalt, Xa, ok, K)
    for i, v in enumerate(ok):
        e0 = v.offset + 1
        for k in range(K):
            r, a = decode(nref[i * K + k]), decode(nalt[i * K + k])
            assert r != decode(X[i])  # shuffled
            if v.variant_id == "ins":
                assert a == (r[:e0] + "TTC" + r[e0:])[:L]
            else:  # two bases deleted; the last two come from the genome (the fill), as in the real window
                assert a == r[:e0] + r[e0 + 2 :] + decode(Xa[i])[-2:]
            # the alignment pairs each reference base with the same base of the alternate background
            j = indels.alignment(v, L)
            have = j >= 0
            assert np.array(list(r))[have].tolist() == np.array(list(a))[j[have]].tolist()


def test_all_alts_stays_snv_only_and_the_null_runs(scored, genome):
    _, m, vcf = scored
    df = kipoi_dfim.score_variants(m, vcf, genome["fa"], method="grad_input", all_alts=True, null_shuffles=2,
                                   maps=str(genome["dir"] / "aa.h5"), quiet=True).set_index("variant_id")
    assert df.loc[["delA", "insAB", "del_end"], "max_abs_maxfis"].isna().all()
    assert np.isfinite(df.loc["snv_bg", "max_abs_maxfis"])
    with MapsFile(genome["dir"] / "aa.h5") as mf:
        assert np.isnan(mf.row(mf.find("insAB"))["fis_all_alts"]).all()
        assert not np.isnan(mf.row(mf.find("snv_bg"))["fis_all_alts"]).all()
    # the same numbers as without --all-alts and a null
    ref = scored[0]
    np.testing.assert_allclose(df.loc[ref.index, "max_abs_fis"], ref["max_abs_fis"], atol=1e-7)


def test_plot_draws_the_aligned_tracks_and_marks_the_indel(scored, genome):
    from kipoi_dfim.plot import plot_variant

    h5 = genome["dir"] / "m.h5"
    fig = plot_variant(str(h5), "insAB")
    ax_alt = fig.axes[1]
    marks = [a for a in ax_alt.get_children() if a.get_gid() == "indel"]
    labels = [t.get_text() for t in ax_alt.texts if t.get_gid() == "indel_label"]
    assert len(marks) == 1 and labels == ["+TTC"]
    assert marks[0].get_xdata()[0] == pytest.approx(0.5)  # between the anchor (0) and the next base (1)
    # the alternate letters are drawn at reference offsets: B's letters at B's reference offsets on both tracks
    with MapsFile(h5) as mf:
        row = mf.row(mf.find("insAB"))
    np.testing.assert_allclose(row["imp_alt"], row["imp_ref"], atol=1e-6)  # aligned: nothing changed
    fig = plot_variant(str(h5), "delA")
    assert [a.get_gid() for a in fig.axes[1].patches if a.get_gid() == "indel"] == ["indel"]
    assert not [a for a in fig.axes[0].get_children() if a.get_gid() == "indel"]  # only on the alternate track
