"""docs/architecture.md's package graph is the code's: the "Packages and their imports"
table lists, for every first-level module of ``appliance/`` that imports another, exactly
the ones it imports (read here with ``ast``), and the diagram names only real modules."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APPLIANCE = REPO / "appliance"
DOC = REPO / "docs" / "architecture.md"


def _module_names() -> set[str]:
    return {p.name.removesuffix(".py") for p in APPLIANCE.iterdir()
            if (p.is_dir() and (p / "__init__.py").exists())
            or (p.suffix == ".py" and p.name != "__init__.py")}


def _imported(node: ast.AST, package: list[str], modules: set[str]) -> list[str]:
    """The first-level ``appliance`` modules one import statement names."""
    if isinstance(node, ast.Import):
        return [a.name.split(".")[1] for a in node.names
                if a.name.startswith("appliance.") and a.name.split(".")[1] in modules]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level == 0:
        parts = (node.module or "").split(".")
        path = parts[1:] if parts[0] == "appliance" else None
    else:
        path = package[:len(package) - node.level + 1] + (node.module or "").split(".")
    if path is None:
        return []
    path = [p for p in path if p]
    if path:
        return [path[0]] if path[0] in modules else []
    # ``from .. import x`` at the top: x is a module, or a name of appliance/__init__
    return [a.name for a in node.names if a.name in modules]


@functools.cache  # read once for the tests below (nothing mutates it)
def code_graph() -> dict[str, frozenset[str]]:
    modules = _module_names()
    graph: dict[str, set[str]] = {}
    for path in APPLIANCE.rglob("*.py"):
        rel = path.relative_to(APPLIANCE)
        me = rel.parts[0].removesuffix(".py")
        package = list(rel.parent.parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for name in _imported(node, package, modules):
                if name != me:
                    graph.setdefault(me, set()).add(name)
    return {name: frozenset(names) for name, names in graph.items()}


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def doc_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for line in _section("Packages and their imports").splitlines():
        m = re.match(r"^\| ((?:`\w+`(?:, )?)+) \| ([^|]*) \|$", line)
        if m is None:
            continue
        imports = set(re.findall(r"\w+", m.group(2).split("(")[0]))  # "(...)": a note
        for name in re.findall(r"`(\w+)`", m.group(1)):
            graph[name] = imports
    return graph


def test_the_table_lists_what_each_package_imports() -> None:
    code, doc = code_graph(), doc_graph()
    wrong = {name: {"code": sorted(code.get(name, ())), "doc": sorted(doc.get(name, ()))}
             for name in sorted(set(code) | set(doc)) if code.get(name) != doc.get(name)}
    assert not wrong, f"docs/architecture.md's import table differs from the code: {wrong}"


def test_the_diagram_names_real_modules_and_process_roots() -> None:
    block = _section("Packages and their imports").split("```")[1]
    diagram = "\n".join(block.splitlines()[3:])  # below the column titles
    modules = _module_names()
    roots = re.findall(r"(\w+)/service\b", diagram)
    assert len(roots) >= 9 and all((APPLIANCE / r / "service.py").exists() for r in roots), roots
    for package, subs in re.findall(r"(\w+)\.\{([\w,]+)\}", diagram):
        for sub in subs.split(","):
            assert (APPLIANCE / package / f"{sub}.py").exists(), f"{package}.{sub}"
    # what is left: module names, each with an optional "(what it holds)" note
    rest = re.sub(r"\w+/service|\w+\.\{[\w,]+\}|\([^)]*\)", " ", diagram)
    names = set(re.findall(r"[a-z_]+", rest))
    assert names and names <= modules, f"not modules of appliance/: {sorted(names - modules)}"


def test_the_check_sees_a_missing_import() -> None:
    """The table would be caught out: the code graph holds edges the test relies on."""
    code = code_graph()
    assert "control" in code["cli"] and "chain" in code["indexer"]
    assert "indexer" not in code.get("chain", frozenset())
