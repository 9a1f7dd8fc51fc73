"""Tree-structured motif syntax of a CN: its CRMs as motif paths, merged into a prefix tree with gap ranges.

Each CRM reads as a path ``motif1 -[gap]- motif2 -[gap]- ...`` (segments left to right, labelled by
:func:`kipoi_dfim.neuronmotif.match.segment_label`). Paths sharing a prefix of motif labels share branches; an
edge records the range (min-max bp) of the gap seen across the CRMs merged into it, and each node the CRMs that
pass through it. This is the paper's "syntax tree": the grammar a CN accepts, with hard or flexible spacing.
"""

from __future__ import annotations

from kipoi_dfim.neuronmotif.interpret import NeuronResult
from kipoi_dfim.neuronmotif.match import segment_label


def crm_path(crm, q_max: float = 0.05) -> list[tuple[str, int, int]]:
    """[(label, start, end), ...] of a CRM's segments, left to right."""
    return [(segment_label(crm, i, q_max), s.start, s.end) for i, s in enumerate(crm.segments)]


def syntax_tree(result: NeuronResult, q_max: float = 0.05) -> dict:
    """Prefix tree ``{"children": [{"motif", "gap": [lo, hi] or None, "start": [lo, hi], "crms", "children"}]}``."""
    root = {"children": []}
    for crm in result.crms:
        node, prev_end = root, None
        for label, start, end in crm_path(crm, q_max):
            gap = None if prev_end is None else start - prev_end
            child = next((c for c in node["children"] if c["motif"] == label), None)
            if child is None:
                child = {"motif": label, "gap": None if gap is None else [gap, gap], "start": [start, start],
                         "crms": [], "children": []}
                node["children"].append(child)
            elif gap is not None:
                child["gap"] = [min(child["gap"][0], gap), max(child["gap"][1], gap)]
            child["start"] = [min(child["start"][0], start), max(child["start"][1], start)]
            child["crms"].append(crm.index)
            node, prev_end = child, end
    result.tree = root
    return root


def tree_lines(tree: dict, indent: str = "") -> list[str]:
    """Text rendering, one node per line: ``-[gap 2-4 bp]- GATA1 (CRMs 0,3)``."""
    out = []
    for c in tree["children"]:
        gap = "" if c["gap"] is None else f"-[gap {_rng(c['gap'])} bp]- "
        out.append(f"{indent}{gap}{c['motif']} @{_rng(c['start'])} (CRMs {','.join(map(str, c['crms']))})")
        out.extend(tree_lines(c, indent + "    "))
    return out


def _rng(v: list[int]) -> str:
    return str(v[0]) if v[0] == v[1] else f"{v[0]}-{v[1]}"
