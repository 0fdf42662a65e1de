"""The benchmarks' modules: each imports on its own, in a fresh interpreter, and none imports another that imports
it back (at module level or inside a function: a circle either way)."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(path.stem for path in BENCH.glob("*.py") if path.stem != "__init__")


def bench_imports(path: Path) -> set[str]:
    """The ``bench.*`` modules a file imports anywhere in it (``import bench.x``, ``from bench import x``,
    ``from bench.x import y``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.removeprefix("bench.") for alias in node.names if alias.name.startswith("bench.")}
        elif isinstance(node, ast.ImportFrom) and node.module == "bench":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench."):
            found.add((node.module or "").removeprefix("bench.").split(".")[0])
    return found


def test_the_import_graph_reader_sees_every_form_of_import(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text(
        "import bench.a\nfrom bench import b\nfrom bench.c import f\nimport numpy\n\n"
        "def g():\n    from bench.d import h\n"
    )
    assert bench_imports(source) == {"a", "b", "c", "d"}


def test_no_bench_module_imports_one_that_imports_it_back() -> None:
    graph = {name: bench_imports(BENCH / f"{name}.py") for name in MODULES}
    assert set().union(*graph.values()) <= set(MODULES), "every bench import names a module that exists"
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"bench modules import each other in a circle: {' → '.join(exc.args[1])}")
    assert set(order) == set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_each_bench_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", f"import bench.{module}"],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
