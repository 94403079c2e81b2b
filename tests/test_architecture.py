"""The layering the README describes, enforced: the stacks never import each other, shared/
never imports a web framework, the gateway never imports the local tools or the suites, the
diff engine imports nothing but shared, and no module of the project sits on an import
circle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "legacy_flask", "fastapi_app", "harness", "parity_tests", "load_test")


def test_import_contracts_are_kept() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 kept, 0 broken" in result.stdout


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing
    itself): every import circle, each sorted. Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
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
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(sorted(component))
    return found


def test_circles_finds_a_circle_and_only_circles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert sorted(circles(edges)) == [["a", "b", "c"], ["e"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_project_is_on_an_import_circle() -> None:
    # TYPE_CHECKING imports count: a circle that only the type checker follows still ties
    # two modules together (the diff engine and its rules had one).
    # (`gateway.py`, the composition root, is a lone module grimp cannot load; nothing of
    # the project imports it, so it cannot close a circle.)
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    edges = {
        module: graph.find_modules_directly_imported_by(module)
        for module in graph.modules
        if module.split(".")[0] in PACKAGES
    }
    assert circles(edges) == []


def test_both_tools_use_the_one_percentile_and_chart_module() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    for importer, imported in [
        ("parity_tests.latency", "harness.report.stats"),
        ("load_test.stats", "harness.report.stats"),
        ("parity_tests.report", "harness.report.charts"),
        ("load_test.report", "harness.report.charts"),
        ("load_test.a2wsgi_app", "harness.gateway.apps"),
        ("parity_tests.targets", "harness.gateway.apps"),
        ("load_test.targets", "harness.local.processes"),
        ("harness.local.devstack", "harness.local.processes"),
    ]:
        assert graph.direct_import_exists(importer=importer, imported=imported), (
            importer,
            imported,
        )
