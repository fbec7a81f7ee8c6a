"""The shape of the package: one import package (``kerascnn``, with ``export/`` installed as
``kerascnn.export``), no import cycle between its modules (imports inside functions count), the core
never importing the export package or the training script, no function over 150 lines, no module over
1,000 lines (under kerascnn/ and export/; tests and bench scripts are exempt), and no module of the CLI
package and no training module over 600."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 150
MAX_MODULE_LINES = 1000  # past it a module is several rooms: split it at its seams (as kerascnn/data/)
MAX_CLI_MODULE_LINES = 600  # the CLI is thin: a command module past it holds library code, or several groups
# kerascnn train's modules: the stages, the recipe, fit's callbacks, the optimizer, the strategy
TRAINING = (
    "kerascnn.train",
    "kerascnn.recipe",
    "kerascnn.best_by",
    "kerascnn.probe",
    "kerascnn.callbacks",
    "kerascnn.optim",
    "kerascnn.distribute",
)
MAX_TRAINING_MODULE_LINES = 600  # one job each: past it, split another seam out (as optim.py, distribute.py)
CORE = ("kerascnn.models", "kerascnn.data", "kerascnn.augment", "kerascnn.runs", *TRAINING)


def _modules() -> dict[str, Path]:
    """Module name -> source file, for kerascnn/ and export/ (as kerascnn.export)."""
    found = {}
    for folder, package in ((ROOT / "kerascnn", "kerascnn"), (ROOT / "export", "kerascnn.export")):
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, modules) -> set[str]:
    """The kerascnn modules ``name`` imports anywhere in its file (top level or inside functions)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in modules:  # `from kerascnn.x import f` -> kerascnn.x
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_kerascnn_modules():
    graph = _graph()
    # the package __init__ files import nothing that imports them back; a parent package is not an edge
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_core_never_imports_export_or_training():
    graph = _graph()
    for name, deps in graph.items():
        if name.startswith(CORE):
            assert not any(d.startswith("kerascnn.export") for d in deps), (name, deps)
        if name != "kerascnn.cli" and not name.startswith("kerascnn.cli."):
            assert "kerascnn.train" not in deps, f"{name} imports kerascnn.train (only the CLI may)"


def test_no_function_over_150_lines():
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long


def _longer_than(limit: int, package: str = "kerascnn") -> dict[str, int]:
    """The modules of ``package`` (itself included) over ``limit`` lines, with their line counts."""
    long = {}
    for name, path in _modules().items():
        if name == package or name.startswith(package + "."):
            lines = len(path.read_text().splitlines())
            if lines > limit:
                long[name] = lines
    return long


def test_no_module_over_1000_lines():
    long = _longer_than(MAX_MODULE_LINES)
    assert not long, f"over {MAX_MODULE_LINES} lines: {long}"


def test_no_cli_module_over_600_lines():
    """kerascnn/cli/ holds click commands only (ARCHITECTURE.md: CLI thin, library thick)."""
    long = _longer_than(MAX_CLI_MODULE_LINES, "kerascnn.cli")
    assert not long, f"over {MAX_CLI_MODULE_LINES} lines: {long} (move the logic into the library)"


def test_no_training_module_over_600_lines():
    modules = _modules()
    assert set(TRAINING) <= set(modules), set(TRAINING) - set(modules)  # a module renamed: list it here
    long = {}
    for name in TRAINING:
        long |= _longer_than(MAX_TRAINING_MODULE_LINES, name)
    assert not long, f"over {MAX_TRAINING_MODULE_LINES} lines: {long}"


def test_every_package_folder_is_listed_for_installation():
    """pyproject.toml lists the packages one by one: a new package folder left out installs without it."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {name for name, path in _modules().items() if path.name == "__init__.py"}
    assert folders == listed


def test_one_top_level_package_is_installed(tmp_path):
    """From outside the checkout, ``kerascnn.export`` imports from export/ and ``export`` does not."""
    code = (
        "import importlib.util, kerascnn.export.pipeline as p; "
        "print(p.__file__); print(importlib.util.find_spec('export'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    path, spec = out.stdout.split()
    assert Path(path) == ROOT / "export" / "pipeline.py"
    assert spec == "None"
