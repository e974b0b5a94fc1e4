"""The package's layout rules, read from the source (every import, function-level ones included):

- no import cycle between modules;
- stage packages import only from stages below them
  (cli/demo -> comparison -> training -> inference -> data -> losses/evaluation -> io/networks/files -> errors/types);
- nibabel only in seg/io.py; an import inside a function only where its comment says why (optional dependency
  or measured start-up cost).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "seg"

# Rank of each stage: a module may import from its own stage or a lower rank only.
RANKS = {
    "seg": 0, "seg.errors": 0, "seg.types": 0,
    "seg.files": 1, "seg.io": 2, "seg.networks": 2,
    "seg.losses": 3, "seg.evaluation": 3,
    "seg.data": 4, "seg.planning": 5, "seg.inference": 6, "seg.training": 7, "seg.comparison": 8,
    "seg.cli": 9, "seg.demo": 9, "seg.alpha": 9,  # seg.alpha: the re-exporting compatibility module
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool, str]]:
    """(target module, line, inside a function, source line) for every import of the package in ``module``."""
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                   for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = module if path.name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules and name.split(".")[0] in ("seg", "nibabel"):
                if name.split(".")[0] == "nibabel":
                    break
                name = name.rpartition(".")[0]
            if name and (name in modules or name.split(".")[0] == "nibabel"):
                found.append((name, node.lineno, id(node) in in_function, lines[node.lineno - 1]))
    return found


def _stage(module: str) -> str:
    return ".".join(module.split(".")[:2])


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int, bool, str]]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def test_every_stage_has_a_rank(graph) -> None:
    assert {_stage(m) for m in graph} <= set(RANKS), sorted({_stage(m) for m in graph} - set(RANKS))


def test_no_import_cycle(graph) -> None:
    edges = {m: {t for t, *_ in imports if t.startswith("seg") and t != m and not m.startswith(t + ".")}
             for m, imports in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])


def test_stages_import_only_from_below(graph) -> None:
    upward = [f"{m}:{line} imports {t} (rank {RANKS[_stage(t)]} > {RANKS[_stage(m)]})"
              for m, imports in graph.items() for t, line, _, _ in imports
              if t.startswith("seg") and RANKS[_stage(t)] > RANKS[_stage(m)]]
    assert not upward, "\n".join(upward)


def test_nibabel_only_in_io(graph) -> None:
    users = sorted({m for m, imports in graph.items() for t, *_ in imports if t.split(".")[0] == "nibabel"})
    assert users == ["seg.io"]


def test_function_level_imports_say_why(graph) -> None:
    unexplained = [f"{m}:{line}: {text.strip()}" for m, imports in graph.items() for t, line, inner, text in imports
                   if inner and t.startswith("seg") and not any(w in text for w in ("start-up", "optional"))]
    assert not unexplained, "\n".join(unexplained)


def test_files_stay_under_300_lines() -> None:
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long
