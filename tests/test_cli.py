"""The ``lightning-lab`` command as a user runs it: real subprocesses, real output."""

from __future__ import annotations

import subprocess
import sys

from lightning_lab.runs import list_runs


def cli(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lightning_lab", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_demo_trains_digits_and_says_where_the_run_is(tmp_path):
    result = cli("demo", "--max-epochs", "3", "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (run,) = list_runs(tmp_path)
    assert run.status == "completed" and run.name == "digits"
    assert f"run:        {run.path}" in result.stdout
    assert run.final["val_acc"] > 0.8
    assert "val_acc:" in result.stdout
    listing = cli("runs", "--root", str(tmp_path))
    assert listing.returncode == 0
    assert run.id in listing.stdout and "completed" in listing.stdout and "val_acc" in listing.stdout


def test_runs_with_no_runs_and_help():
    assert "no runs" in cli("runs", "--root", "/nonexistent-root-for-test").stdout
    for command in ("demo", "runs", "export", "run", "batch"):
        result = cli(command, "--help")
        assert result.returncode == 0 and "usage: lightning-lab" in result.stdout


def test_user_mistake_is_one_line_without_traceback(tmp_path):
    result = cli("demo", "--max-epochs", "-3", "--root", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "max_epochs must be a non-negative integer" in result.stderr


def test_run_names_a_missing_script_in_one_line(tmp_path):
    result = cli("run", str(tmp_path / "train.py"), "--devices", "2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"lightning-lab run: script '{tmp_path / 'train.py'}' does not exist."


def test_export_writes_a_script_that_lists_its_hyperparameters(tmp_path):
    from pathlib import Path

    notebook = Path(__file__).resolve().parent.parent / "notebooks" / "01_quickstart.ipynb"
    result = cli("export", str(notebook), "-o", str(tmp_path / "train.py"))
    assert result.returncode == 0, result.stderr
    assert "--lr" in result.stdout and "%load_ext lightning_lab" in result.stdout
    usage = subprocess.run([sys.executable, str(tmp_path / "train.py"), "--help"], capture_output=True, text=True,
                           timeout=120)
    assert usage.returncode == 0 and "--hidden" in usage.stdout and "--max-epochs" in usage.stdout
    missing = cli("export", str(tmp_path / "nope.ipynb"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and not (tmp_path / "nope.py").exists()
