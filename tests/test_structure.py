"""The shape of the code: the four packages import one way, trainables <- search_spaces
<- sweep <- analysis, with no import cycle; planning a sweep imports no Ray; the
packages are installed; no function over 60 lines, no file over 400; the README's
layout table names every top-level entry and every module of the four packages."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Lower layers first: a package may import only its own layer and the ones before it.
LAYERS = ("trainables", "search_spaces", "sweep", "analysis")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in LAYERS for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported module, line, at import time) of every import of the file; `from a import b`
    names module a.b when b is a module. Imports under `if TYPE_CHECKING:` are left out;
    those inside functions run later (at import time = False)."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, eager: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, eager) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    sub = f"{child.module}.{alias.name}"
                    found.append((sub if sub in modules else child.module, child.lineno, eager))
            lazy = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, eager and not lazy)

    visit(ast.parse(path.read_text()), True)
    return found


def _layer(module: str) -> int | None:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


def test_every_import_goes_down_the_layers():
    modules = product_modules()
    wrong = []
    for name, path in modules.items():
        for target, line, _ in imports(path, modules):
            if (layer := _layer(target)) is not None and layer > _layer(name):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not wrong, "imports against trainables <- search_spaces <- sweep <- analysis:\n" + "\n".join(wrong)


def test_no_import_cycle_between_modules():
    modules = product_modules()
    graph = {name: sorted({t for t, _, eager in imports(path, modules) if eager and t in modules} - {name})
             for name, path in modules.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_walk_sees_imports_in_functions_and_from_imports():
    """The checks above are only as good as the walk: it finds a lazy import inside a
    function and resolves `from package import module`."""
    modules = product_modules()
    found = imports(ROOT / "sweep" / "phases.py", modules)
    assert any(t == "search_spaces.paper" and eager for t, _, eager in found)  # from search_spaces import
    assert any(t == "sweep.spec_models" and eager for t, _, eager in found)
    found = imports(ROOT / "search_spaces" / "phase.py", modules)
    assert any(t == "search_spaces.trial_list" and not eager for t, _, eager in found)  # inside a function


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_planning_a_sweep_imports_no_ray(tmp_path):
    proc = _python(f"""
        import sys
        from sweep.phases import planned_trials
        from sweep.plan import make_plan
        from sweep.spec import load_spec

        counts = []
        for name in ("quickstart", "paper_cpu", "optuna_quickstart"):
            spec = load_spec("{ROOT}/specs/" + name + ".yaml")  # validates every planned trial
            counts.append(len(planned_trials(spec)))
        counts.append(make_plan(load_spec("{ROOT}/specs/paper_cpu.yaml")).totals()["trials"])
        print(counts, sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    # quickstart: 12 cells + 2 baselines; paper_cpu: 70 trials known in advance + 6 confirm trials;
    # optuna: 2 corners x 2 methods + 2
    assert proc.stdout.split("\n")[0] == "[14, 70, 6, 76] []", proc.stdout


@pytest.mark.parametrize("package", LAYERS)
def test_packages_are_installed_and_import_from_any_directory(tmp_path, package):
    proc = _python(f"import {package}; print({package}.__file__)", tmp_path)
    assert proc.returncode == 0, proc.stderr + "\n(run `make setup`: it installs the project with pip -e .)"
    assert Path(proc.stdout.strip()) == ROOT / package / "__init__.py"


MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400


def test_no_function_over_60_lines_and_no_file_over_400():
    long = []
    for path in product_modules().values():
        text = path.read_text()
        if (n := len(text.splitlines())) > MAX_FILE_LINES:
            long.append(f"{path.relative_to(ROOT)}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}(): {n} lines")
    assert not long, "split these:\n" + "\n".join(long)


def layout_table() -> dict[str, str]:
    """The README's layout table: path -> role."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([^`]+)` \| (.+) \|$", section, re.M))


def test_readme_layout_table_names_every_top_level_entry():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    top = {line.split("/")[0] + ("/" if "/" in line else "") for line in tracked.stdout.splitlines()}
    expected = {t for t in top if not t.startswith(".") and t != "README.md"}
    named = {path.split("/")[0] + ("/" if "/" in path else "") for path in layout_table()}
    assert named == expected, f"not in the table: {sorted(expected - named)}; not in the tree: " \
        f"{sorted(named - expected)}"


@pytest.mark.parametrize("package", LAYERS)
def test_readme_layout_table_names_every_module(package):
    root = ROOT / package
    role = layout_table()[f"{package}/"]
    named = set(re.findall(r"`([\w.]+\.py|\w+/)`", role))
    modules = {p.name for p in root.glob("*.py") if p.name != "__init__.py"}
    subpackages = {p.parent for p in root.glob("*/__init__.py")}
    modules |= {d.name + "/" for d in subpackages}
    modules |= {p.name for d in subpackages for p in d.glob("*.py") if p.name != "__init__.py"}
    assert modules - named == set(), f"README's {package}/ row does not name {sorted(modules - named)}"
    assert named - modules == set(), f"README's {package}/ row names {sorted(named - modules)}: not there"


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """String literals of a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_files_of_a_sweep_directory_are_named_in_sweep_layout_only():
    from sweep.layout import SweepLayout

    tune_names = {SweepLayout.TUNER, SweepLayout.EXPERIMENT_STATE_GLOB}
    names = (SweepLayout.entries() - {SweepLayout.PRETRAINED}) | tune_names
    assert {SweepLayout.results, SweepLayout.manifest, SweepLayout.mlflow_db} <= names
    found = [f"{path.relative_to(ROOT)}:{line} {value!r}"
             for name, path in product_modules().items() if name != "sweep.layout"
             for line, value in _string_constants(path)
             if value in names or any(value.endswith("/" + n) for n in names)]
    assert not found, "use sweep.layout.SweepLayout instead of spelling these:\n" + "\n".join(found)


def script_modules() -> list[Path]:
    """Every Python file of the project that is not a test or a user's example."""
    return [*product_modules().values(), *sorted((ROOT / "bench").glob("*.py")),
            *sorted((ROOT / "experiments").glob("*.py"))]


def kind_type_tests(source: str, kinds: set[str]) -> list[int]:
    """Lines of `isinstance`/`issubclass` calls whose class argument names a search kind."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass") \
                and len(node.args) == 2:
            named = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
            named |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
            if named & kinds:
                lines.append(node.lineno)
    return lines


def test_search_kinds_are_asked_never_type_tested_outside_their_module():
    from search_spaces import kinds

    names = {n for n, v in vars(kinds).items() if isinstance(v, type) and issubclass(v, kinds.SearchKind)}
    assert {"PaperGridSearch", "ValuesSearch", "OptunaSearchSpec", "CustomSearch"} <= names
    sample = "if isinstance(spec.search, kinds.CustomSearch | ValuesSearch): pass"
    assert kind_type_tests(sample, names) == [1]
    found = [f"{path.relative_to(ROOT)}:{line}" for path in script_modules()
             if path != ROOT / "search_spaces" / "kinds.py"
             for line in kind_type_tests(path.read_text(), names)]
    assert not found, "ask the search kind (search_spaces/kinds.py) instead of testing its type:\n" + \
        "\n".join(found)


def test_method_names_are_spelled_in_methods_py_only():
    from trainables.methods import METHODS

    found = [f"{path.relative_to(ROOT)}:{line} {value!r}" for path in script_modules()
             if path != ROOT / "trainables" / "methods.py"
             for line, value in _string_constants(path) if value in METHODS]
    assert not found, "use the names of trainables.methods (SSE, STAR_SSE, ...):\n" + "\n".join(found)
