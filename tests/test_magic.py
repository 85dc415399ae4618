"""``%%train``, ``%runs`` and the three ways to stop, in real IPython kernels driven by jupyter_client."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient

from lightning_lab.runs import list_runs, load_run

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

SETUP = """
%load_ext lightning_lab
import time, torch, torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from lightning_lab import LabModule, LabDataModule

g = torch.Generator().manual_seed(0)
X = torch.randn(256, 8, generator=g)
Y = (X[:, 0] > 0).long()

class Net(LabModule):
    def __init__(self, lr=0.1, sleep=0.0):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(8, 2)

    def training_step(self, batch, batch_idx):
        if self.hparams.sleep:
            time.sleep(self.hparams.sleep)
        x, y = batch
        loss = F.cross_entropy(self.layer(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
"""


class Kernel:
    """A real python3 kernel; ``run`` executes code and returns what a notebook cell would show."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.km = KernelManager(kernel_name="python3")
        env = {**os.environ, "LIGHTNING_LAB_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
        env.pop("LIGHTNING_LAB_NO_WIDGET", None)
        self.km.start_kernel(env=env, cwd=str(root))
        self.client = self.km.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def submit(self, code: str) -> str:
        return self.client.execute(code)

    def collect(self, msg_id: str, timeout: float = 180) -> dict:
        out = {"stdout": "", "stderr": "", "mimetypes": [], "error": None, "images": 0, "html": ""}
        deadline = time.monotonic() + timeout
        while True:
            msg = self.client.get_iopub_msg(timeout=max(1.0, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]] += content["text"]
            elif kind in ("display_data", "execute_result"):
                out["mimetypes"].extend(content["data"])
                out["images"] += "image/png" in content["data"]
                out["html"] += content["data"].get("text/html", "")
            elif kind == "error":
                out["error"] = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                return out

    def run(self, code: str, timeout: float = 180) -> dict:
        return self.collect(self.submit(code), timeout)

    def close(self) -> None:
        self.client.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    k = Kernel(tmp_path_factory.mktemp("runs"))
    assert k.run(SETUP)["error"] is None
    yield k
    k.close()


def wait_for_steps(root: Path, name: str, steps: int, timeout: float = 60) -> Path:
    """The run directory of ``name`` once its metrics.jsonl shows ``steps`` steps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in list_runs(root, name=name):
            if run.status == "running" and any(r.get("step", 0) >= steps for r in run.metrics):
                return run.path
        time.sleep(0.1)
    raise AssertionError(f"no run {name!r} reached step {steps}")


def test_train_magic_trains_the_cells_model_with_a_widget(kernel):
    out = kernel.run("%%train --max-epochs 3 --name basic\n"
                     "model = Net()\n"
                     "train_loader = DataLoader(TensorDataset(X, Y), batch_size=32, shuffle=True)\n"
                     "val_loader = DataLoader(TensorDataset(X, Y), batch_size=64)")
    assert out["error"] is None and "Traceback" not in out["stderr"], out
    assert "application/vnd.jupyter.widget-view+json" in out["mimetypes"]
    assert out["images"] == 1  # the static curves left in the cell when training ended
    check = kernel.run("print(_run.status, _run.name, _trainer.global_step, model.training)\n"
                       "print(sorted(_run.final))")
    assert check["stdout"].splitlines()[0] == "completed basic 24 True"
    assert "val_loss" in check["stdout"]
    (run,) = list_runs(kernel.root, name="basic")
    losses = [r["train_loss"] for r in run.metrics if "train_loss" in r]
    assert losses[-1] < losses[0]  # the model in the namespace was trained
    assert "model = Net()" in (run.path / "source" / "cells.py").read_text()
    assert run.info["source"]["kind"] == "notebook" and run.info["source"]["model"] == "model"


def test_magic_line_expands_variables_like_papermill_parameters(kernel):
    out = kernel.run("steps = 5\nseed = 3\n")
    out = kernel.run("%%train --max-steps $steps --seed {seed} --name expand --no-widget\n"
                     "net = Net()\nloader = DataLoader(TensorDataset(X, Y), batch_size=16)")
    assert out["error"] is None, out
    assert "application/vnd.jupyter.widget-view+json" not in out["mimetypes"]  # --no-widget: text
    assert "step 5" in out["stdout"] and out["images"] == 1
    assert kernel.run("print(_trainer.global_step, _trainer.seed)")["stdout"].strip() == "5 3"


def test_seed_makes_the_initial_weights_reproducible(kernel):
    cell = ("%%train --max-steps 1 --seed 11 --name seeded --no-widget --model m\n"
            "m = Net()\nloader = DataLoader(TensorDataset(X, Y), batch_size=16)\nw0 = m.layer.weight.clone()")
    kernel.run(cell)
    kernel.run("first = w0")
    kernel.run(cell)
    assert kernel.run("print(torch.equal(first, w0))")["stdout"].strip() == "True"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("loader = DataLoader(TensorDataset(X, Y), batch_size=16)", "found no model"),
        ("a = Net()\nb = Net()\nloader = DataLoader(TensorDataset(X, Y), batch_size=16)",
         "found several models: a, b. Say which to train with --model NAME"),
        ("only_model = Net()", "found no data"),
        ("n = Net()\nl1 = DataLoader(TensorDataset(X, Y))\nl2 = DataLoader(TensorDataset(X, Y))\n"
         "l3 = DataLoader(TensorDataset(X, Y))", "found several DataLoaders: l1, l2, l3"),
    ],
)
def test_discovery_errors_are_one_paragraph_without_traceback(tmp_path, body, message):
    k = Kernel(tmp_path)  # a clean namespace: nothing left over from other tests
    try:
        assert k.run(SETUP)["error"] is None
        out = k.run(f"%%train --max-steps 1\n{body}")
        assert out["error"] is None
        assert message in out["stderr"], out
        assert "Traceback" not in out["stderr"] and out["stderr"].count("\n") == 1
        assert k.run("print(1 + 1)")["stdout"].strip() == "2"  # the kernel is fine
    finally:
        k.close()


def test_bad_option_is_one_line(kernel):
    out = kernel.run("%%train --max-epochs many\nx = 1")
    assert out["error"] is None and "%%train:" in out["stderr"] and "Traceback" not in out["stderr"]


def test_kernel_interrupt_stops_after_the_step_and_keeps_the_model(kernel):
    msg = kernel.submit("%%train --max-epochs 50 --name interrupted\n"
                        "slow = Net(sleep=0.05)\nloader = DataLoader(TensorDataset(X, Y), batch_size=16)")
    run_dir = wait_for_steps(kernel.root, "interrupted", 3)
    kernel.km.interrupt_kernel()
    out = kernel.collect(msg)
    assert out["error"] is None, out  # a graceful stop, not a KeyboardInterrupt traceback
    assert "stopped at epoch" in out["stderr"] and "ckpt_path='last'" in out["stderr"]
    run = load_run(run_dir)
    assert run.status == "stopped" and (run_dir / "checkpoints" / "last.ckpt").is_file()
    check = kernel.run(
        "import signal\n"
        "print(_run.status, _trainer.global_step > 0, type(slow).__name__)\n"
        "print('StopRequests' in repr(signal.getsignal(signal.SIGINT)))"
    )
    assert check["stdout"].splitlines() == ["stopped True Net", "False"]
    saved = json.loads((run_dir / "run.json").read_text())
    assert saved["status"] == "stopped"


def test_resume_continues_the_same_run(kernel):
    kernel.run("%%train --max-steps 4 --name again --no-widget\n"
               "r = Net()\nloader = DataLoader(TensorDataset(X, Y), batch_size=16)")
    out = kernel.run("%%train --max-steps 9 --name again --resume --no-widget\n"
                     "r = Net()\nloader = DataLoader(TensorDataset(X, Y), batch_size=16)")
    assert out["error"] is None, out
    (run,) = list_runs(kernel.root, name="again")
    assert [rec["step"] for rec in run.metrics if "train_loss" in rec] == list(range(1, 10))
    assert run.status == "completed" and len(run.info["resumes"]) == 1


def test_stop_file_stops_the_run(kernel):
    msg = kernel.submit("%%train --max-epochs 50 --name stopfile\n"
                        "s = Net(sleep=0.05)\nloader = DataLoader(TensorDataset(X, Y), batch_size=16)")
    run_dir = wait_for_steps(kernel.root, "stopfile", 2)
    (run_dir / "STOP").write_text("")
    started = time.monotonic()
    out = kernel.collect(msg, timeout=60)
    assert time.monotonic() - started < 5
    assert out["error"] is None
    assert load_run(run_dir).status == "stopped"


def test_stop_button_stops_a_background_run(kernel):
    out = kernel.run("%%train --max-epochs 50 --name button --background\n"
                     "b = Net(sleep=0.05)\nloader = DataLoader(TensorDataset(X, Y), batch_size=16)")
    assert out["error"] is None and "application/vnd.jupyter.widget-view+json" in out["mimetypes"]
    wait_for_steps(kernel.root, "button", 2)
    # The notebook stays usable while training runs; the button's handler is what a click runs.
    out = kernel.run(
        "view = next(c for c in _trainer.callbacks if type(c).__name__ == 'NotebookProgress').view\n"
        "view.stop_button.click()\n"
        "_training_thread.join(30)\n"
        "print(_run.status, view.stop_button.disabled)"
    )
    assert out["stdout"].strip() == "stopped True", out


def test_runs_magic_shows_a_table_and_an_overlay(kernel):
    kernel.run("%%train --max-steps 3 --name table --no-widget\n"
               "t = Net()\nloader = DataLoader(TensorDataset(X, Y), batch_size=16)")
    out = kernel.run("%runs table --metric train_loss")
    assert out["error"] is None, out
    assert "table" in out["stdout"] and "completed" in out["stdout"] and "train_loss" in out["stdout"]
    assert out["images"] == 1
    missing = kernel.run("%runs table --metric nope")
    assert "nope" in missing["stderr"] and "Traceback" not in missing["stderr"]


def test_quickstart_notebook_runs_with_train_magic(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_LAB_ROOT", str(tmp_path))
    notebook = nbformat.read(NOTEBOOKS / "01_quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    (run,) = list_runs(tmp_path, name="quickstart")
    assert run.status == "completed" and run.final["val_acc"] > 0.85
    train_cell = next(c for c in notebook.cells if c.source.startswith("%%train"))
    kinds = [k for o in train_cell.outputs for k in o.get("data", {})]
    assert "application/vnd.jupyter.widget-view+json" in kinds and "image/png" in kinds
    text = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "accuracy of the trained model in the namespace: 0.9" in text
    runs_cell = notebook.cells[-1]
    assert any("image/png" in o.get("data", {}) for o in runs_cell.outputs)


def test_profile_option_writes_a_trace_and_shows_the_top_operators(kernel):
    out = kernel.run("%%train --max-epochs 1 --profile --name profiled\n"
                     "model = Net()\n"
                     "train_loader = DataLoader(TensorDataset(X, Y), batch_size=16, shuffle=True)")
    assert out["error"] is None and "Traceback" not in out["stderr"], out
    assert "top operators by self CPU time" in out["html"] and "aten::" in out["html"]
    assert "where the time went" in out["html"]  # the insight strip, kept in the saved notebook
    (run,) = list_runs(kernel.root, name="profiled")
    assert json.loads((run.path / "profile" / "trace.json").read_text())["traceEvents"]
    assert run.info["insight"]["profile"]["top_ops"]


def test_find_lr_option_plots_suggests_and_leaves_the_weights(kernel):
    out = kernel.run("%%train --find-lr --name sweep\n"
                     "model = Net()\n"
                     "w0 = model.layer.weight.detach().clone()\n"
                     "train_loader = DataLoader(TensorDataset(X, Y), batch_size=16, shuffle=True)")
    assert out["error"] is None and "Traceback" not in out["stderr"], out
    assert out["images"] == 1 and "suggested learning rate:" in out["stdout"]
    check = kernel.run("print(torch.equal(w0, model.layer.weight), 1e-7 < _lr_find.suggestion < 1.0)")
    assert check["stdout"].strip() == "True True"
    assert list_runs(kernel.root, name="sweep") == []  # a sweep trains nothing for real
