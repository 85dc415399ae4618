"""Batch sweeps with real papermill and real kernels: results, failures, resuming, GPUs, Ctrl-C, the CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from lightning_lab.batch import BatchWarning, expand, main_batch, parse_grid_options, parse_value, run
from lightning_lab.errors import ConfigurationError
from lightning_lab.runs import load_run

QUICKSTART = Path(__file__).resolve().parent.parent / "notebooks" / "01_quickstart.ipynb"

TINY_MODEL = textwrap.dedent("""\
    import os
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from lightning_lab import LabModule

    print("CUDA_VISIBLE_DEVICES =", os.environ.get("CUDA_VISIBLE_DEVICES"))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    train_loader = DataLoader(TensorDataset(x[:48], y[:48]), batch_size=16)
    val_loader = DataLoader(TensorDataset(x[48:], y[48:]), batch_size=16)

    class Tiny(LabModule):
        def __init__(self, hidden, lr):
            super().__init__()
            self.lr = lr
            self.net = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", nn.functional.mse_loss(self.net(x).squeeze(-1), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)
""")


def write_notebook(path: Path, cells: list[str], parameters: str | None = None, at: int = 0) -> Path:
    """A python3 notebook of ``cells``, with ``parameters`` as the tagged cell inserted at index ``at``."""
    code = [new_code_cell(source) for source in cells]
    if parameters is not None:
        tagged = new_code_cell(parameters)
        tagged.metadata["tags"] = ["parameters"]
        code.insert(at, tagged)
    notebook = new_notebook(cells=code, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(notebook, path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Checks its parameters before the heavy imports (a bad value fails in a second), then trains a few steps."""
    return write_notebook(tmp_path_factory.mktemp("nb") / "tiny.ipynb", [
        "if fail:\n    raise ValueError(f'this notebook cannot train with lr={lr}')",
        "%load_ext lightning_lab",
        TINY_MODEL,
        "%%train --max-steps $steps --seed 0 --name tiny\nmodel = Tiny(hidden, lr)",
    ], parameters="lr = 0.1\nhidden = 4\nsteps = 6\nfail = False")


@pytest.fixture(scope="module")
def light(tmp_path_factory) -> Path:
    """No torch: for what needs a kernel but no training (errors, CLI, retries)."""
    return write_notebook(tmp_path_factory.mktemp("nb") / "light.ipynb", [
        "assert x != 2, f'x must not be 2, got {x}'\nprint('x * 10 =', x * 10)",
    ], parameters="x = 1")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def outputs(notebook: Path) -> str:
    cells = nbformat.read(notebook, as_version=4).cells
    return "".join(o.get("text", "") for c in cells if c.cell_type == "code" for o in c.get("outputs", []))


# -- values and grids (no kernel) -------------------------------------------------------------------

def test_values_parse_as_python_literals_else_strings():
    assert parse_value("1e-3") == 0.001 and isinstance(parse_value("1e-3"), float)
    assert parse_value("64") == 64 and parse_value("True") is True and parse_value("None") is None
    assert parse_value("[32,32]") == [32, 32] and parse_value("(1, 2)") == [1, 2]
    assert parse_value("adam") == "adam" and parse_value("'a b'") == "a b" and parse_value("{1, 2}") == "{1, 2}"
    grid, params = parse_grid_options(["lr=1e-3,3e-3", "layers=[32,32],[64]", "opt=adam,sgd"], ["max_epochs=1"])
    assert grid == {"lr": [0.001, 0.003], "layers": [[32, 32], [64]], "opt": ["adam", "sgd"]}
    assert params == {"max_epochs": 1}
    points = expand(grid, params)
    assert len(points) == 8 and points[0].params == {"lr": 0.001, "layers": [32, 32], "opt": "adam", "max_epochs": 1}
    assert len({p.id for p in points}) == 8 and "/" not in "".join(p.id for p in points)
    assert expand({"lr": [1e-3]})[0].id == "lr=0.001" == expand({"lr": [0.001]})[0].id


@pytest.mark.parametrize(("grid", "match"), [
    (["lr"], "--grid 'lr': expected KEY=VALUE"),
    (["1lr=1"], "--grid '1lr=1': expected KEY=VALUE with KEY a Python name"),
    (["lr=1,,2"], "--grid 'lr=1,,2': empty value"),
    (["lr=1", "lr=2"], "--grid lr= is given twice"),
])
def test_bad_grid_options_name_the_option(grid, match):
    with pytest.raises(ConfigurationError, match=match):
        parse_grid_options(grid)


def test_duplicate_values_and_keys_in_both_places_are_refused():
    with pytest.raises(ConfigurationError, match="lists a value twice"):
        expand({"lr": [1e-3, 0.001]})
    with pytest.raises(ConfigurationError, match="both a grid key and a fixed parameter"):
        expand({"lr": [1e-3]}, {"lr": 1})
    with pytest.raises(ConfigurationError, match="non-empty list"):
        expand({"lr": []})


# -- sweeps with real kernels -----------------------------------------------------------------------

def test_quickstart_grid_of_four_points_on_two_workers(tmp_path):
    result = run(QUICKSTART, grid={"lr": [1e-3, 1e-2], "hidden": [16, 64]}, params={"max_epochs": 1},
                 workers=2, out=tmp_path / "sweep")
    assert result.ok, result.table()
    rows = read_csv(result.results_csv)
    assert len(rows) == 4
    assert list(rows[0])[:3] == ["lr", "hidden", "max_epochs"]
    assert {"train_loss", "val_loss", "val_acc", "status", "duration", "error", "notebook", "run"} <= set(rows[0])
    assert [(r["lr"], r["hidden"]) for r in rows] == [("0.001", "16"), ("0.001", "64"), ("0.01", "16"), ("0.01", "64")]
    assert len({r["val_loss"] for r in rows}) == 4  # the values reached the model: metrics differ per point
    for point, row in zip(result.points, rows, strict=True):
        run_dir = load_run(row["run"])
        assert run_dir.status == "completed" and run_dir.name == "quickstart"
        assert run_dir.hparams == {"hidden": point.params["hidden"], "lr": point.params["lr"]}
        assert run_dir.path.parent.parent == result.out / "runs" / point.id  # each point its own run root
        assert float(row["val_loss"]) == pytest.approx(run_dir.final["val_loss"])
        executed = nbformat.read(row["notebook"], as_version=4)
        kinds = {o.output_type for c in executed.cells if c.cell_type == "code" for o in c.outputs}
        images = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
        assert images and "error" not in kinds  # headless %%train: the curves as a static image
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                       for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert result.plot == result.out / "summary.png" and result.plot.stat().st_size > 5000
    assert result.metric == "val_loss" and result.best() is not None


@pytest.fixture(scope="module")
def gpu_sweep(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "sweep"
    return run(tiny, grid={"lr": [0.01, 0.1]}, gpus="0,1", workers=2, out=out, progress=False)


def test_gpus_are_given_round_robin_to_the_kernels(gpu_sweep):
    assert gpu_sweep.ok, gpu_sweep.table()
    seen = []
    for point in gpu_sweep.points:
        text = outputs(point.notebook)
        assert f"CUDA_VISIBLE_DEVICES = {point.devices}\n" in text
        seen.append(point.devices)
    assert seen == ["0", "1"]  # worker 1 → GPU 0, worker 2 → GPU 1


def test_rerun_skips_completed_points_and_says_so(gpu_sweep, tiny, capsys):
    before = {p.id: p.notebook.stat().st_mtime_ns for p in gpu_sweep.points}
    again = run(tiny, grid={"lr": [0.01, 0.1]}, gpus="0,1", workers=2, out=gpu_sweep.out)
    err = capsys.readouterr().err
    assert "2 point(s), 0 to run, 2 skipped" in err
    assert "skipped lr=0.01 (completed in an earlier sweep" in err and "skipped lr=0.1 (" in err
    assert [p.skipped for p in again.points] == [True, True] and again.ok
    assert {p.id: p.notebook.stat().st_mtime_ns for p in again.points} == before  # nothing executed again
    assert [p.final for p in again.points] == [p.final for p in gpu_sweep.points]
    assert len(read_csv(again.results_csv)) == 2


def test_failing_point_is_recorded_and_others_complete(tiny, tmp_path, capsys):
    out = tmp_path / "sweep"
    result = run(tiny, grid={"fail": [False, True]}, params={"steps": 4}, workers=2, out=out)
    assert not result.ok
    good, bad = result.points
    assert good.status == "completed" and good.final["val_loss"] > 0
    assert bad.status == "failed" and bad.attempts == 1  # a notebook error is not retried
    # In [3]: papermill's injected-parameters cell ran as In [2]
    assert bad.error == "In [3] `if fail:`: ValueError: this notebook cannot train with lr=0.1"
    assert bad.notebook.is_file() and bad.run is None  # the failed notebook is kept, with its traceback
    errors = [o for c in nbformat.read(bad.notebook, as_version=4).cells if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert [(e.ename, e.evalue) for e in errors] == [("ValueError", "this notebook cannot train with lr=0.1")]
    rows = read_csv(out / "results.csv")
    assert [r["status"] for r in rows] == ["completed", "failed"] and rows[1]["error"] == bad.error
    printed = capsys.readouterr()
    assert "failed fail=True" in printed.err and "1 failed" in printed.err
    assert "completed" in printed.out and "failed" in printed.out  # the table
    # the same sweep again: the completed point is skipped, the failed one runs again
    again = run(tiny, grid={"fail": [False, True]}, params={"steps": 4}, workers=2, out=out, progress=False)
    assert [p.skipped for p in again.points] == [True, False]
    assert again.points[1].status == "failed"
    forced = run(tiny, grid={"fail": [False]}, params={"steps": 4}, out=out, rerun=True, progress=False)
    assert forced.points[0].status == "completed" and not forced.points[0].skipped
    assert forced.points[0].run != good.run  # trained again: a new run beside the first


def test_train_magic_error_fails_the_point_though_papermill_completes(tmp_path):
    # %%train prints its errors (here: no model in the cell) instead of raising, so papermill sees success
    broken = write_notebook(tmp_path / "broken.ipynb", ["%load_ext lightning_lab", "%%train\nx = steps"],
                            parameters="steps = 1")
    result = run(broken, grid={"steps": [1]}, out=tmp_path / "sweep", progress=False)
    (point,) = result.points
    assert point.status == "failed" and not result.ok
    assert point.error.startswith("In [4] `%%train`: %%train found no model")


def test_no_parameters_cell_and_unknown_key_warn(tmp_path):
    plain = write_notebook(tmp_path / "plain.ipynb", ["x = 3", "print('x =', x)"])
    with pytest.warns(BatchWarning, match=r"plain\.ipynb: no cell is tagged 'parameters'"):
        result = run(plain, grid={"x": [5]}, out=tmp_path / "plain", progress=False)
    # papermill injected x = 5 in a new first cell, so the notebook's own x = 3 overrode it
    assert result.ok and "x = 3" in outputs(result.points[0].notebook)
    light = write_notebook(tmp_path / "light.ipynb", ["print(x)"], parameters="x = 1")
    with pytest.warns(BatchWarning, match=r"light\.ipynb: --grid key 'xx' is not assigned in the parameters cell "
                                          r"\(it assigns: x\)"):
        run(light, grid={"xx": [1]}, out=tmp_path / "light", progress=False)


def test_kernel_that_fails_to_start_is_retried_once(light, tmp_path, monkeypatch):
    # a kernel whose first start dies at once, as a kernel that lost a port race does
    spec = tmp_path / "jupyter" / "kernels" / "flaky"
    spec.mkdir(parents=True)
    marker = tmp_path / "first-start"
    (spec / "start.py").write_text(textwrap.dedent(f"""\
        import os, sys
        if not os.path.exists({str(marker)!r}):
            open({str(marker)!r}, "w").close()
            sys.exit(1)
        from ipykernel import kernelapp
        kernelapp.launch_new_instance()
    """))
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, str(spec / "start.py"), "-f", "{connection_file}"],
        "display_name": "flaky", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    result = run(light, grid={"x": [3]}, kernel="flaky", out=tmp_path / "sweep", progress=False)
    (point,) = result.points
    assert point.status == "completed" and point.attempts == 2 and marker.exists()
    assert "retrying once" in (result.out / "logs" / f"{point.id}.log").read_text()
    assert "x * 10 = 30" in outputs(point.notebook)


def test_timeout_fails_the_point_naming_the_cell(tmp_path):
    slow = write_notebook(tmp_path / "slow.ipynb", ["import time\ntime.sleep(60)"], parameters="x = 1")
    started = time.monotonic()
    result = run(slow, grid={"x": [1]}, timeout=2, out=tmp_path / "sweep", progress=False)
    assert time.monotonic() - started < 40
    (point,) = result.points
    assert point.status == "failed" and point.attempts == 1
    assert "`import time`" in point.error and "timed out" in point.error.lower()


# -- the command line -------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["--grid", "lr"], "--grid 'lr': expected KEY=VALUE"),
    (["--grid", "x=1", "--workers", "0"], "--workers must be a whole number of at least 1, got 0"),
    (["--grid", "x=1", "--gpus", "0,,1"], "--gpus '0,,1': expected GPU ids"),
    (["--grid", "x=1", "--kernel", "no-such-kernel"], "--kernel: no kernel named 'no-such-kernel' is installed"),
])
def test_cli_mistakes_are_one_line_and_exit_2(light, argv, message, capsys, tmp_path):
    assert main_batch([str(light), "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lightning-lab batch: {message}") and err.count("\n") == 1 and "Traceback" not in err
    assert main_batch([str(tmp_path / "missing.ipynb")]) == 2
    assert "missing.ipynb does not exist" in capsys.readouterr().err


def test_cli_exit_code_says_whether_a_point_failed(light, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main_batch([str(light), "--grid", "x=1,2", "--workers", "2", "--out", str(out)]) == 1
    printed = capsys.readouterr()
    table = printed.out.splitlines()
    assert table[0].split() == ["x", "status", "duration", "error", "notebook", "run"]
    assert table[1].split()[:2] == ["1", "completed"] and table[2].split()[:2] == ["2", "failed"]
    assert "AssertionError: x must not be 2" in printed.out
    assert main_batch([str(light), "--grid", "x=1", "--grid", "xx=0", "--out", str(out)]) == 0
    assert "lightning-lab batch: warning:" in capsys.readouterr().err
    assert main_batch(["--help"]) == 0 and "--grid KEY=V1,V2" in capsys.readouterr().out


def test_ctrl_c_stops_workers_and_their_kernels(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    slow = write_notebook(tmp_path / "slow.ipynb", [
        "%load_ext lightning_lab",
        TINY_MODEL,
        f"open(os.path.join({str(pids)!r}, str(os.getpid())), 'w').close()",
        "%%train --max-steps 10000000 --name slow\nmodel = Tiny(hidden, lr)",
    ], parameters="lr = 0.01\nhidden = 4")
    out = tmp_path / "sweep"
    code = ("import sys; from lightning_lab.batch import main_batch; "
            f"sys.exit(main_batch([{str(slow)!r}, '--grid', 'lr=0.01,0.02,0.03', '--workers', '2', '--out', {str(out)!r}]))")
    # its own process group, like a shell's foreground job: Ctrl-C reaches every process in it
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while len(_running(out)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_running(out)) == 2, "both points should be training"
        kernels = [int(p.name) for p in pids.iterdir()]
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in kernels) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(kernels) == 2 and not any(_alive(pid) for pid in kernels)
    rows = read_csv(out / "results.csv")
    assert [r["status"] for r in rows] == ["stopped", "stopped"]  # the third point never started
    for row in rows:
        assert Path(row["notebook"]).is_file()
        stopped = load_run(row["run"])  # %%train was interrupted like the ■ button does it
        assert stopped.status == "stopped" and stopped.last_checkpoint is not None


def _running(out: Path) -> list[Path]:
    files = out.glob("runs/*/slow/*/run.json")
    return [f for f in files if json.loads(f.read_text()).get("status") == "running"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
