"""examples/api_walkthrough.ipynb, executed cell by cell in a real Jupyter kernel against the local stack's API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.integration.conftest import RunningStack

NOTEBOOK = Path(__file__).parents[2] / "examples" / "api_walkthrough.ipynb"


def text_of(cell: Any) -> str:
    return "".join(
        output.get("text", "") or output.get("data", {}).get("text/plain", "") for output in cell.get("outputs", [])
    )


def test_the_committed_notebook_has_no_outputs() -> None:
    # Outputs are results of one run on one machine: they go stale and bloat diffs, so none are committed.
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)


def test_the_walkthrough_runs_against_the_local_stack(
    local_stack: RunningStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the API address `refund-sorter local` printed, as a person would export it before starting Jupyter
    monkeypatch.setenv("REFUND_SORTER_API_URL", local_stack.api_url)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # WHEN every cell runs (a cell that raises fails the test with its traceback)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    # THEN it talked to this stack, classified each photo, drew them, and recorded a person's decision
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert local_stack.api_url in text_of(code[0])
    table = text_of(code[2])
    assert "skimage-coffee.png" in table and "food_drink" in table
    assert "skimage-chelsea.png" in table and "needs_review" in table
    assert any("image/png" in output.get("data", {}) for output in code[3].outputs)
    assert "'status': 'reviewed'" in text_of(code[4])
    assert "'department': 'home_kitchen'" in text_of(code[4])
