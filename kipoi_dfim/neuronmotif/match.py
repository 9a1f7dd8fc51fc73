"""Name CRM segments by their best JASPAR matches (Tomtom) and build the run's motif dictionary.

Matching uses :func:`kipoi_dfim.motifs.tomtom` (memelite) against a :class:`~kipoi_dfim.motifs.MotifSet`,
JASPAR CORE vertebrates from pyjaspar's bundled database by default (offline). A segment's dictionary label is
its best JASPAR match with q < ``q_max``, else ``novel:<consensus>``; the dictionary counts, per label, the CNs
and CRMs where it occurs.
"""

from __future__ import annotations

from collections import defaultdict

from kipoi_dfim.motifs import MotifSet, tomtom
from kipoi_dfim.neuronmotif.interpret import NeuronResult


def match_segments(results: list[NeuronResult], motifs: MotifSet, n_best: int = 3) -> None:
    """Fill ``crm.matches`` (per segment, the ``n_best`` Tomtom hits as dicts) for every CRM, in place."""
    where, queries = [], []
    for r in results:
        for crm in r.crms:
            crm.matches = [[] for _ in crm.segments]
            for si, seg in enumerate(crm.segments):
                where.append((crm, si))
                queries.append(seg.ppm)
    if not queries:
        return
    df = tomtom(queries, motifs, n_nearest=n_best)
    for row in df.itertuples(index=False):
        crm, si = where[row.query]
        crm.matches[si].append({"id": row.target_id, "name": row.target_name, "label": motifs.label(row.target),
                                "p": row.p, "q": row.q, "orientation": row.orientation})


def segment_label(crm, si: int, q_max: float = 0.05) -> str:
    """Dictionary label of segment ``si`` of a CRM: best significant JASPAR match, else ``novel:<consensus>``."""
    hits = crm.matches[si] if si < len(crm.matches) else []
    if hits and hits[0]["q"] < q_max:
        return hits[0]["label"]
    return f"novel:{crm.segments[si].consensus}"


def motif_dictionary(results: list[NeuronResult], q_max: float = 0.05) -> dict[str, list[tuple[int, int, int]]]:
    """Label -> [(CN, CRM, segment), ...] over all CNs of a run, labels sorted by number of occurrences."""
    d: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for r in results:
        for crm in r.crms:
            for si in range(len(crm.segments)):
                d[segment_label(crm, si, q_max)].append((r.neuron, crm.index, si))
    return dict(sorted(d.items(), key=lambda kv: (-len(kv[1]), kv[0])))
