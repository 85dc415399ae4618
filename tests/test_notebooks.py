"""The example notebooks run top to bottom in a real Jupyter kernel and leave a completed run."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from lightning_lab.runs import list_runs

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(path: Path, cwd: Path, timeout: int = 300) -> nbformat.NotebookNode:
    """Run every cell in a fresh python3 kernel started in ``cwd`` (it inherits os.environ)."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def test_quickstart_trains_digits_in_a_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_LAB_ROOT", str(tmp_path))
    notebook = execute(NOTEBOOKS / "00_engine.ipynb", tmp_path)
    runs = list_runs(tmp_path, name="quickstart")
    assert len(runs) == 1
    run = runs[0]
    assert run.status == "completed"
    assert run.final["val_acc"] > 0.85
    assert run.checkpoints and run.checkpoints[0].name == "last.ckpt"
    outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert str(run.path) in outputs
    # outside a notebook front end the engine prints plain progress lines, not a redrawn bar
    assert "epoch 7/8" in outputs and "\r" not in outputs
