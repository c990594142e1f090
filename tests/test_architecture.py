"""The shape of app/ (docs/ARCHITECTURE.md): layer packages, a handful of entry modules, no cycle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grimp

ROOT = Path(__file__).resolve().parent.parent

#: The layer packages, highest first (the import-linter contract in pyproject.toml says the same).
LAYERS = ["surfaces", "processes", "calling", "core", "tasks", "catalogue", "ops", "services", "foundation"]
#: The modules allowed at the top of app/: the entry points and the README's Python import paths.
ENTRY_MODULES = {"__init__", "factory", "web", "result", "canvas", "client", "eager"}


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def imported(module: str) -> Any:
        return iter(sorted(graph.find_modules_directly_imported_by(module) & modules))

    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, imported(root))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, imported(child)))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_between_any_two_modules() -> None:
    """No module of app/ reaches itself through imports, those inside functions included (a package's
    ``__init__`` and its own modules count too; the one allowed upward re-export of app.tasks aside)."""
    graph = grimp.build_graph("app", include_external_packages=False)
    graph.remove_import(importer="app.tasks", imported="app.calling.calls")
    assert _cycles(graph, set(graph.modules)) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: two modules importing each other are reported."""
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert _cycles(graph, set(graph.modules)) == [["pkg.a", "pkg.b"]]


def test_the_top_of_app_is_the_layers_and_the_entry_modules() -> None:
    """``ls app/`` shows the layers: one package each, and no loose module but the entry points and
    the public import paths kept for callers (app.result, app.canvas, app.client, app.eager)."""
    top = ROOT / "app"
    packages = sorted(p.name for p in top.iterdir() if (p / "__init__.py").exists())
    modules = {p.stem for p in top.glob("*.py")}
    assert packages == sorted(LAYERS)
    assert modules == ENTRY_MODULES


def test_the_public_import_paths_still_work() -> None:
    """The README's Python section: app.tasks, app.result, app.canvas, app.client, app.eager."""
    from app.canvas import chain, chord, group
    from app.client import Client
    from app.eager import eager
    from app.result import AsyncResult
    from app.tasks import add

    assert add.name == "add"
    assert AsyncResult.__module__ == "app.calling.result"
    assert {chain.__module__, chord.__module__, group.__module__} == {"app.calling.canvas"}
    # app.client re-exports the client package's Client (clients/python, issue 24)
    assert Client.__module__ == "tasklane_client.client" and callable(eager)


def test_the_layers_contract_names_every_layer_package() -> None:
    """pyproject.toml's layers contract lists each package of app/ once, in the documented order."""
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split('name = "Tasklane layers"', 1)[1].split("]\n", 2)[1]
    named = [
        part.strip()
        for line in block.splitlines()
        if line.strip().startswith('"app.')
        for part in line.strip().strip('",').split("|")
    ]
    assert [n.removeprefix("app.") for n in named] == LAYERS
