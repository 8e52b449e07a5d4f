"""Floors only look down: no import cycle and no upward import inside ``kdbias/``.

Every module is parsed with :mod:`ast`; every ``import`` counts, at the top of a module or
inside a function (lazy) or an ``if TYPE_CHECKING`` block. Importing ``kdbias.a.b`` also
imports the package ``kdbias.a`` (its ``__init__``), so that edge is added too; the root
package ``kdbias`` imports only ``kdbias.console`` at load time (its public names come
through a module ``__getattr__``) and may be imported by no module.

The floors, lowest first (a module's floor is that of its first name under ``kdbias``; an
import may stay on its floor or go down, never up):

0. ``console`` (terminal and logging), ``schema`` (run-file formats), ``losses``, ``registry``
   (the active study), ``study`` (study files), ``config_files``: they import nothing above themselves;
1. ``analytics``, ``models``, ``data``, ``runs`` (layout, config diffs, the teacher resolver),
   ``errors`` (the input-error types of the floors);
2. ``teacher``;
3. ``modules``;
4. ``callbacks``;
5. what a run assembles from them: ``experiment``, ``why``, ``logs``, ``resume``; and
   ``report`` (which must stay Lightning-free, checked below);
6. ``runner``, ``evaluate``;
7. the commands: ``cli``, ``controls``, ``run``;
8. ``launch`` (run_all's launchers start the commands).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kdbias"

FLOORS: list[set[str]] = [
    {"console", "schema", "losses", "registry", "study", "study_files", "config_files"},
    {"analytics", "models", "data", "runs", "errors"},
    {"teacher"},
    {"modules"},
    {"callbacks"},
    {"experiment", "why", "logs", "resume", "report"},
    {"runner", "evaluate"},
    {"cli", "controls", "run"},
    {"launch"},
]
FLOOR = {unit: level for level, units in enumerate(FLOORS) for unit in units}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _known(name: str) -> str | None:
    """The longest prefix of ``name`` that is a kdbias module (``kdbias.runs.CHECKPOINT_DIR`` ->
    ``kdbias.runs``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[tuple[str, int]]:
    """``{(imported kdbias module, line)}`` of every import statement in ``module``,
    relative imports resolved, parent packages of an imported module included."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        for name in names:
            target = _known(name) if name.split(".")[0] == "kdbias" else None
            while target is not None and target != "kdbias":
                found.add((target, node.lineno))
                target = target.rpartition(".")[0]  # importing a.b.c runs a.b's __init__ too
            if name == "kdbias":
                found.add(("kdbias", node.lineno))
    return {(t, line) for t, line in found if t != module and not module.startswith(f"{t}.")}


GRAPH = {module: imports_of(module) for module in MODULES}


def _unit(module: str) -> str:
    return module.split(".")[1] if module != "kdbias" else "kdbias"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_checker_sees_lazy_and_package_imports(tmp_path):
    """The checker itself, on known edges: an import inside a function, the parent package an
    import runs, a relative import; and the cycles it must find."""
    lazy = MODULES["kdbias.launch.slurm"].read_text().splitlines().index("        from kdbias.run import main") + 1
    assert ("kdbias.run", lazy) in GRAPH["kdbias.launch.slurm"]  # inside a function
    experiment = {t for t, _ in GRAPH["kdbias.experiment"]}
    assert {"kdbias.callbacks", "kdbias.runs", "kdbias.runs.config_diff"} <= experiment  # package + module
    assert not any(t.startswith("kdbias.experiment") for t, _ in GRAPH["kdbias.runs.lookup"])
    MODULES["kdbias.runs._probe"] = probe = tmp_path / "probe.py"
    try:
        probe.write_text("def f():\n    from .lookup import config_value\n    from ..report import stats\n")
        assert {t for t, _ in imports_of("kdbias.runs._probe")} == {
            "kdbias.runs.lookup",
            "kdbias.report",
            "kdbias.report.stats",
        }
    finally:
        del MODULES["kdbias.runs._probe"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_has_a_floor():
    units = {_unit(m) for m in MODULES if m != "kdbias"}
    assert not units - set(FLOOR), f"place these in FLOORS: {sorted(units - set(FLOOR))}"


def test_no_import_cycle():
    graph = {m: {t for t, _ in edges} for m, edges in GRAPH.items()}
    assert _cycles(graph) == []


def test_no_upward_import():
    upward = [
        f"{MODULES[m].relative_to(ROOT)}:{line} imports {t} (floor {FLOOR[_unit(t)]} > {FLOOR[_unit(m)]})"
        for m, edges in GRAPH.items()
        if m != "kdbias"
        for t, line in sorted(edges)
        if t != "kdbias" and FLOOR[_unit(t)] > FLOOR[_unit(m)]
    ]
    assert upward == []


def test_nothing_imports_the_root_package():
    importers = sorted(m for m, edges in GRAPH.items() if any(t == "kdbias" for t, _ in edges))
    assert importers == []


def test_root_package_imports_only_the_console_at_load_time():
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module.startswith("kdbias")} == {
        "kdbias.console"
    }
    assert all(not a.name.startswith("kdbias") for n in top if isinstance(n, ast.Import) for a in n.names)


_PROBE = (
    "import sys\n"
    "{code}\n"
    "print(','.join(sorted(m for m in ('lightning', 'lightning.pytorch', 'timm', 'torch') if m in sys.modules)))\n"
)


def _loaded(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(code=code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=True,
    ).stdout.strip()
    return set(out.splitlines()[-1].split(",")) - {""} if out else set()


@pytest.mark.subprocess
def test_report_imports_neither_lightning_nor_timm():
    assert not _loaded("import kdbias.report") & {"lightning", "lightning.pytorch", "timm"}
    help_run = (
        "import runpy\nsys.argv = ['kdbias.report', '--help']\n"
        "try:\n    runpy.run_module('kdbias.report', run_name='__main__')\nexcept SystemExit:\n    pass"
    )
    assert not _loaded(help_run) & {"lightning", "lightning.pytorch", "timm"}


@pytest.mark.subprocess
def test_import_kdbias_is_lazy():
    assert _loaded("import kdbias") == set()
    assert "lightning" in _loaded("import kdbias\nkdbias.KLDistillModule")  # the public name still works
