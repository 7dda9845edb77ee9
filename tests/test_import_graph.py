"""The package's import structure: no cycle between its modules, imports at module level.

Read statically (``ast``) so that a cycle hidden in a function body, which Python only trips
over when that function first runs, is found too. Two kinds of import may sit inside a
function: an optional third-party dependency (kept optional that way), and a CLI subcommand's
import of the library, which keeps ``motionsqueeze --help`` from loading PyTorch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import motionsqueeze

PACKAGE_DIR = Path(motionsqueeze.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = ("motionsqueeze",) + path.relative_to(PACKAGE_DIR).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _targets(module: str, is_package: bool, node: ast.AST, known: dict[str, Path]) -> list[str]:
    """Our modules that one import statement loads (a package counts as its ``__init__``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    out = []
    for alias in node.names:
        if f"{source}.{alias.name}" in known:
            out.append(f"{source}.{alias.name}")
        elif source in known:
            out.append(source)
    return out


def _with_parents(module: str, targets: list[str], known: dict[str, Path]) -> list[str]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first: add those packages,
    except the ones ``module`` itself sits in (being imported already, they run no further)."""
    out = list(targets)
    for target in targets:
        parts = target.split(".")
        for k in range(1, len(parts)):
            parent = ".".join(parts[:k])
            if parent in known and not (module == parent or module.startswith(parent + ".")):
                out.append(parent)
    return out


def _import_graph() -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """Edges module -> our modules it imports, and the function-level ones per module."""
    known = _modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    nested: dict[str, list[str]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        in_function: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                in_function.update(id(n) for n in ast.walk(fn) if n is not fn)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = _targets(module, is_package, node, known)
                edges[module].update(_with_parents(module, targets, known))
                if targets and id(node) in in_function:
                    nested.setdefault(module, []).append(f"line {node.lineno}: {', '.join(targets)}")
    return edges, nested


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
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
                    work.append((child, iter(sorted(edges[child]))))
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


def test_cycle_finder_finds_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules_of_the_package():
    edges, _ = _import_graph()
    assert len(edges) > 50  # the walk saw the package
    assert _cycles(edges) == []


def test_library_imports_its_own_modules_at_module_level():
    _, nested = _import_graph()
    outside_cli = {m: lines for m, lines in nested.items() if not m.startswith("motionsqueeze.cli")}
    assert outside_cli == {}


def test_every_module_imports_in_a_fresh_interpreter_and_help_skips_torch():
    code = (
        "import importlib, pkgutil, sys\n"
        "import motionsqueeze.cli\n"
        "assert 'torch' not in sys.modules, 'the CLI entry point loads torch before a subcommand runs'\n"
        "import motionsqueeze\n"
        "for info in pkgutil.walk_packages(motionsqueeze.__path__, 'motionsqueeze.'):\n"
        "    if not info.name.endswith('__main__'):  # that one runs the command\n"
        "        importlib.import_module(info.name)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_command_line_answers_help_without_loading_torch():
    code = ("import sys\nfrom motionsqueeze.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout and done.stdout.strip().endswith("torch not loaded")


# docs/architecture.md, "Layers and imports": a module imports only from layers below its own.
LAYERS = [
    {"typed_config", "files", "top"},
    {"ops"},
    {"layers", "data"},
    {"models"},
    {"engine"},
    {"viz"},
    {"demo", "selftest", "cli", "__main__"},
]


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else "top"
    return next(i for i, names in enumerate(LAYERS) if part in names)


def test_every_import_goes_down_the_documented_layers():
    edges, _ = _import_graph()
    upward = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                    if _layer(b) > _layer(a) or (_layer(a) == _layer(b) == 2 and a.split(".")[1] != b.split(".")[1]))
    assert upward == []
