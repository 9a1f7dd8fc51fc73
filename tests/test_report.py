"""The offline HTML report: parsed with html.parser (ranking, every record kept, summary numbers, links that
resolve, embedded figures only), and loaded in a real headless Chromium (summary, first figure, anchor jump,
sorting and filtering scripts)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from matplotlib.image import imread
from test_plot import OFFSETS, ROWS, make_maps, write_maps_h5

from kipoi_dfim import report
from kipoi_dfim.cli import main
from kipoi_dfim.errors import InputError

HEADER = list(report.TSV_COLUMNS)


class Page(HTMLParser):
    """Collects every tag's attributes and the cells of the variants table."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.rows: list[list[str]] = []
        self.row_classes: list[str | None] = []
        self.table_links: list[str] = []
        self.ids: set[str] = set()
        self._in_table = self._in_cell = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if a.get("id"):
            self.ids.add(a["id"])
        if self._in_table and tag == "a":
            self.table_links.append(a["href"])
        if tag == "table" and a.get("id") == "variants":
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
            self.row_classes.append(a.get("class"))
        elif self._in_table and tag == "td":
            self._in_cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.rows[-1][-1] += data


def parse(path) -> Page:
    p = Page()
    p.feed(open(path, encoding="utf-8").read())
    data_rows = [(r, c) for r, c in zip(p.rows, p.row_classes, strict=True) if r]  # header row has th only
    p.rows = [r for r, _ in data_rows]
    p.row_classes = [c for _, c in data_rows]
    return p


def cell(row: list[str], column: str) -> str:
    return row[2 + HEADER.index(column)]  # after "rank" and "figure"


def write_tsv(path, records: list[dict]) -> str:
    with open(path, "w") as fh:
        fh.write("\t".join(HEADER) + "\n")
        for r in records:
            fh.write("\t".join("NA" if r.get(c) is None else str(r.get(c)) for c in HEADER) + "\n")
    return str(path)


def tsv_records(maps_data: dict, null: bool = True) -> list[dict]:
    """TSV rows 0..4: rows 0, 1, 3 scored (their maps are ROWS), rows 2 and 4 not scored."""
    by_row = {int(r): i for i, r in enumerate(maps_data["tsv_row"])}
    q = {0: 0.2, 1: 0.01, 3: 0.01}
    p = {0: 0.05, 1: 0.001, 3: 0.0005}
    out = []
    for row in range(5):
        if row in by_row:
            src = ROWS[by_row[row]]
            rec = {k: src[k] for k in ("variant_id", "chrom", "pos", "ref", "alt", "target")}
            rec.update(status="ok", max_abs_fis=float(maps_data["max_abs_fis"][by_row[row]]), max_fis_offset=2,
                       max_fis_base="G", fis_at_max=0.3, ref_pred=0.1, alt_pred=0.2, diff=0.1, logit_ref=-2.2,
                       logit_alt=-1.4, logit=0.8, deepsea_effect=0.05)  # fmt: skip
            if null:
                rec.update(pval=p[row], qval=q[row])
        else:
            rec = {"variant_id": f"rs{row}x", "chrom": "chr9", "pos": 10 + row, "ref": "A", "alt": "C",
                   "target": "t0", "status": "ref_mismatch" if row == 2 else "out_of_bounds"}  # fmt: skip
        out.append(rec)
    return out


@pytest.fixture
def run_files(tmp_path):
    data = make_maps(ROWS)
    maps = write_maps_h5(str(tmp_path / "maps.h5"), data)
    tsv = write_tsv(tmp_path / "scored.tsv", tsv_records(data))
    return tsv, maps, data


def test_report_ranked_table_all_records_and_embedded_figures(tmp_path, run_files):
    tsv, maps, data = run_files
    out = tmp_path / "report.html"
    assert report.write_report(tsv, maps, str(out), progress=False, motifs=None) == str(out)
    page = parse(out)
    text = out.read_text()
    # offline: no URL anywhere; the only script is inline; every link is an anchor that exists in the page
    assert "http" not in text and "://" not in text
    for tag, attrs in page.tags:
        assert tag not in ("link", "iframe") and not (tag == "script" and "src" in attrs)
        for k in ("src", "href"):
            v = attrs.get(k)
            assert v is None or v.startswith(("data:image/png;base64,", "#")), (tag, k, v)
            if v and v.startswith("#"):
                assert v[1:] in page.ids, f"link {v} goes nowhere"
    # summary first: 4 VCF records, 5 rows, 3 scored, 2 with q < 0.05 (t0: 1 of 2, t1: 1 of 1)
    assert text.index('id="summary"') < text.index('id="figures"') < text.index('id="variants"')
    summary = text[text.index('id="summary"') : text.index('id="figures"')]
    stats = re.findall(r'<span class="big">(\d+)</span>([^<]+)<', summary)
    assert [(int(n), w.split()[0]) for n, w in stats] == [(4, "VCF"), (5, "rows"), (3, "scored"), (2, "with")]
    per_target = re.findall(r'<tr><td class="t">(t\d)</td><td>(\d+)</td><td>(\d+)</td>', summary)
    assert per_target == [("t0", "2", "1"), ("t1", "1", "1")]
    assert "ref_mismatch 1" in summary and "out_of_bounds 1" in summary
    # ranking: q-value, then p-value; not-scored records last, in TSV order, with their status
    assert [cell(r, "variant_id") for r in page.rows] == ["rs3", "rs1", "rs1", "rs2x", "rs4x"]
    assert [cell(r, "target") for r in page.rows] == ["t0", "t1", "t0", "t0", "t0"]
    assert [cell(r, "status") for r in page.rows] == ["ok"] * 3 + ["ref_mismatch", "out_of_bounds"]
    assert page.row_classes[3:] == ["notok", "notok"]
    assert cell(page.rows[0], "qval") == "0.01" and cell(page.rows[0], "pval") == "0.0005"
    assert cell(page.rows[0], "logit") == "0.8" and cell(page.rows[3], "max_abs_fis") == ""
    # one figure per variant allele (its best row), linked from the table; figures carry their pixel size
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(imgs) == 2
    sections = [a["id"] for t, a in page.tags if t == "section" and a.get("class") == "fig"]
    assert sections == ["fig-3", "fig-1"]
    assert page.table_links == ["#fig-3", "#fig-1"]
    assert "own motif REF" not in text  # no motif columns without motifs
    png = imread(io.BytesIO(base64.b64decode(imgs[0]["src"].split(",", 1)[1])), format="png")
    assert png.shape[0] > 300 and png.shape[1] > 500 and png[..., :3].std() > 0.05  # a drawn figure, not blank
    assert (int(imgs[0]["height"]), int(imgs[0]["width"])) == png.shape[:2]
    assert sorted(os.listdir(tmp_path)) == ["maps.h5", "report.html", "scored.tsv"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask  # the permissions of a normal new file, not 0600


def test_report_escapes_names(tmp_path):
    rows = [dict(r, variant_id="<b>rs&1</b>") if r["variant_id"] == "rs1" else r for r in ROWS]
    data = make_maps(rows)
    maps = write_maps_h5(str(tmp_path / "maps.h5"), data)
    recs = [dict(r, variant_id="<b>rs&1</b>") if r["variant_id"] == "rs1" else r for r in tsv_records(data)]
    out = tmp_path / "r.html"
    report.write_report(write_tsv(tmp_path / "s.tsv", recs), maps, str(out), progress=False, motifs=None)
    text = out.read_text()
    assert "<b>rs&1</b>" not in text and "&lt;b&gt;rs&amp;1&lt;/b&gt;" in text
    assert [cell(r, "variant_id") for r in parse(out).rows][1] == "<b>rs&1</b>"


def test_report_without_null_ranks_by_max_abs_fis_and_top(tmp_path):
    data = make_maps(ROWS, null=False)
    for k in ("pval", "qval"):
        data[k][:] = np.nan
    maps = write_maps_h5(str(tmp_path / "maps.h5"), data)
    tsv = write_tsv(tmp_path / "s.tsv", tsv_records(data, null=False))
    out = tmp_path / "r.html"
    report.write_report(tsv, maps, str(out), top=1, progress=False, motifs=None)
    page = parse(out)
    fis = {int(r): float(v) for r, v in zip(data["tsv_row"], data["max_abs_fis"], strict=True)}
    want_ok = sorted(fis, key=lambda r: -fis[r])
    got_ok = [cell(r, "max_abs_fis") for r in page.rows[:3]]
    assert got_ok == [f"{fis[r]:.3g}" for r in want_ok]
    assert len([1 for t, _ in page.tags if t == "img"]) == 1
    assert [a["id"] for t, a in page.tags if t == "section" and a.get("class") == "fig"] == [f"fig-{want_ok[0]}"]
    text = open(out).read()
    assert "no shuffled null" in text and "only q &lt;" not in text  # no q-value filter without q-values


def test_rank_rows_nan_and_ties():
    import pandas as pd

    df = pd.DataFrame(
        {"status": ["ok", "ok", "ok", "bad", "ok"], "qval": [np.nan, 0.1, 0.1, np.nan, 0.1],
         "pval": [np.nan, 0.02, 0.02, np.nan, 0.01], "max_abs_fis": [9.0, 1.0, 2.0, np.nan, 0.5]}
    )  # fmt: skip
    assert report.rank_rows(df)["max_abs_fis"].tolist()[:4] == [0.5, 2.0, 1.0, 9.0]
    assert report.rank_rows(df)["status"].tolist()[-1] == "bad"


def test_read_scored_tsv_text_and_errors(tmp_path):
    recs = tsv_records(make_maps(ROWS))
    recs[0]["variant_id"] = "NA"  # a name, not a missing value
    path = write_tsv(tmp_path / "a.tsv", recs)
    df = report.read_scored_tsv(path)
    assert df["variant_id"][0] == "NA" and np.isnan(df["qval"][2]) and df["pos"].dtype == float
    recs[3]["pval"] = "high"
    with pytest.raises(InputError, match=r"b.tsv, line 5: column 'pval': 'high'"):
        report.read_scored_tsv(write_tsv(tmp_path / "b.tsv", recs))
    (tmp_path / "c.tsv").write_text("variant_id\tscore\nrs1\t1\n")
    with pytest.raises(InputError, match="missing column"):
        report.read_scored_tsv(tmp_path / "c.tsv")


def test_report_refuses_maps_of_another_run(tmp_path, run_files):
    tsv, _, data = run_files
    other = make_maps([dict(r, variant_id=r["variant_id"] + "_other") for r in ROWS])
    maps = write_maps_h5(str(tmp_path / "other.h5"), other)
    with pytest.raises(InputError, match="does not belong"):
        report.write_report(tsv, maps, str(tmp_path / "r.html"), progress=False, motifs=None)
    assert not (tmp_path / "r.html").exists()


def test_cli_report(tmp_path, run_files, capfd):
    tsv, maps, _ = run_files
    out = tmp_path / "cli.html"
    assert main(["report", tsv, "--maps", maps, "-o", str(out), "--top", "5", "--motifs", "none"]) == 0
    assert len([1 for t, _ in parse(out).tags if t == "img"]) == 2
    err = capfd.readouterr().err  # one bar step per figure, with its rate and ETA
    assert "report figures: 100%" in err and "2/2" in err and "variant/s" in err
    assert main(["report", tsv, "--maps", maps, "-o", str(out), "--quiet", "--motifs", "none"]) == 0
    assert capfd.readouterr().err == ""
    assert main(["report", str(tmp_path / "missing.tsv"), "--maps", maps, "-o", str(out), "--quiet"]) == 2
    assert capfd.readouterr().err.startswith("kipoi-dfim report: error:")  # --quiet still prints errors


def test_report_names_motifs_from_the_maps_or_takes_them_from_the_tsv(tmp_path, run_files):
    """Without motif columns in the TSV the top hits are annotated from their maps rows (the same numbers as
    kipoi_dfim.motifs on those rows); with them, the TSV's values are shown and no motif file is read."""
    from kipoi_dfim.motifs import annotate_variants, load_motifs
    from kipoi_dfim.plot import MapsFile

    tsv, maps, data = run_files
    jaspar = load_motifs()
    out = tmp_path / "m.html"
    report.write_report(tsv, maps, str(out), progress=False, motifs=jaspar)
    text = out.read_text()
    with MapsFile(maps) as mf:
        want = annotate_variants(data["seq_ref"], data["seq_alt"], data["fis"], int(np.flatnonzero(OFFSETS == 0)[0]),
                                 jaspar, window=int(mf.attrs["window"]) if "window" in mf.attrs else None)
    hits = re.findall(r'<td class="t own">([^<]*)</td>.*?<td class="t partner">([^<]*)</td>', text)
    by_row = {int(r): i for i, r in enumerate(data["tsv_row"])}
    expect = []
    for row in (3, 1):  # the two top variant alleles, in rank order
        a = want.iloc[by_row[row]]
        own = f"{a.own_motif_ref or '-'} \u2192 {a.own_motif_alt or '-'}".replace(">", "&gt;")
        expect.append((own, a.partner_motif or "-"))
    assert hits == expect
    assert f"{jaspar.source} ({len(jaspar)} motifs)" in text

    recs = tsv_records(data)
    for r in recs:
        r.update(own_motif_ref="GATA1(MA0035.4)", own_motif_alt="", partner_motif="TAL1::TCF3(MA0091.1)",
                 partner_offset=5, partner_end=9, own_delta=-4.5)
    header = [*HEADER, "own_motif_ref", "own_motif_alt", "partner_motif", "partner_offset", "partner_end",
              "own_delta"]
    path = tmp_path / "with_motifs.tsv"
    with open(path, "w") as fh:
        fh.write("\t".join(header) + "\n")
        for r in recs:
            fh.write("\t".join("NA" if r.get(c) is None else str(r.get(c)) for c in header) + "\n")
    out2 = tmp_path / "m2.html"
    report.write_report(str(path), maps, str(out2), progress=False, motifs=str(tmp_path / "no_such.meme"))
    text2 = out2.read_text()
    assert "Motif columns from the TSV." in text2
    assert re.findall(r'<td class="t partner">([^<]*)</td><td class="t">([^<]*)</td>', text2)[0] == (
        "TAL1::TCF3(MA0091.1)", "+5..+9")
    assert "<th class=\"t\">own_motif_ref</th>" in text2 and "<th>own_delta</th>" in text2


CHROMIUM = "/usr/bin/chromium"
_PROBE = """<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var out = {};
    var target = document.getElementById(location.hash.slice(1));
    out.anchor_top = target ? target.getBoundingClientRect().top : null;
    var summary = document.getElementById("summary");
    out.summary = summary ? summary.innerText : "";
    var first = document.querySelector("section.fig img");
    out.first_fig = first ? [first.complete, first.naturalWidth, first.width > 0 && first.height > 0] : null;
    out.first_fig_heading = document.querySelector("section.fig h3").innerText;
    var table = document.getElementById("variants");
    var col = Array.prototype.map.call(table.tHead.rows[0].cells, function (c) { return c.innerText.trim(); });
    var vcol = col.indexOf("variant_id");
    function ids() { return Array.prototype.filter.call(table.tBodies[0].rows, function (r) {
      return r.style.display !== "none"; }).map(function (r) { return r.cells[vcol].innerText; }); }
    out.shown_initial = document.getElementById("shown").innerText;
    table.tHead.rows[0].cells[col.indexOf("max_abs_fis")].click();
    out.sorted_asc = ids();
    table.tHead.rows[0].cells[col.indexOf("max_abs_fis")].click();
    out.sorted_desc = ids();
    var f = document.getElementById("filter");
    f.value = "rs1 t1"; f.dispatchEvent(new Event("input"));
    out.filtered = ids(); out.shown_filtered = document.getElementById("shown").innerText;
    f.value = ""; f.dispatchEvent(new Event("input"));
    var sig = document.getElementById("sig-only");
    sig.checked = true; sig.dispatchEvent(new Event("change"));
    out.significant = ids();
    var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }, 200);
});
</script>"""


def _chromium(*args: str, cwd: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-dev-shm-usage", f"--user-data-dir={cwd}/chromium-profile", "--window-size=1280,900", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd).stdout


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium is not installed (Debian package 'chromium'; "
                    "`make venv` installs it when it can): the report is not checked in a real browser")
def test_report_in_headless_chromium(tmp_path, run_files):
    """A real browser renders the summary and the first figure, lands on a figure when its anchor is opened, and
    runs the sorting and filtering script; a screenshot of the page top is not blank."""
    tsv, maps, data = run_files
    out = tmp_path / "report.html"
    report.write_report(tsv, maps, str(out), progress=False, motifs=None)
    probe = tmp_path / "probe.html"  # the report plus a script that reads the rendered page
    probe.write_text(out.read_text().replace("</body>", _PROBE + "</body>"))
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", f"{probe.as_uri()}#fig-1", cwd=str(tmp_path))
    m = re.search(r'<pre id="probe">([^<]*)</pre>', dom)
    assert m, "the probe script did not run: " + dom[-500:]
    got = json.loads(m.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert "Summary" in got["summary"] and re.search(r"4\s+VCF records", got["summary"])
    assert re.search(r"2\s+with q < 0.05", got["summary"]) and "Top 2 hits" in got["summary"]
    assert got["first_fig"][0] is True and got["first_fig"][1] > 500 and got["first_fig"][2] is True
    assert got["first_fig_heading"].startswith("#1 rs3")
    assert got["anchor_top"] is not None and 0 <= got["anchor_top"] < 20  # the jump lands on the figure
    assert got["shown_initial"].startswith("5 of 5 rows")
    fis = {int(r): float(v) for r, v in zip(data["tsv_row"], data["max_abs_fis"], strict=True)}
    ids = {0: "rs1", 1: "rs1", 3: "rs3"}
    asc = [ids[r] for r in sorted(fis, key=fis.get)]
    assert got["sorted_asc"] == asc + ["rs2x", "rs4x"]  # missing values last either way
    assert got["sorted_desc"] == asc[::-1] + ["rs2x", "rs4x"]
    assert got["filtered"] == ["rs1"] and got["shown_filtered"].startswith("1 of 5")
    assert sorted(got["significant"]) == ["rs1", "rs3"]  # q = 0.01 rows only
    shot = tmp_path / "top.png"
    _chromium("--hide-scrollbars", f"--screenshot={shot}", out.as_uri(), cwd=str(tmp_path))
    img = imread(str(shot))
    assert img.shape[:2] == (900, 1280) and img[..., :3].std() > 0.05
