"""Name CRM segments by their best JASPAR matches (Tomtom) and build the run's motif dictionary.

Matching uses :func:`kipoi_dfim.motifs.tomtom` (memelite) against a :class:`~kipoi_dfim.motifs.MotifSet`,
JASPAR CORE vertebrates from pyjaspar's bundled database by default (offline). A segment's dictionary label is
its best JASPAR match with q < ``q_max``, else ``novel:<consensus>`` shared by mutually similar unmatched
segments (Tomtom q < ``q_max``); the dictionary lists, per label, the CNs and CRMs where it occurs.
"""

from __future__ import annotations

from collections import defaultdict

from kipoi_dfim.motifs import MotifSet, tomtom
from kipoi_dfim.neuronmotif.interpret import NeuronResult


def match_segments(results: list[NeuronResult], motifs: MotifSet, n_best: int = 3, q_max: float = 0.05) -> None:
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
    _merge_novel(where, motifs, q_max)


def _merge_novel(where: list, motifs: MotifSet, q_max: float) -> None:
    """Give segments without a JASPAR match one shared label per group of mutually similar segments.

    Each unmatched segment is compared by Tomtom with JASPAR plus all unmatched segments (the database keeps
    Tomtom's null meaningful); it joins the group of the first earlier unmatched segment it matches with
    q < ``q_max``, and the group is labelled ``novel:<consensus of its first segment>``.
    """
    novel = [(crm, si) for crm, si in where if not (crm.matches[si] and crm.matches[si][0]["q"] < q_max)]
    if not novel:
        return
    ppms = [crm.segments[si].ppm for crm, si in novel]
    ids = [f"novel{i}" for i in range(len(novel))]
    db = MotifSet(motifs.ids + ids, motifs.names + ids, motifs.ppms + ppms)
    df = tomtom(ppms, db, n_nearest=None)
    df = df[df.target >= len(motifs)]
    rep = list(range(len(novel)))
    for row in df[df.q < q_max].itertuples(index=False):
        j = row.target - len(motifs)
        if j < row.query and rep[row.query] == row.query:
            rep[row.query] = rep[j]
    for i, (crm, si) in enumerate(novel):
        first_crm, first_si = novel[rep[i]]
        crm.segments[si].label = f"novel:{first_crm.segments[first_si].consensus}"


def segment_label(crm, si: int, q_max: float = 0.05) -> str:
    """Dictionary label of segment ``si`` of a CRM: best significant JASPAR match, else ``novel:<consensus>``."""
    hits = crm.matches[si] if si < len(crm.matches) else []
    if hits and hits[0]["q"] < q_max:
        return hits[0]["label"]
    return crm.segments[si].label or f"novel:{crm.segments[si].consensus}"


def motif_dictionary(results: list[NeuronResult], q_max: float = 0.05) -> dict[str, list[tuple[int, int, int]]]:
    """Label -> [(CN, CRM, segment), ...] over all CNs of a run, labels sorted by number of occurrences."""
    d: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for r in results:
        for crm in r.crms:
            for si in range(len(crm.segments)):
                d[segment_label(crm, si, q_max)].append((r.neuron, crm.index, si))
    return dict(sorted(d.items(), key=lambda kv: (-len(kv[1]), kv[0])))
