"""The layout is the architecture: no import circle, stages import only earlier stages, modules stay small.

The import graph is read from the source with `ast` (imports inside functions included, since a lazy
import is still a dependency), so these tests hold without importing anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "auditor"
MAX_LINES = 450

# The stages in the order they may import each other: a module may import its own stage and any earlier
# one. `errors`, `resources` and `version` are the foundation every stage stands on; the package root
# (`auditor`, the public API) and `__main__` stand above all.
FOUNDATION = ("errors", "resources", "version")
STAGES = ("policy", "stats", "certificate", "model", "tasks", "attest", "audit", "verify", "gate", "basin", "optim")
STAGES += ("cli",)


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package at `root`."""
    out = {}
    for path in root.rglob("*.py"):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at module level or inside functions)."""
    files = module_files(root)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names)
        deps = set()
        for t in targets:
            while t not in files and "." in t:
                t = t.rpartition(".")[0]  # `import a.b.c` depends on the module a.b.c names, or its package
            if t in files and t != name:
                deps.add(t)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None when the graph is acyclic."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph(ROOT)
    assert len(graph) > 50 and any(graph.values())  # the walk really read the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_deliberate_cycle_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text('"""docs only"""\n')
    (pkg / "a.py").write_text("from toy.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g  # lazy, relative: still an edge\n")
    (pkg / "c.py").write_text("import os\n\ndef g():\n    pass\n")
    assert find_cycle(import_graph(pkg)) is None
    (pkg / "c.py").write_text("import os\n\ndef g():\n    import toy.a\n")  # closes a -> sub.b -> c -> a
    assert find_cycle(import_graph(pkg)) == ["toy.a", "toy.sub.b", "toy.c", "toy.a"]


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "auditor"


def test_every_module_belongs_to_a_stage_or_the_foundation() -> None:
    strays = sorted(m for m in import_graph(ROOT) if _stage(m) not in (*FOUNDATION, *STAGES, "auditor", "__main__"))
    assert not strays, f"modules outside every stage: {strays} (add them to a stage's subpackage)"


def stage_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes against the stage order, as 'module -> dependency (why)'."""
    rank = {s: i for i, s in enumerate(STAGES)}
    wrong = []
    for module, deps in graph.items():
        here = _stage(module)
        for dep in deps:
            there = _stage(dep)
            if here in FOUNDATION and there != "auditor":
                wrong.append(f"{module} -> {dep} (the foundation imports nothing of the package)")
            elif here in rank and there in rank and rank[there] > rank[here]:
                wrong.append(f"{module} -> {dep} ({here} stands before {there})")
    return sorted(wrong)


def test_stages_import_only_earlier_stages() -> None:
    wrong = stage_violations(import_graph(ROOT))
    assert not wrong, "imports against the stage order:\n" + "\n".join(wrong)


def test_a_backward_import_between_stages_is_found() -> None:
    graph = {"auditor.audit.job": {"auditor.attest.publish"}, "auditor.errors": set()}
    assert stage_violations(graph) == []
    graph["auditor.attest.publish"] = {"auditor.audit.sample"}
    graph["auditor.errors"] = {"auditor.policy.schema"}
    assert stage_violations(graph) == [
        "auditor.attest.publish -> auditor.audit.sample (attest stands before audit)",
        "auditor.errors -> auditor.policy.schema (the foundation imports nothing of the package)",
    ]


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_no_module_is_over_the_line_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT.parent)}: {lines} lines (over {MAX_LINES}): split it by job"
