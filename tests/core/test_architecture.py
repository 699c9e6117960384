"""The house rules of docs/architecture.md, checked on the source tree (issue 14).

* the shared core (``data``, ``physics``, ``nn`` and the top-level modules) never imports a system;
* the applications (``cli``, ``studio``) may import the systems; nothing else imports them;
* the three systems (``interrogate``, ``diffusion``, ``inversion``) never import each other;
* no import cycle among the package's modules (module-level imports);
* each system has the same named stages: config, data/dataset, train, infer, evaluate, report, pipeline;
* only :mod:`helioforge.reporting` selects a matplotlib backend;
* the CLI modules import no private name (``_x``) from the library;
* every report template is a file under ``helioforge/templates`` (no inline ``Template(...)`` strings).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "helioforge"
SYSTEMS = ("interrogate", "diffusion", "inversion")
STAGES = ("config", "train", "infer", "evaluate", "report", "pipeline")


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        rel = p.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """helioforge modules imported by ``path`` (module-level statements only, or all)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    pkg = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("helioforge"):
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                found.add(sub if sub in MODULES else mod)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("helioforge"))
    return {m for m in found if m in MODULES}


#: Applications over the systems: the command line, and the studio (the interrogator's browser
#: app). They may import any system; the core and the systems never import them.
APPS = ("cli", "studio")


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in (*SYSTEMS, *APPS) else "core"


def test_core_never_imports_a_system_and_systems_never_import_each_other():
    bad = []
    for mod, path in MODULES.items():
        area = _area(mod)
        if area in APPS:
            continue
        for dep in _imports(path, top_level_only=False):
            dep_area = _area(dep)
            if dep_area in APPS or (dep_area in SYSTEMS and dep_area != area):
                bad.append(f"{mod} imports {dep}")
    assert not bad, "layering broken:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    """Function-level imports count too: a cycle hidden inside a function is still a cycle."""
    graph = {m: _imports(p, top_level_only=False) - {m} for m, p in MODULES.items()}
    # a package's __init__ importing its own submodules is not a cycle of concerns
    for m in graph:
        graph[m] = {d for d in graph[m] if not (MODULES[m].name == "__init__.py" and d.startswith(m + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                cyc = visit(d)
                if cyc:
                    return cyc
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cyc = visit(m)
            assert cyc is None, "import cycle: " + " -> ".join(cyc)


@pytest.mark.parametrize("system", SYSTEMS)
def test_each_system_has_the_same_named_stages(system):
    folder = SRC / system
    missing = [s for s in STAGES if not (folder / f"{s}.py").is_file()]
    assert not missing, f"{system}: missing stage modules {missing}"
    assert (folder / "data.py").is_file() or (folder / "dataset.py").is_file(), f"{system}: no data/dataset stage"


def test_only_the_report_toolkit_selects_a_matplotlib_backend():
    users = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "matplotlib.use(" in p.read_text()]
    assert users == ["reporting.py"], users


def test_report_templates_are_files():
    inline = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if 'Template("""' in p.read_text()]
    assert not inline, f"inline Jinja templates: {inline}"
    names = {p.name for p in (SRC / "templates").glob("*.j2")}
    assert "base.html.j2" in names


def test_cli_imports_no_private_names_from_the_library():
    bad = []
    for p in (SRC / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helioforge"):
                bad += [f"{p.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad


def test_public_docstrings_are_numpydoc():
    """Every public function or method of the library (the CLI excepted: its docstrings are the
    commands' help) has a docstring, and one that takes arguments has numpydoc sections."""
    bad = []
    for p in SRC.rglob("*.py"):
        if "cli" in p.relative_to(SRC).parts:
            continue
        for node in ast.parse(p.read_text()).body:
            nodes = [node]
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                nodes += [n for n in node.body if isinstance(n, ast.FunctionDef)]
            for n in nodes:
                if not isinstance(n, (ast.FunctionDef, ast.ClassDef)) or n.name.startswith("_"):
                    continue
                doc = ast.get_docstring(n) or ""
                where = f"{p.relative_to(SRC)}:{n.lineno} {n.name}"
                if not doc:
                    bad.append(f"{where}: no docstring")
                elif isinstance(n, ast.FunctionDef):
                    nargs = len([a for a in n.args.args if a.arg not in ("self", "cls")]) + len(n.args.kwonlyargs)
                    if nargs and not any(f"{h}\n{'-' * len(h)}" in doc for h in ("Parameters", "Returns", "Raises", "Yields")):
                        bad.append(f"{where}: no numpydoc section")
    assert not bad, "\n".join(sorted(bad))
