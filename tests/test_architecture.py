"""The package's imports point one way: core ← data ← models ← {optim, eval, inference} ← train ←
workflows ← cli, with no cycle between modules or packages and no package import hidden inside a
function (where it would hide a cycle). Parsed with ``ast``, so nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hftraining

PACKAGE = Path(hftraining.__file__).parent
LAYERS = {"core": 0, "data": 1, "models": 2, "optim": 3, "eval": 3, "inference": 3, "train": 4, "workflows": 5, "cli": 6,
          "__main__": 7}  # python -m hftraining: the entry point above the CLI


def module_names(root: Path) -> dict[str, Path]:
    """{dotted module name: file} of every module under ``root`` (a package folder)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module of the package, line, inside a function) for every import in ``path``.
    ``from pkg import sub`` counts as an import of ``pkg.sub`` when that is a module, else of ``pkg``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            targets = subs if len(subs) == len(node.names) else [base, *subs]
        for t in targets:
            if t in known and t != name:
                out.append((t, node.lineno, id(node) in in_function))
    return out


def layer(name: str) -> tuple[str, int]:
    """(top-level part, rank) of a module: ``hftraining.data.io`` → ("data", 1)."""
    parts = name.split(".")
    top = parts[1] if len(parts) > 1 else "core"  # the root package holds only the version
    return top, LAYERS[top]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first = last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def check(root: Path) -> list[str]:
    """Every violation of the import rules in the package at ``root``, one line each."""
    mods = module_names(root)
    known = set(mods)
    problems = []
    graph: dict[str, set[str]] = {m: set() for m in mods}
    packages: dict[str, set[str]] = {}
    for name, path in mods.items():
        where, rank = layer(name)
        for target, line, hidden in imports(name, path, known):
            rel = f"{path.relative_to(root.parent)}:{line}"
            graph[name].add(target)
            there, target_rank = layer(target)
            if hidden:
                problems.append(f"{rel}: imports {target} inside a function")
            if there != where:
                packages.setdefault(where, set()).add(there)
                if target_rank >= rank:
                    problems.append(f"{rel}: {where} (layer {rank}) imports {target} (layer {target_rank})")
    for what, g in (("module", graph), ("package", packages)):
        cycle = find_cycle(g)
        if cycle:
            problems.append(f"{what} import cycle: {' -> '.join(cycle)}")
    return problems


def test_imports_point_down_the_layers_without_cycles():
    assert check(PACKAGE) == []


def test_every_module_is_in_a_layer():
    for name in module_names(PACKAGE):
        assert layer(name)[0] in LAYERS, name


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "hftraining"
    for rel, text in {"__init__.py": "", **files}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


@pytest.mark.parametrize("files, expected", [
    ({"data/__init__.py": "", "data/io.py": "from hftraining.models import base\n",
      "models/__init__.py": "", "models/base.py": ""}, "data (layer 1) imports hftraining.models.base (layer 2)"),
    ({"data/__init__.py": "", "data/a.py": "from hftraining.data import b\n", "data/b.py": "import hftraining.data.a\n"},
     "module import cycle: hftraining.data.a -> hftraining.data.b -> hftraining.data.a"),
    ({"train/__init__.py": "", "train/t.py": "def f():\n    from hftraining.core import c\n",
      "core/__init__.py": "", "core/c.py": ""}, "imports hftraining.core.c inside a function"),
    ({"eval/__init__.py": "", "eval/e.py": "from hftraining.inference import i\n",
      "inference/__init__.py": "", "inference/i.py": ""}, "eval (layer 3) imports hftraining.inference.i (layer 3)"),
])
def test_the_check_finds_upward_imports_cycles_and_hidden_imports(tmp_path, files, expected):
    problems = check(_package(tmp_path, files))
    assert any(expected in p for p in problems), problems
