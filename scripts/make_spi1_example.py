"""Write example_vcfs/spi1_bqtls/ from the DFIM paper's data (run once; the output is committed).

Input (../shared/data/dfim_paper, see its README): the 123 significant SPI1 bQTLs (hg19, Tehranchi et al. 2016)
and their 1 kb hg19 windows as one-hot. Output: one FASTA contig per window (named chrom_start_end, hg19
1-based inclusive), a VCF on those contigs (POS 501 = the QTL base; REF = the hg19 base; ALT = the other allele;
ID keeps the hg19 coordinate and alleles) and the .fai.

Usage: python scripts/make_spi1_example.py [SHARED_DATA_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(shared: Path) -> None:
    out = ROOT / "example_vcfs" / "spi1_bqtls"
    out.mkdir(parents=True, exist_ok=True)
    rows = [ln.split("\t") for ln in (shared / "SPI1_bQTLs_significant_only.txt").read_text().splitlines() if ln]
    seqs = np.load(shared / "SPI1_bQTLs_centered_sequences.npy")
    assert len(rows) == len(seqs), (len(rows), seqs.shape)
    letters = np.array(list("ACGT"))
    fasta, records, contigs = [], [], []
    for i, (r, x) in enumerate(zip(rows, seqs, strict=True)):
        chrom, _start, end, other, hg19, strong, p = (c.strip() for c in r)
        end = int(end)
        seq = "".join(np.where(x.sum(1) > 0, letters[x.argmax(1)], "N"))
        assert seq[500] == hg19, (i, seq[500], hg19)
        name = f"{chrom}_{end - 500}_{end + 499}"
        contigs.append(f"##contig=<ID={name},length={len(seq)},assembly=hg19>")
        fasta.append(f">{name}\n" + "\n".join(seq[k : k + 60] for k in range(0, len(seq), 60)))
        vid = f"{chrom}:{end}:{hg19}>{other}"
        info = f"HG19={chrom}:{end};STRONG={strong};QTL_P={p}"
        records.append((name, 501, vid, hg19, other, info))
    header = [
        "##fileformat=VCFv4.2",
        "##source=kipoi-dfim scripts/make_spi1_example.py",
        "##reference=spi1_bqtls_hg19_1kb.fa (hg19 windows of 1 kb, one contig each)",
        *contigs,
        '##INFO=<ID=HG19,Number=1,Type=String,Description="hg19 position of the bQTL (chrom:pos, 1-based)">',
        '##INFO=<ID=STRONG,Number=1,Type=String,Description="Allele with the stronger SPI1 binding">',
        '##INFO=<ID=QTL_P,Number=1,Type=Float,Description="bQTL p-value (Tehranchi et al. 2016)">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    body = [f"{c}\t{p}\t{i}\t{r}\t{a}\t.\tPASS\t{info}" for c, p, i, r, a, info in records]
    (out / "spi1_bqtls.vcf").write_text("\n".join(header + body) + "\n")
    (out / "spi1_bqtls_hg19_1kb.fa").write_text("\n".join(fasta) + "\n")
    import pyfaidx

    pyfaidx.Faidx(str(out / "spi1_bqtls_hg19_1kb.fa"), rebuild=True)
    print(f"wrote {len(records)} records to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "dfim_paper")
