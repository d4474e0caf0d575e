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


REASONS = ("torch", "heavy", "fast path", "keeps", "kept", "deferred", "off ")
"""Words one of which a function-local import's comment holds: why it is not at the top."""


def local_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import inside a function of ``path`` (``TYPE_CHECKING`` left out)."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if _type_checking_only(node):
            return
        if in_function and isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif in_function and isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


def _says_why(lines: list[str], line: int) -> bool:
    """A reason on the import's line, or on the comment line above its run of imports."""
    i = line - 1
    if any(w in lines[i].partition("#")[2] for w in REASONS):
        return True
    while i > 0 and lines[i - 1].lstrip().startswith(("import ", "from ")):
        i -= 1
    above = lines[i - 1].strip() if i > 0 else ""
    return above.startswith("#") and any(w in above for w in REASONS)


def test_function_local_imports_say_why():
    """A function-local import of a project module is there to keep something heavy (torch) off
    a fast path, and says so; one that hides a cycle or merely sits late belongs at the top."""
    bad = []
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if package == "hydra_plugins" and not rel.parts[1].startswith("clipscale"):
                continue
            lines = path.read_text().splitlines()
            bad += [f"{rel}:{line} imports {module}" for line, module in local_imports(path)
                    if _package(module) and not _says_why(lines, line)]
    assert not bad, ("function-local imports without a reason (a comment naming what they keep "
                     "off which path, e.g. '# torch: kept off the plan'):\n  " + "\n  ".join(bad))
