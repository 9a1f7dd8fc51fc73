"""VCF records -> variants: statuses, windows, contig matching, and clear errors on bad files."""

import numpy as np
import pytest

from kipoi_dfim.errors import InputError
from kipoi_dfim.sequence import decode
from kipoi_dfim.variants import Fasta, iter_variants, windows

SEQ_LEN = 20


def _fasta(tmp_path, rng):
    seqs = {
        "chr1": "".join(rng.choice(list("ACGT"), 100)),
        "2": "".join(rng.choice(list("ACGT"), 60)),
        "short": "ACGTACGTAC",  # shorter than the model input
    }
    seqs["chr1"] = seqs["chr1"][:49] + "N" + seqs["chr1"][50:]  # an N at chr1:50
    path = tmp_path / "ref.fa"
    path.write_text("".join(f">{k}\n{v}\n" for k, v in seqs.items()))
    return str(path), seqs


def _vcf(tmp_path, lines):
    header = [
        "##fileformat=VCFv4.2",
        "##contig=<ID=chr1,length=100>",
        "##contig=<ID=chr2,length=60>",
        "##contig=<ID=2,length=60>",
        "##contig=<ID=short,length=10>",
        "##contig=<ID=chrX,length=10>",
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    path = tmp_path / "in.vcf"
    path.write_text("\n".join(header + ["\t".join(map(str, ln)) + "\t.\tPASS\t." for ln in lines]) + "\n")
    return str(path)


def test_statuses_windows_and_flags(tmp_path):
    rng = np.random.default_rng(0)
    fa_path, seqs = _fasta(tmp_path, rng)
    c1 = seqs["chr1"]
    alt30 = "A" if c1[29] != "A" else "C"
    wrong30 = next(b for b in "ACGT" if b != c1[29])
    lines = [
        ("chr1", 30, "snv", c1[29], alt30),
        ("chr1", 30, "multi", c1[29], ",".join([alt30, c1[29] + "T", "*", "<DEL>"])),
        ("chr1", 30, ".", wrong30, c1[29]),  # REF mismatch
        ("chr1", 50, "nsite", "A", "C"),  # FASTA has N here
        ("chrX", 3, "nocontig", "A", "C"),
        ("2", 3, "chrprefix", seqs["2"][2], "T" if seqs["2"][2] != "T" else "G"),  # VCF '2' vs FASTA '2'
        ("chr2", 58, "chr_end", seqs["2"][57], "T" if seqs["2"][57] != "T" else "G"),  # 'chr2' -> FASTA '2'
        ("short", 5, "padded", "A", "G"),
        ("chr1", 60, "mnv", c1[59:62], "".join("A" if b != "A" else "C" for b in c1[59:62])),
        ("chr1", 70, "missing", c1[69], "."),
        ("chr1", 80, "same", c1[79], c1[79].lower()),  # ALT == REF (any case): not a variant
    ]
    vcf = _vcf(tmp_path, lines)
    fa = Fasta(fa_path)
    variants = [v for chunk in iter_variants(vcf, fa, SEQ_LEN, chunk_size=3) for v in chunk]
    got = [(v.variant_id, v.alt, v.status) for v in variants]
    assert [s for _, _, s in got] == [
        "ok", "ok", "ok", "star_allele", "symbolic_allele", "ref_mismatch", "n_at_variant",
        "unknown_contig", "ok", "ok", "ok", "ok", "missing_alt", "alt_equals_ref",
    ]
    # no record dropped, records in order, lines counted from the file
    assert [v.record_index for v in variants] == [0, 1, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert variants[0].line == 8 and variants[-1].line == 18
    assert variants[5].variant_id == f"chr1:30:{wrong30}:{c1[29]}"  # missing ID -> chrom:pos:ref:alt
    by_id = {v.variant_id: v for v in variants if v.status == "ok"}
    snv = by_id["snv"]
    assert (snv.window_start, snv.offset, snv.flags) == (29 - SEQ_LEN // 2, SEQ_LEN // 2, [])
    end = by_id["chr_end"]
    assert end.fasta_contig == "2" and end.flags == ["window_shifted"]
    assert end.window_start == 60 - SEQ_LEN and end.offset == 57 - (60 - SEQ_LEN)
    assert by_id["padded"].flags == ["padded"]
    ok = [v for v in variants if v.ok]
    X, Xa = windows(ok, fa, SEQ_LEN)
    for v, x, xa in zip(ok, decode(X), decode(Xa), strict=True):
        assert x[v.offset : v.offset + len(v.ref)] == v.ref.upper()
        assert xa[v.offset : v.offset + len(v.alt)] == v.alt
        # the rest in place; an insertion pushes the bases after it right (the window trimmed on the right)
        assert xa == (x[: v.offset] + v.alt + x[v.offset + len(v.ref) :])[: len(x)]
    pad = by_id["padded"]
    assert decode(X[ok.index(pad)]).strip("N") == "ACGTACGTAC"
    assert decode(X[ok.index(snv)]) == c1[snv.window_start : snv.window_start + SEQ_LEN]


def test_bad_files_name_file_and_line(tmp_path):
    rng = np.random.default_rng(0)
    fa_path, _ = _fasta(tmp_path, rng)
    with pytest.raises(InputError, match="nope.fa.*not found"):
        Fasta(str(tmp_path / "nope.fa"))
    fa = Fasta(fa_path)
    with pytest.raises(InputError, match="missing.vcf.*not found"):
        list(iter_variants(str(tmp_path / "missing.vcf"), fa, SEQ_LEN))
    bad = tmp_path / "bad.vcf"
    bad.write_text("chrom\tpos\n1\t2\n")
    with pytest.raises(InputError, match=r"bad.vcf, line 1: not a VCF"):
        list(iter_variants(str(bad), fa, SEQ_LEN))
