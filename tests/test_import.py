"""``import lightning_lab`` stays light: heavy view/launcher dependencies load only when used."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["matplotlib", "papermill", "nbconvert", "jupyter_server", "tornado", "IPython", "ipywidgets", "sklearn"]


def test_import_does_not_pull_in_view_dependencies():
    code = (
        "import sys, json, lightning_lab, lightning_lab.runs, lightning_lab.callbacks, lightning_lab.loggers;"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == []


def test_public_names():
    import lightning_lab
    from lightning_lab import Engine, LabDataModule, LabModule, Trainer, seed_everything  # noqa: F401
    from lightning_lab.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint  # noqa: F401
    from lightning_lab.runs import Run, compare, list_runs, load_run  # noqa: F401

    assert lightning_lab.__version__
