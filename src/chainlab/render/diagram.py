"""Flow diagrams: per node the hooks a packet passed, with the chains it met there.

Nodes stand side by side; request edges are blue, reply edges green; a drop is a red
mark after the step where the packet died. The same model renders to Graphviz (dot,
SVG) and Mermaid.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chainlab.errors import ChainlabError
from chainlab.trace.flows import Flow
from chainlab.trace.analyze import drop_chain, walk_chains
from chainlab.trace.model import Packet
from chainlab.trace.netfilter import HOOKS

if TYPE_CHECKING:
    import graphviz

COLORS = {"request": "#1f6feb", "reply": "#2da44e"}
OTHER_COLOR = "#8250df"
DROP_COLOR = "#cf222e"


@dataclass
class Walk:
    """One distinct path: a node, a direction, hooks, the chains met at each hook."""

    node: str
    direction: str
    hooks: list[str]
    chains: dict[str, list[str]]
    verdict: str
    drop_at: str | None
    count: int = 1


@dataclass
class DiagramModel:
    nodes: list[str] = field(default_factory=list)
    walks: list[Walk] = field(default_factory=list)
    links: list[tuple[str, str, str, str, str]] = field(default_factory=list)


#: Distinct walks a diagram draws at most (more would not be readable); the rest are left out.
MAX_WALKS = 500

WalkKey = tuple[str, str, tuple[str, ...], str, "str | None"]


class DiagramBuilder:
    """Distinct walks (same node, direction, hooks, verdict, drop point), packet by packet,
    in bounded memory: each keeps the chains of its earliest packet and a count."""

    def __init__(self, tables: set[str] | None, max_walks: int = MAX_WALKS):
        self.tables = tables
        self.max_walks = max_walks
        self.walks: dict[WalkKey, tuple[int, Walk]] = {}

    def add(self, p: Packet) -> None:
        drop_at = drop_chain(p)
        key = (p.node, p.direction, tuple(p.hooks), p.verdict, drop_at)
        known = self.walks.get(key)
        if known is not None:
            known[1].count += 1
            if p.seq >= known[0]:
                return
            count = known[1].count
        elif len(self.walks) >= self.max_walks:
            return
        else:
            count = 1
        self.put(p.seq, Walk(p.node, p.direction, p.hooks, walk_chains(p.steps, self.tables), p.verdict, drop_at, count))

    def put(self, seq: int, walk: Walk) -> None:
        """Keep `walk` (whose earliest packet is number `seq`) as its kind's walk."""
        self.walks[(walk.node, walk.direction, tuple(walk.hooks), walk.verdict, walk.drop_at)] = (seq, walk)

    def model(self, nodes: list[str], flows: list[Flow]) -> DiagramModel:
        """The diagram: nodes in the given order, each node's walks in the order they began."""
        model = DiagramModel()
        rank = {node: i for i, node in enumerate(nodes)}
        ordered = sorted(self.walks.values(), key=lambda w: (rank.get(w[1].node, len(rank)), w[0]))
        model.walks = [walk for _, walk in ordered]
        model.nodes = list(dict.fromkeys(w.node for w in model.walks))
        for flow in flows:
            for a, b in zip(flow.hops, flow.hops[1:]):
                if a.hooks and b.hooks:
                    link = (a.node, a.hooks[-1], b.node, b.hooks[0], flow.direction)
                    if link not in model.links:
                        model.links.append(link)
        return model


def build_model(packets: list[Packet], flows: list[Flow], tables: set[str] | None) -> DiagramModel:
    """Distinct walks (same node, direction, hooks, verdict) and node-to-node links."""
    builder = DiagramBuilder(tables)
    for p in packets:
        builder.add(p)
    return builder.model(list(dict.fromkeys(p.node for p in packets)), flows)


def _id(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts))


def _node_ids(model: DiagramModel) -> dict[str, str]:
    """Each node's id in the diagram's source, by its place: names that differ only in what
    an id cannot hold (node-a and node_a, web.1 and web-1, non-ASCII names) must not share
    one, or their hooks merge into one box. The name itself is the box's label."""
    ids = {node: f"n{i}" for i, node in enumerate(model.nodes)}
    for a_node, _, b_node, _, _ in model.links:
        for node in (a_node, b_node):
            ids.setdefault(node, f"n{len(ids)}")
    return ids


def _hook_label(hook: str, chains: list[str]) -> str:
    return "\n".join([hook, *chains])


def _hook_chains(model: DiagramModel, node: str) -> dict[str, list[str]]:
    """Per hook a node's packets passed (in hook order), the chains they walked there."""
    seen: dict[str, list[str]] = {}
    for walk in model.walks:
        if walk.node == node:
            for hook in walk.hooks:
                merged = seen.setdefault(hook, [])
                merged.extend(c for c in walk.chains.get(hook, []) if c not in merged)
    return {hook: seen[hook] for hook in HOOKS if hook in seen}


def to_graphviz(model: DiagramModel, title: str = "") -> graphviz.Digraph:
    import graphviz  # 20 ms that `analyze` in the other formats does without

    graph = graphviz.Digraph("chainlab", graph_attr={
        "rankdir": "LR", "fontname": "Helvetica", "label": title, "labelloc": "t", "newrank": "true",
    }, node_attr={"shape": "box", "style": "rounded,filled", "fillcolor": "#f6f8fa", "fontname": "Helvetica", "fontsize": "10"},
       edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    ids = _node_ids(model)
    for node in model.nodes:
        nid = ids[node]
        with graph.subgraph(name=f"cluster_{nid}") as cluster:
            cluster.attr(label=node, style="rounded", color="#57606a", fontsize="14")
            for hook, chains in _hook_chains(model, node).items():
                cluster.node(_id(nid, hook), _hook_label(hook, chains))
            for i, walk in enumerate(w for w in model.walks if w.node == node):
                color = COLORS.get(walk.direction, OTHER_COLOR)
                label = walk.direction + (f" ×{walk.count}" if walk.count > 1 else "")
                for a, b in zip(walk.hooks, walk.hooks[1:]):
                    cluster.edge(_id(nid, a), _id(nid, b), label=label, color=color, fontcolor=color)
                if walk.drop_at and walk.hooks:
                    drop = _id(nid, "drop", str(i))
                    cluster.node(drop, f"✖ dropped\n{walk.drop_at}", shape="octagon", fillcolor="#ffebe9", color=DROP_COLOR, fontcolor=DROP_COLOR)
                    cluster.edge(_id(nid, walk.hooks[-1]), drop, color=DROP_COLOR, label=walk.direction, fontcolor=DROP_COLOR)
                if len(walk.hooks) == 1 and not walk.drop_at:
                    start = _id(nid, walk.direction, "in", str(i))
                    cluster.node(start, walk.direction, shape="plaintext", style="", fontcolor=color)
                    cluster.edge(start, _id(nid, walk.hooks[0]), color=color)
    for a_node, a_hook, b_node, b_hook, direction in model.links:
        color = COLORS.get(direction, OTHER_COLOR)
        graph.edge(_id(ids[a_node], a_hook), _id(ids[b_node], b_hook), color=color, style="dashed", label=f"{direction} (wire)", fontcolor=color)
    return graph


def to_dot(model: DiagramModel, title: str = "") -> str:
    return to_graphviz(model, title).source


def to_svg(model: DiagramModel, title: str = "") -> str:
    from graphviz import ExecutableNotFound  # see to_graphviz

    try:
        return to_graphviz(model, title).pipe(format="svg").decode("utf-8")
    except ExecutableNotFound:
        raise ChainlabError("graphviz's `dot` is not installed: apt-get install graphviz") from None


def _mermaid_text(text: str) -> str:
    return text.replace('"', "'")


def to_mermaid(model: DiagramModel, title: str = "") -> str:
    ids = _node_ids(model)
    lines = ["flowchart LR"]
    if title:
        # a YAML front matter: the title as a double-quoted scalar (JSON's string is one), so a
        # colon, a leading # or {, or a line break stay text
        lines.insert(0, f"---\ntitle: {json.dumps(title, ensure_ascii=False)}\n---")
    edges: list[str] = []
    styles: list[str] = []
    for node in model.nodes:
        nid = ids[node]
        lines.append(f'  subgraph {nid}["{_mermaid_text(node)}"]')
        for hook, chains in _hook_chains(model, node).items():
            label = "<br/>".join([f"<b>{hook}</b>", *chains])
            lines.append(f'    {_id(nid, hook)}["{_mermaid_text(label)}"]')
        for i, walk in enumerate(w for w in model.walks if w.node == node):
            for a, b in zip(walk.hooks, walk.hooks[1:]):
                edges.append(f"  {_id(nid, a)} -->|{walk.direction}| {_id(nid, b)}")
                styles.append(COLORS.get(walk.direction, OTHER_COLOR))
            if walk.drop_at and walk.hooks:
                drop = _id(nid, "drop", str(i))
                lines.append(f'    {drop}{{{{"✖ dropped<br/>{_mermaid_text(walk.drop_at)}"}}}}')
                edges.append(f"  {_id(nid, walk.hooks[-1])} -->|{walk.direction}| {drop}")
                styles.append(DROP_COLOR)
        lines.append("  end")
    for a_node, a_hook, b_node, b_hook, direction in model.links:
        edges.append(f"  {_id(ids[a_node], a_hook)} -.->|{direction}| {_id(ids[b_node], b_hook)}")
        styles.append(COLORS.get(direction, OTHER_COLOR))
    lines.extend(edges)
    lines.extend(f"  linkStyle {i} stroke:{color},color:{color}" for i, color in enumerate(styles))
    return "\n".join(lines) + "\n"
