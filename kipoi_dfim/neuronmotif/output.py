"""NeuronMotif output files, each written atomically: MEME PPMs per CN, one TSV, one offline HTML page.

- ``layer<K>_cn<n>.meme``: the CN's CRM PPMs (Laplace-smoothed), MEME minimal format, ``MOTIF L<K>_CN<n>_CRM<i>``;
- ``neuron_motifs.tsv``: one row per CRM (CN, CRM, sequences, quality, segments, JASPAR matches and q-values);
- ``neuron_motifs.html``: per CN its substructure, CRM logos (IC-scaled, PNG embedded as base64) and syntax tree;
  no network needed to view it.
"""

from __future__ import annotations

import base64
import html
import io
import os

import matplotlib

matplotlib.use("Agg")

import logomaker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from kipoi_dfim.motifs import MotifSet, write_meme  # noqa: E402
from kipoi_dfim.neuronmotif.interpret import NeuronResult  # noqa: E402
from kipoi_dfim.neuronmotif.match import motif_dictionary, segment_label  # noqa: E402
from kipoi_dfim.neuronmotif.ppm import information_content  # noqa: E402
from kipoi_dfim.neuronmotif.syntax import syntax_tree, tree_lines  # noqa: E402
from kipoi_dfim.output.base import atomic_path

TSV_COLUMNS = ("layer", "cn", "crm", "n_sequences", "groups", "quality", "consensus_value", "max_value", "consensus",
               "segments", "jaspar", "jaspar_q")


def meme_for(result: NeuronResult) -> MotifSet:
    """The CN's CRM PPMs as a MotifSet."""
    ids = [f"L{result.layer}_CN{result.neuron}_CRM{m.index}" for m in result.crms]
    names = [f"n={m.n}_quality={m.quality:.3f}" for m in result.crms]
    return MotifSet(ids, names, [m.ppm for m in result.crms], source=f"NeuronMotif layer {result.layer}")


def table(results: list[NeuronResult], q_max: float = 0.05) -> pd.DataFrame:
    """One row per CRM (see :data:`TSV_COLUMNS`); segments as ``start-end:CONSENSUS`` joined by ``;``."""
    rows = []
    for r in results:
        for m in r.crms:
            segs = ";".join(f"{s.start}-{s.end}:{s.consensus}" for s in m.segments)
            labels = ";".join(segment_label(m, i, q_max) for i in range(len(m.segments)))
            qs = ";".join(f"{m.matches[i][0]['q']:.3g}" if i < len(m.matches) and m.matches[i] else ""
                          for i in range(len(m.segments)))
            rows.append((r.layer, r.neuron, m.index, m.n, r.groups, round(m.quality, 4), round(m.consensus_value, 4),
                         round(m.max_value, 4), m.consensus, segs, labels, qs))
    return pd.DataFrame(rows, columns=list(TSV_COLUMNS))


def logo_png(ppm: np.ndarray, title: str = "") -> str:
    """Base64 PNG of an information-content logo of ``ppm`` (W, 4)."""
    heights = np.asarray(ppm) * information_content(ppm)[:, None]
    df = pd.DataFrame(heights, columns=list("ACGT"))
    fig, ax = plt.subplots(figsize=(max(2.5, 0.22 * len(ppm)), 1.3))
    logomaker.Logo(df, ax=ax, color_scheme="classic")
    ax.set_ylim(0, 2)
    ax.set_ylabel("bits")
    ax.set_title(title, fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _section(r: NeuronResult, q_max: float) -> str:
    e = html.escape
    parts = [f"<h2 id='cn{r.neuron}'>Layer {r.layer}, CN {r.neuron}</h2>",
             f"<p>{r.n_sequences} sequences, max value {r.max_value:.3g}, P = {r.groups}, "
             f"{len(r.crms)} CRMs, {r.generations} GA generations over {r.islands} islands, {r.seconds:.1f} s</p>",
             f"<p>stacked (no demixing):<br><img src='data:image/png;base64,{logo_png(r.stacked_ppm)}'></p>",
             "<table><tr><th>CRM</th><th>n</th><th>quality</th><th>logo</th><th>segments (JASPAR, q)</th></tr>"]
    for m in r.crms:
        segs = "<br>".join(
            e(f"{s.start}-{s.end} {s.consensus}: {segment_label(m, i, q_max)}"
              + (f" (q={m.matches[i][0]['q']:.2g})" if i < len(m.matches) and m.matches[i] else ""))
            for i, s in enumerate(m.segments)) or "-"
        parts.append(f"<tr><td>{m.index}</td><td>{m.n}</td><td>{m.quality:.3f}</td>"
                     f"<td><img src='data:image/png;base64,{logo_png(m.ppm)}'></td><td>{segs}</td></tr>")
    parts.append("</table><h3>Syntax tree</h3><pre>"
                 + e("\n".join(tree_lines(r.tree or syntax_tree(r, q_max))) or "(no motif segments)") + "</pre>")
    return "\n".join(parts)


def write_outputs(results: list[NeuronResult], out_dir: str, model_name: str = "", q_max: float = 0.05,
                  progress_bar=None) -> dict[str, str]:
    """Write the MEME files, the TSV and the HTML page into ``out_dir``; returns {kind: path}."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for r in results:
        syntax_tree(r, q_max)
        if r.crms:
            p = os.path.join(out_dir, f"layer{r.layer}_cn{r.neuron}.meme")
            write_meme(meme_for(r), p)
            paths[f"meme_cn{r.neuron}"] = p
    tsv = os.path.join(out_dir, "neuron_motifs.tsv")
    with atomic_path(tsv) as tmp:
        table(results, q_max).to_csv(tmp, sep="\t", index=False)
    paths["tsv"] = tsv
    page = os.path.join(out_dir, "neuron_motifs.html")
    dictionary = motif_dictionary(results, q_max)
    sub = results[0].substructure.describe() if results else ""
    body = [f"<h1>NeuronMotif: {html.escape(model_name)}</h1>", f"<pre>{html.escape(sub)}</pre>",
            "<h2>Motif dictionary</h2><ul>"]
    body += [f"<li>{html.escape(k)}: {len(v)} segments in CNs {sorted({n for n, _, _ in v})}</li>"
             for k, v in dictionary.items()]
    body.append("</ul>")
    body += [_section(r, q_max) for r in results]
    doc = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>NeuronMotif</title><style>"
           "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:4px;vertical-align:middle}</style></head><body>"
           + "\n".join(body) + "</body></html>")
    with atomic_path(page) as tmp, open(tmp, "w") as fh:
        fh.write(doc)
    paths["html"] = page
    return paths
