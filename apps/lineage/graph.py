"""The lineage graph and the registry other apps extend it through.

Nodes are ``{id: "<kind>:<uuid>", kind, label, url, attrs}`` and edges
``{source, target, relation}``. Every edge points downstream, from what was used to what
came of it: ``dataset_version:… -input_of-> job:… -produced-> model_version:…``. A relation
reads "source <relation> target".

A *kind* is a node type one can focus on (``resolve`` finds the node a user may see, or
None). An *expander* takes the uuids of some nodes of one kind and yields their neighbours
in one direction, as ``(uuid of the node it starts from, neighbour node, relation)``. The
serving app adds deployments with, in its AppConfig.ready()::

    register_kind("deployment", resolve=deployment_node)
    register_expander("model_version", "downstream", model_version_deployments)  # -deployed_as->
    register_expander("deployment", "upstream", deployment_model_version)

Nodes with no expanders (code, image, script) end the walk."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["upstream", "downstream"]
DIRECTIONS: tuple[Direction, ...] = ("upstream", "downstream")
MAX_NODES = 200


@dataclass
class Node:
    id: str
    kind: str
    label: str
    url: str = ""
    attrs: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The part after "<kind>:": a uuid for entity kinds."""
        return self.id.split(":", 1)[1]

    def as_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "label": self.label, "url": self.url, "attrs": self.attrs}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    relation: str

    def as_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "relation": self.relation}


Resolver = Callable[..., "Node | None"]  # (*, user, id: uuid.UUID) -> Node | None
Expander = Callable[..., Iterable[tuple[str, Node, str]]]  # (*, user, ids: list[str]) -> (from uuid, node, relation)

KINDS: dict[str, Resolver] = {}
EXPANDERS: dict[Direction, dict[str, list[Expander]]] = {d: {} for d in DIRECTIONS}


def register_kind(kind: str, *, resolve: Resolver) -> None:
    KINDS[kind] = resolve


def register_expander(kind: str, direction: Direction, expander: Expander) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}")
    expanders = EXPANDERS[direction].setdefault(kind, [])
    if expander not in expanders:
        expanders.append(expander)


@dataclass
class Graph:
    focus: str
    nodes: dict[str, Node]
    edges: list[Edge]
    truncated: bool = False

    def as_dict(self) -> dict:
        return {
            "focus": self.focus,
            "nodes": [n.as_dict() for n in self.nodes.values()],
            "edges": [e.as_dict() for e in self.edges],
            "truncated": self.truncated,
        }


def walk(*, user, focus: Node, max_nodes: int = MAX_NODES) -> Graph:
    """Everything upstream of `focus` (what it came from, transitively) and everything
    downstream (what came from it), breadth first, one batch of expander calls per kind and
    level, at most `max_nodes` nodes."""
    nodes: dict[str, Node] = {focus.id: focus}
    edges: dict[tuple[str, str, str], Edge] = {}
    truncated = False
    for direction in DIRECTIONS:
        seen = {focus.id}
        frontier = [focus]
        while frontier:
            by_kind: dict[str, list[Node]] = {}
            for node in frontier:
                by_kind.setdefault(node.kind, []).append(node)
            frontier = []
            for kind, group in by_kind.items():
                ids = [n.key for n in group]
                for expander in EXPANDERS[direction].get(kind, []):
                    for from_key, neighbour, relation in expander(user=user, ids=ids):
                        if neighbour.id not in nodes:
                            if len(nodes) >= max_nodes:
                                truncated = True
                                continue
                            nodes[neighbour.id] = neighbour
                        start = f"{kind}:{from_key}"
                        source, target = (neighbour.id, start) if direction == "upstream" else (start, neighbour.id)
                        edges.setdefault((source, target, relation), Edge(source, target, relation))
                        if neighbour.id not in seen:
                            seen.add(neighbour.id)
                            frontier.append(neighbour)
    return Graph(focus=focus.id, nodes=nodes, edges=list(edges.values()), truncated=truncated)
