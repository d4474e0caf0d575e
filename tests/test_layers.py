"""The stage graph: imports run one way, and the top-level packages form no cycle.

Every import in every module of the project's packages counts, function-local ones included
(an import inside a function is still a dependency; it only delays it). ``if TYPE_CHECKING:``
blocks are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "synthetic": {"core"},
    "training": {"core", "synthetic"},
    "store": {"core"},
    "evaluation": {"core", "synthetic", "training", "store"},
    "analysis": {"core", "store"},
    "launcher": {"core", "synthetic", "training", "store", "evaluation", "analysis"},
    "hydra_plugins": {"core", "synthetic", "training", "store", "evaluation", "analysis",
                      "launcher"},
}
"""Which project packages each package may import: shared code at the bottom, each stage on
the earlier ones, the orchestrator (launcher, and the Hydra plugins that call it) on top."""


def _package(module: str) -> str | None:
    """The project package a dotted module name belongs to, or None (third party)."""
    parts = module.split(".")
    if parts[0] == "hydra_plugins":
        return "hydra_plugins" if len(parts) > 1 and parts[1].startswith("clipscale") else None
    return parts[0] if parts[0] in ALLOWED else None


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, at any depth."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def edges() -> list[tuple[str, str, str]]:
    """(importing package, imported package, "file:line") for every cross-package import."""
    out = []
    for package in ALLOWED:
        folder = ROOT / package
        for path in sorted(folder.rglob("*.py")):
            if package == "hydra_plugins" and not path.relative_to(folder).parts[0].startswith("clipscale"):
                continue
            for line, module in imports(path):
                target = _package(module)
                if target and target != package:
                    out.append((package, target, f"{path.relative_to(ROOT)}:{line} imports {module}"))
    return out


def test_imports_run_one_way():
    bad = [where for src, dst, where in edges() if dst not in ALLOWED[src]]
    assert not bad, "imports against the stage order (see ALLOWED):\n  " + "\n  ".join(bad)


def test_top_level_packages_form_no_cycle():
    graph: dict[str, set[str]] = {p: set() for p in ALLOWED}
    where: dict[tuple[str, str], str] = {}
    for src, dst, at in edges():
        graph[src].add(dst)
        where.setdefault((src, dst), at)

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            found = cycle_from(nxt, path + [nxt])
            if found:
                return found
        return None

    for start in graph:
        cycle = cycle_from(start, [start])
        assert cycle is None, "import cycle " + " -> ".join(cycle) + ":\n  " + "\n  ".join(
            where[(a, b)] for a, b in zip(cycle, cycle[1:], strict=False))


def test_the_checker_sees_function_local_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from evaluation.evaluate import evaluate\n")
    assert imports(f) == [(2, "evaluation.evaluate")]
