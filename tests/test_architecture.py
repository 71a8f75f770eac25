"""Architecture checks: no import cycles and no module over 500 lines.

The import graph holds *module-level* imports only (an import inside a function
or under ``if TYPE_CHECKING:`` runs late, so it cannot form a cycle at import
time).  See docs/architecture.md for the layers these checks protect.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("certify", "attacks")

#: The most lines a module may have.
MAX_LINES = 500

#: Modules over :data:`MAX_LINES` today, with their line counts.  A ratchet: a
#: listed module may shrink (lower its number here when it does) but not grow, and
#: no other module may cross the limit.  Remove an entry once it is under the limit.
OVER_LIMIT = {
}


def _module_files() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: not in functions, not TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.ClassDef):
                walk(node.body)
            elif isinstance(node, ast.Try):
                walk(node.body)
                for h in node.handlers:
                    walk(h.body)
                walk(node.orelse)
                walk(node.finalbody)
            elif isinstance(node, (ast.With, ast.For, ast.While)):
                walk(node.body)
                walk(getattr(node, "orelse", []))

    walk(tree.body)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module name -> the modules of ``certify``/``attacks`` it imports at module level."""
    files = _module_files()
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _module_level_imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")
                    if node.level > 1:
                        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = []
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in files else base)
            for target in targets:
                # ``import a.b.c`` names a module; keep the longest known prefix.
                parts = target.split(".")
                while parts and ".".join(parts) not in files:
                    parts.pop()
                if parts and ".".join(parts) != name:
                    graph[name].add(".".join(parts))
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                sccs.append(sorted(comp))
    return sccs


def test_tarjan_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    assert cycles == [["a", "b", "c"]]


def test_graph_sees_the_packages():
    graph = import_graph()
    assert "certify.cli" in graph and "attacks.evaluate" in graph
    assert any(graph.values())


def test_no_import_cycles():
    graph = import_graph()
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    cycles += [[n] for n, deps in graph.items() if n in deps]
    for comp in cycles:
        members = set(comp)
        edges = sorted(f"{a} -> {b}" for a in comp for b in graph[a] if b in members)
        print("import cycle:", ", ".join(comp), "|", "; ".join(edges))
    assert not cycles, f"import cycles among module-level imports: {cycles}"


def test_module_size_ratchet():
    too_big = {}
    grew = {}
    for name, path in _module_files().items():
        rel = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if rel in OVER_LIMIT:
            if lines > OVER_LIMIT[rel]:
                grew[rel] = (OVER_LIMIT[rel], lines)
        elif lines > MAX_LINES:
            too_big[rel] = lines
    assert not too_big, f"modules over {MAX_LINES} lines (split them): {too_big}"
    assert not grew, f"over-limit modules grew (allowed, now): {grew}; they may only shrink"


def test_over_limit_list_is_current():
    for rel in OVER_LIMIT:
        assert (ROOT / rel).exists(), f"{rel} is gone: remove it from OVER_LIMIT"


def test_the_wheel_gets_every_subpackage():
    """pyproject finds packages by pattern: every directory with an __init__.py is one it includes."""
    import fnmatch

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = conf["tool"]["setuptools"]["packages"]["find"]["include"]
    for init in sorted((ROOT / "certify").rglob("__init__.py")) + sorted((ROOT / "attacks").rglob("__init__.py")):
        name = ".".join(init.parent.relative_to(ROOT).parts)
        assert any(fnmatch.fnmatch(name, pat) for pat in include), name


def _norm_name_comparisons(tree: ast.AST) -> list[int]:
    """Lines that compare something with the literal "l2" or "linf" (==, !=, in, not in)."""
    names = {"l2", "linf"}

    def is_name(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(is_name(e) for e in node.elts)

    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Compare) and any(is_name(n) for n in [node.left, *node.comparators])]


def test_norms_are_asked_not_compared():
    """Norm and ε are parsed once (certify/threat.py); everything else asks the Norm object."""
    found = {}
    for name, path in _module_files().items():
        if path.relative_to(ROOT).as_posix() == "certify/threat.py":
            continue
        lines = _norm_name_comparisons(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            found[name] = lines
    assert not found, f"compare a Norm, not its name: {found}"


def test_the_norm_comparison_check_sees_comparisons():
    tree = ast.parse('a = n == "l2"\nb = "linf" != n\nc = n in ("l2", "linf")\nd = {"l2": 1}["l2"]\n')
    assert _norm_name_comparisons(tree) == [1, 2, 3]
