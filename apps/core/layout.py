"""A small layered layout for drawing a graph as SVG on the server: the lineage page's, and a
pipeline run's DAG.

Columns follow the flow: a node sits one column right of its furthest-upstream-reaching
predecessor (longest path), so inputs come first, then jobs, then model versions, then
whatever another app hangs after them. Within a column, nodes are ordered by the mean row of
their neighbours (two sweeps of the barycenter heuristic), which keeps most edges short."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COL_WIDTH, ROW_HEIGHT = 290, 64
NODE_WIDTH, NODE_HEIGHT = 190, 44
MARGIN = 20
LABEL_CHARS = 24


@dataclass
class Placed:
    id: str
    key: str
    kind: str
    label: str
    short: str
    url: str
    attrs: dict
    x: int
    y: int
    focus: bool


@dataclass
class Line:
    d: str
    relation: str
    mid_x: int
    mid_y: int


def layout(graph: Any) -> dict:
    """``graph`` has ``focus`` (a node id or ""), ``nodes`` ({id: node with key, kind, label,
    url, attrs}) and ``edges`` (each with source, target, relation): a lineage Graph, or
    anything shaped like one."""
    ids = list(graph.nodes)
    preds: dict[str, list[str]] = {i: [] for i in ids}
    succs: dict[str, list[str]] = {i: [] for i in ids}
    for e in graph.edges:
        if e.source in preds and e.target in preds and e.source != e.target:
            preds[e.target].append(e.source)
            succs[e.source].append(e.target)

    # Longest-path layering; bounded passes so a cycle (which lineage should never have)
    # cannot hang the page.
    layer = {i: 0 for i in ids}
    for _ in range(len(ids)):
        changed = False
        for e in graph.edges:
            if e.source in layer and e.target in layer and layer[e.target] < layer[e.source] + 1:
                layer[e.target] = layer[e.source] + 1
                changed = True
        if not changed:
            break
    columns: dict[int, list[str]] = {}
    for i in ids:
        columns.setdefault(layer[i], []).append(i)
    order = sorted(columns)
    for c in order:
        columns[c].sort(key=lambda i: (graph.nodes[i].kind, graph.nodes[i].label))
    row = {i: n for c in order for n, i in enumerate(columns[c])}
    for neighbours, sweep in ((preds, order[1:]), (succs, list(reversed(order[:-1])))):
        for c in sweep:

            def bary(i: str, neighbours=neighbours) -> float:
                near = neighbours[i]
                return sum(row[n] for n in near) / len(near) if near else row[i]

            columns[c].sort(key=bary)
            for n, i in enumerate(columns[c]):
                row[i] = n

    tallest = max((len(v) for v in columns.values()), default=1)
    height = max(tallest * ROW_HEIGHT, ROW_HEIGHT) + 2 * MARGIN
    width = (max(order, default=0) + 1) * COL_WIDTH + 2 * MARGIN
    pos: dict[str, tuple[int, int]] = {}
    placed = []
    for c in order:
        offset = (height - 2 * MARGIN - len(columns[c]) * ROW_HEIGHT) // 2
        for n, i in enumerate(columns[c]):
            x = MARGIN + c * COL_WIDTH
            y = MARGIN + offset + n * ROW_HEIGHT + (ROW_HEIGHT - NODE_HEIGHT) // 2
            pos[i] = (x, y)
            node = graph.nodes[i]
            short = node.label if len(node.label) <= LABEL_CHARS else node.label[: LABEL_CHARS - 1] + "…"
            placed.append(
                Placed(i, node.key, node.kind, node.label, short, node.url, node.attrs, x, y, i == graph.focus)
            )
    lines = []
    for e in graph.edges:
        if e.source not in pos or e.target not in pos:
            continue
        (sx, sy), (tx, ty) = pos[e.source], pos[e.target]
        x1, y1 = sx + NODE_WIDTH, sy + NODE_HEIGHT // 2
        x2, y2 = tx, ty + NODE_HEIGHT // 2
        bend = max((x2 - x1) // 2, 30)
        d = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
        lines.append(Line(d, e.relation, (x1 + x2) // 2, (y1 + y2) // 2))
    return {
        "nodes": placed,
        "lines": lines,
        "width": width,
        "height": height,
        "node_width": NODE_WIDTH,
        "node_height": NODE_HEIGHT,
    }
