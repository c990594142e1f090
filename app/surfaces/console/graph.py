"""A workflow's graph as SVG: its steps left to right, each node coloured by its job's state.

The tree is the workflow's request (chain, group, chord, nested), its task nodes matched to
the job ids in the order the workflow created them. It stays readable at 10,000 steps: a
group of more than GROUP_MAX members is drawn as one node that counts its jobs by state
(with a bar of them), and a chain of more than CHAIN_MAX steps shows its first and last
CHAIN_ENDS steps around one such node for the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

GROUP_MAX = 8
CHAIN_MAX = 12
CHAIN_ENDS = 5
TASK_W, TASK_H = 150, 38
SUMMARY_W, SUMMARY_H = 200, 60
GAP_X, GAP_Y, MARGIN = 44, 12, 16
#: Above this many edges between two steps, they meet at a junction point instead.
FAN_MAX = 16
#: Worst first: the state a summary node is coloured by.
SEVERITY = ("FAILURE", "REVOKED", "RETRY", "PROGRESS", "STARTED", "PENDING", "EXPIRED", "SUCCESS")


@dataclass
class Node:
    kind: str  # task, chain, group, summary
    children: list[Node] = field(default_factory=list)
    job_id: str = ""
    task: str = ""
    states: Counter[str] = field(default_factory=Counter)
    label: str = ""


def tree(request: Mapping[str, Any], job_ids: list[str]) -> Node:
    """The request's tree with each task node's job id (in the order the workflow made them)."""
    ids = iter(job_ids)

    def walk(step: Mapping[str, Any]) -> Node:
        if step.get("task") is not None:
            return Node("task", job_id=next(ids, ""), task=str(step["task"]))
        children = [walk(s) for s in step.get("steps") or []]
        if step.get("type") == "chain":
            return Node("chain", children)
        group = Node("group", children)
        if step.get("type") == "chord" and step.get("callback"):
            return Node("chain", [group, walk(step["callback"])])
        return group

    return walk(request)


def _leaves(node: Node) -> list[Node]:
    if node.kind == "task":
        return [node]
    return [leaf for child in node.children for leaf in _leaves(child)]


def _summary(nodes: list[Node], label: str, states: Mapping[str, str]) -> Node:
    counts: Counter[str] = Counter(states.get(leaf.job_id, "EXPIRED") for leaf in nodes)
    return Node("summary", states=counts, label=label)


def collapse(node: Node, states: Mapping[str, str]) -> Node:
    """The tree with large groups and long chains folded into summary nodes."""
    if node.kind == "group" and len(node.children) > GROUP_MAX:
        leaves = [leaf for child in node.children for leaf in _leaves(child)]
        return _summary(leaves, f"group of {len(node.children):,}", states)
    children = [collapse(c, states) for c in node.children]
    if node.kind == "chain" and len(children) > CHAIN_MAX:
        middle = node.children[CHAIN_ENDS:-CHAIN_ENDS]
        leaves = [leaf for child in middle for leaf in _leaves(child)]
        folded = _summary(leaves, f"{len(middle):,} more steps", states)
        children = [*children[:CHAIN_ENDS], folded, *children[-CHAIN_ENDS:]]
    return Node(node.kind, children, node.job_id, node.task, node.states, node.label)


def _size(node: Node) -> tuple[float, float]:
    if node.kind == "task":
        return TASK_W, TASK_H
    if node.kind == "summary":
        return SUMMARY_W, SUMMARY_H
    sizes = [_size(c) for c in node.children] or [(0.0, 0.0)]
    if node.kind == "chain":
        return sum(w for w, _ in sizes) + GAP_X * (len(sizes) - 1), max(h for _, h in sizes)
    return max(w for w, _ in sizes), sum(h for _, h in sizes) + GAP_Y * (len(sizes) - 1)


Point = tuple[float, float]


def _worst(counts: Counter[str]) -> str:
    return next((s for s in SEVERITY if counts.get(s)), "PENDING")


def _draw(
    node: Node, x: float, y: float, states: Mapping[str, str], out: list[str]
) -> tuple[list[Point], list[Point]]:
    """Draw ``node`` with its top left at (x, y); its entry and exit points."""
    w, h = _size(node)
    if node.kind == "task":
        state = states.get(node.job_id, "EXPIRED")
        name = node.task if len(node.task) <= 20 else node.task[:19] + "…"
        out.append(
            f'<a href="{escape(node.job_id)}" class="node-link" data-job-id="{escape(node.job_id)}">'
            f'<rect class="node st-{escape(state)}" data-state="{escape(state)}" x="{x:.0f}" y="{y:.0f}" '
            f'width="{w}" height="{h}" rx="6"/>'
            f'<text class="node-name" x="{x + 8:.0f}" y="{y + 16:.0f}">{escape(name)}</text>'
            f'<text class="node-state" x="{x + 8:.0f}" y="{y + 31:.0f}">{escape(state)}</text>'
            f"<title>{escape(node.task)} {escape(node.job_id)} {escape(state)}</title></a>"
        )
        return [(x, y + h / 2)], [(x + w, y + h / 2)]
    if node.kind == "summary":
        worst = _worst(node.states)
        total = sum(node.states.values()) or 1
        out.append(
            f'<g class="summary"><rect class="node st-{escape(worst)}" data-state="{escape(worst)}" '
            f'x="{x:.0f}" y="{y:.0f}" width="{w}" height="{h}" rx="6"/>'
            f'<text class="node-name" x="{x + 8:.0f}" y="{y + 16:.0f}">{escape(node.label)}</text>'
        )
        bx = x + 8.0
        for state in SEVERITY:
            count = node.states.get(state, 0)
            if count:
                bw = (w - 16) * count / total
                out.append(
                    f'<rect class="bar st-{state}" x="{bx:.1f}" y="{y + 24:.0f}" '
                    f'width="{bw:.1f}" height="8"/>'
                )
                bx += bw
        text = ", ".join(f"{n:,} {s.lower()}" for s in SEVERITY if (n := node.states.get(s, 0)))
        out.append(
            f'<text class="node-state" x="{x + 8:.0f}" y="{y + 48:.0f}">{escape(text[:38])}</text>'
            f"<title>{escape(text)}</title></g>"
        )
        return [(x, y + h / 2)], [(x + w, y + h / 2)]
    if node.kind == "chain":
        cx = x
        entries: list[Point] = []
        exits: list[Point] = []
        for i, child in enumerate(node.children):
            cw, ch = _size(child)
            child_in, child_out = _draw(child, cx, y + (h - ch) / 2, states, out)
            if i == 0:
                entries = child_in
            else:
                _edges(exits, child_in, out)
            exits = child_out
            cx += cw + GAP_X
        return entries, exits
    cy = y
    entries, exits = [], []
    for child in node.children:
        _, ch = _size(child)
        child_in, child_out = _draw(child, x, cy, states, out)
        entries += child_in
        exits += child_out
        cy += ch + GAP_Y
    return entries, exits


def _edges(sources: list[Point], targets: list[Point], out: list[str]) -> None:
    if len(sources) * len(targets) > FAN_MAX:
        jx = max(p[0] for p in sources) + GAP_X / 2
        jy = sum(p[1] for p in sources + targets) / len(sources + targets)
        for sx, sy in sources:
            out.append(f'<line class="edge" x1="{sx:.0f}" y1="{sy:.0f}" x2="{jx:.0f}" y2="{jy:.0f}"/>')
        for tx, ty in targets:
            out.append(f'<line class="edge" x1="{jx:.0f}" y1="{jy:.0f}" x2="{tx:.0f}" y2="{ty:.0f}"/>')
        return
    for sx, sy in sources:
        for tx, ty in targets:
            out.append(
                f'<path class="edge" d="M{sx:.0f},{sy:.0f} C{sx + GAP_X / 2:.0f},{sy:.0f} '
                f'{tx - GAP_X / 2:.0f},{ty:.0f} {tx:.0f},{ty:.0f}"/>'
            )


def svg(root: Node, states: Mapping[str, str], job_href: str) -> Markup:
    """The (collapsed) tree as an SVG; ``job_href`` is a job page's URL with ``{id}`` for the job id."""
    folded = collapse(root, states)
    w, h = _size(folded)
    out: list[str] = []
    _draw(folded, MARGIN, MARGIN, states, out)
    body = "".join(out)
    # Task links were written with the bare job id: make them the job pages' URLs.
    prefix, _, suffix = job_href.partition("{id}")
    body = body.replace('<a href="', f'<a href="{escape(prefix)}')
    if suffix:
        body = body.replace('" class="node-link"', f'{escape(suffix)}" class="node-link"')
    width, height = w + 2 * MARGIN, h + 2 * MARGIN
    return Markup(
        f'<svg class="workflow" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" '
        f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="workflow graph">{body}</svg>'
    )
