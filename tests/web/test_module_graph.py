"""The web page's modules import one way: app -> router -> views -> shared modules, never back.

A view that imported the router (which loads the views) or a sibling view would close a circle: the
modules could then only be read, changed and loaded together.
"""

from __future__ import annotations

import re
from pathlib import Path

JS = Path(__file__).resolve().parents[2] / "service" / "web" / "static" / "js"
# `import {a} from "./x.js"`, `import "./x.js"`, `export {a} from "./x.js"` and `import("./x.js")`.
IMPORT = re.compile(r"""(?:\bfrom|\bimport)\s*\(?\s*["'](\.{1,2}/[^"']+)["']""")


def imports(path: Path) -> set[Path]:
    """The modules that ``path`` imports, statically or dynamically, as resolved paths."""
    return {(path.parent / target).resolve() for target in IMPORT.findall(path.read_text())}


def module_graph(root: Path) -> dict[Path, set[Path]]:
    graph = {path.resolve(): imports(path) for path in sorted(root.rglob("*.js"))}
    for module, targets in graph.items():
        missing = sorted(str(t) for t in targets - graph.keys())
        assert not missing, f"{module.name} imports modules that do not exist: {missing}"
    return graph


def find_cycle(graph: dict[Path, set[Path]]) -> list[Path] | None:
    """One import circle as [a, b, ..., a], or None when the graph has none (depth-first search)."""
    done: set[Path] = set()
    stack: list[Path] = []

    def visit(module: Path) -> list[Path] | None:
        if module in stack:
            return [*stack[stack.index(module) :], module]
        if module in done:
            return None
        stack.append(module)
        for target in sorted(graph[module]):
            cycle = visit(target)
            if cycle:
                return cycle
        stack.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_web_modules_import_no_circle() -> None:
    graph = module_graph(JS)
    assert (JS / "views" / "run.js").resolve() in graph[(JS / "router.js").resolve()]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(str(p.relative_to(JS)) for p in cycle)


def test_views_import_neither_the_router_nor_each_other() -> None:
    views = (JS / "views").resolve()
    offenders = {
        view.name: sorted(t.name for t in targets if t.parent == views or t.name == "router.js")
        for view, targets in module_graph(JS).items()
        if view.parent == views
    }
    offenders = {name: names for name, names in offenders.items() if names}
    assert not offenders, f"views import the router or other views: {offenders}"


def test_checker_sees_every_import_form(tmp_path: Path) -> None:
    tmp_path = tmp_path.resolve()
    (tmp_path / "views").mkdir()
    (tmp_path / "a.js").write_text(
        'import {\n  x,\n  y,\n} from "./b.js";\nimport "./c.js";\nconst load = () => import("./views/d.js");\n'
    )
    (tmp_path / "b.js").write_text('export { z } from "./c.js";\n')
    (tmp_path / "c.js").write_text("export const z = 1;\n")
    (tmp_path / "views" / "d.js").write_text('import { x } from "../a.js";\n')
    graph = module_graph(tmp_path)
    a, b, c, d = (tmp_path / name for name in ("a.js", "b.js", "c.js", "views/d.js"))
    assert graph[a] == {b, c, d} and graph[b] == {c} and graph[c] == set()
    assert find_cycle(graph) == [a, d, a]
    del graph[d]
    graph[a].remove(d)
    assert find_cycle(graph) is None
