"""The data package is layered: the readers depend on the shared checks and sources, never on the facade."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "hapi_onnx" / "data"
MODULES = sorted(f"hapi_onnx.data.{p.stem}" for p in DATA.glob("*.py") if p.stem != "__init__")


def _data_imports(path: Path) -> set[str]:
    """The hapi_onnx.data modules a file imports when run (imports only for type checkers left out)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hapi_onnx.data"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("hapi_onnx.data"))
    return found


def test_data_modules_import_each_other_in_one_direction():
    graph = {m: _data_imports(DATA / f"{m.rsplit('.', 1)[1]}.py") for m in MODULES}
    assert MODULES and all(m in MODULES for deps in graph.values() for m in deps), graph  # none uses the facade
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module not in done:
            for dep in graph[module]:
                visit(dep, (*path, module))
            done.add(module)

    for module in MODULES:
        visit(module, ())


@pytest.mark.parametrize("module", ["hapi_onnx.data", *MODULES])
def test_each_data_module_imports_alone(module):
    run = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
