"""The demo: train the digits example on real data, optionally run a notebook headless, show the runs."""

from __future__ import annotations

import os
from pathlib import Path

from lightning_lab.engine.trainer import Trainer
from lightning_lab.errors import ConfigurationError
from lightning_lab.examples.digits import DigitsClassifier, DigitsData
from lightning_lab.runs import resolve_root


def run_demo(max_epochs: int = 10, root: str | Path | None = None, seed: int = 0,
             notebook: str | Path | None = None) -> None:
    """Train :class:`DigitsClassifier` on sklearn's digits and print the run directory and final metrics.

    With ``notebook``, also execute that notebook headless in a fresh kernel (``%%train`` shows
    text progress and leaves its curves as an image) and save the executed copy beside the runs.
    """
    trainer = Trainer(max_epochs=max_epochs, seed=seed, root_dir=root, name="digits")
    model = DigitsClassifier()
    trainer.fit(model, datamodule=DigitsData())
    run = trainer.run
    print()
    print(f"run:        {run.path}")
    print(f"status:     {run.status}  ({run.duration:.1f} s, {trainer.global_step} steps)")
    for key in ("val_acc", "val_loss", "train_loss"):
        if key in run.final:
            print(f"{key + ':':<12}{run.final[key]:.4f}")
    print(f"checkpoint: {run.last_checkpoint}")
    if notebook is not None:
        run_notebook(Path(notebook), resolve_root(root))
        export_and_run(Path(notebook), resolve_root(root))
    print(f"list runs:  lightning-lab runs --root {resolve_root(root)}")


def export_and_run(path: Path, root: Path, epochs: int = 2) -> Path:
    """Export ``path`` to a training script beside the runs; train it with plain python, then on 2 processes."""
    import subprocess
    import sys

    from lightning_lab.export import export_notebook
    from lightning_lab.runs import list_runs

    script = export_notebook(path, output=root / f"{path.stem}.py").output
    print(f"script:     {script}  (exported; `python {script.name} --help` lists its options)")
    env = {**os.environ, "LIGHTNING_LAB_ROOT": str(root)}
    for devices, how in ((1, "plain python, 1 process"), (2, "--devices 2: 2 DDP workers (gloo)")):
        before = {run.path for run in list_runs(root)}
        command = [sys.executable, str(script), "--max-epochs", str(epochs), "--devices", str(devices)]
        done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            raise ConfigurationError(f"the exported script failed ({how}):\n{done.stderr[-2000:]}")
        new = [run for run in list_runs(root) if run.path not in before]
        summary = ""
        if new:
            run = new[0]
            metrics = "  ".join(f"{k}={run.final[k]:.4f}" for k in ("val_acc", "val_loss") if k in run.final)
            summary = f": {run.status}, world size {run.info.get('world_size')}, {metrics}\n            run {run.path}"
        print(f"            {how}, {epochs} epochs{summary}")
    return script


def run_notebook(path: Path, root: Path) -> Path:
    """Execute ``path`` top to bottom in a new python3 kernel, headless; returns the executed copy."""
    import nbformat
    from nbclient import NotebookClient

    if not path.is_file():
        raise ConfigurationError(f"--notebook {path}: no such notebook.")
    print(f"\nexecuting {path} headless (a fresh kernel; runs go to {root}) ...")
    notebook = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in ("LIGHTNING_LAB_ROOT", "LIGHTNING_LAB_NO_WIDGET")}
    os.environ.update(LIGHTNING_LAB_ROOT=str(root), LIGHTNING_LAB_NO_WIDGET="1")  # the kernel inherits these
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.resolve().parent)}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    out = root / f"{path.stem}.executed.ipynb"
    root.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, out)
    images = sum("image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", []))
    print(f"notebook:   {out}  ({len(notebook.cells)} cells, {images} images of curves)")
    return out
