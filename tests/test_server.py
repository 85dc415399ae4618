"""The server extension's routes through a real ``jupyter server`` (started as a subprocess).

The package's own install enables the extension (``<venv>/etc/jupyter/jupyter_server_config.d``),
so these tests also prove that packaging works: nothing here enables it by hand.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from browser_support import LabServer, wait_for
from nbformat.v4 import new_code_cell, new_notebook

from lightning_lab.runs import RunWriter, load_run

MODEL = textwrap.dedent("""\
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from lightning_lab import LabModule

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    train_loader = DataLoader(TensorDataset(x[:48], y[:48]), batch_size=16)
    val_loader = DataLoader(TensorDataset(x[48:], y[48:]), batch_size=16)

    class Tiny(LabModule):
        def __init__(self, lr=0.1):
            super().__init__()
            self.lr = lr
            self.net = nn.Linear(4, 1)

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


def write_notebook(path: Path, cells: list[str], parameters: str | None = None) -> Path:
    code = [new_code_cell(source) for source in cells]
    if parameters is not None:
        tagged = new_code_cell(parameters)
        tagged.metadata["tags"] = ["parameters"]
        code.insert(0, tagged)
    notebook = new_notebook(cells=code, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The server root: a notebook in a sub-folder, a completed and a live run under ``lab_runs``."""
    root = tmp_path_factory.mktemp("root")
    write_notebook(root / "notebooks" / "tiny.ipynb", [
        "%load_ext lightning_lab\n!pip list", MODEL, "%%train --max-epochs 1 --name tiny\nmodel = Tiny(lr)"],
        parameters="lr = 0.1")
    write_notebook(root / "notebooks" / "broken.ipynb", ["%%train\nmodel = Undefined()"])
    return root


@pytest.fixture(scope="module")
def runs(root):
    """``{"done": completed run dir, "live": running run dir}`` written with the real RunWriter."""
    writer = RunWriter.create(root / "lab_runs", "mlp", {"hparams": {"lr": 0.1, "hidden": 8}})
    for step in range(1, 21):
        writer.log({"step": step, "epoch": 0, "time": step * 0.01, "train_loss": 1.0 / step})
    writer.log({"step": 20, "epoch": 0, "time": 0.2, "val_loss": 0.25})
    writer.close("completed", final={"train_loss": 0.05, "val_loss": 0.25})
    live = RunWriter.create(root / "lab_runs", "mlp", {"hparams": {"lr": 0.3}})
    live.log({"step": 1, "epoch": 0, "time": 0.01, "train_loss": 0.9})
    live.flush()
    yield {"done": writer.path, "live": live.path}
    live.close("stopped")


@pytest.fixture(scope="module")
def server(tmp_path_factory, root, runs):
    server = LabServer(tmp_path_factory.mktemp("jupyter"), root=root, app="jupyter_server")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


# ---------------------------------------------------------------------------------------------- auth

@pytest.mark.parametrize("method, route", [
    ("POST", "export"), ("GET", "runs"), ("GET", "runs/mlp/x"), ("GET", "runs/mlp/x/plot.png"),
    ("POST", "runs/mlp/x/stop"), ("POST", "batch"), ("GET", "batch/x")])
def test_every_route_refuses_an_unauthenticated_request(server, method, route):
    status, _ = server.request(method, f"lightning-lab/{route}", {} if method == "POST" else None, token=None)
    assert status == 403
    status, _ = server.request(method, f"lightning-lab/{route}", {} if method == "POST" else None, token="wrong")
    assert status == 403


# ---------------------------------------------------------------------------------------------- export

def test_export_writes_the_script_and_lists_the_dropped_lines(server, root):
    status, reply = server.request("POST", "lightning-lab/export", {"path": "notebooks/tiny.ipynb"})
    assert status == 200, reply
    assert reply["script"] == "notebooks/tiny.py"
    script = root / reply["script"]
    assert script.is_file() and "def main(" in script.read_text()
    assert any("!pip list" in line for line in reply["dropped_lines"]), reply["dropped_lines"]
    assert "--max-epochs" in reply["options"], reply["options"]
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--max-epochs" in out.stdout, out.stderr


def test_export_to_a_chosen_output_inside_the_root(server, root):
    status, reply = server.request("POST", "lightning-lab/export",
                                   {"path": "notebooks/tiny.ipynb", "output": "scripts/train_tiny.py"})
    assert status == 200, reply
    assert reply["script"] == "scripts/train_tiny.py" and (root / "scripts" / "train_tiny.py").is_file()


@pytest.mark.parametrize("body, status, message", [
    ({"path": "../outside.ipynb"}, 400, "contains '..'"),
    ({"path": "notebooks/../../outside.ipynb"}, 400, "contains '..'"),
    ({"path": "/etc/passwd.ipynb"}, 400, "is absolute"),
    ({"path": "notebooks/tiny.ipynb", "output": "/tmp/evil.py"}, 400, "output '/tmp/evil.py' is absolute"),
    ({"path": "notebooks/tiny.ipynb", "output": "../evil.py"}, 400, "output '../evil.py' contains '..'"),
    ({}, 400, "expected a path relative to the server root"),
    ({"path": "notebooks/missing.ipynb"}, 404, "does not exist"),
    ({"path": "notebooks/tiny.py"}, 400, "is not a notebook"),
    ({"path": "notebooks/tiny.ipynb", "cell": "two"}, 400, "cell must be the number of a %%train cell"),
    ({"path": "notebooks/broken.ipynb"}, 422, "finds no data for the %%train cell"),
])
def test_export_refuses_bad_input_with_a_json_message(server, root, body, status, message):
    got, reply = server.request("POST", "lightning-lab/export", body)
    assert got == status, reply
    assert message in reply["message"], reply
    assert not (root.parent / "outside.py").exists() and not Path("/tmp/evil.py").exists()


def test_export_refuses_a_symlink_out_of_the_root(server, root, tmp_path):
    elsewhere = write_notebook(tmp_path / "secret" / "nb.ipynb", ["%%train\nmodel = Tiny()"])
    (root / "link").symlink_to(elsewhere.parent, target_is_directory=True)
    try:
        status, reply = server.request("POST", "lightning-lab/export", {"path": "link/nb.ipynb"})
    finally:
        (root / "link").unlink()
    assert status == 403 and "outside the server root" in reply["message"], reply
    assert not (elsewhere.parent / "nb.py").exists()


def test_a_body_that_is_not_a_json_object_is_refused(server):
    status, reply = server.request("POST", "lightning-lab/export", b"not json")
    assert status == 400 and "not JSON" in reply["message"], reply
    status, reply = server.request("POST", "lightning-lab/export", [1, 2])
    assert status == 400 and "JSON object" in reply["message"], reply


# ---------------------------------------------------------------------------------------------- runs

def test_runs_lists_the_run_directory(server, root, runs):
    status, reply = server.request("GET", "lightning-lab/runs")
    assert status == 200, reply
    assert reply["root"] == str((root / "lab_runs").resolve())  # default: <server root>/lab_runs
    by_key = {run["key"]: run for run in reply["runs"]}
    assert set(by_key) == {key(runs["done"]), key(runs["live"])}
    done, live = by_key[key(runs["done"])], by_key[key(runs["live"])]
    assert done["status"] == "completed" and live["status"] == "running"
    assert done["final"] == load_run(runs["done"]).final == {"train_loss": 0.05, "val_loss": 0.25}
    assert done["name"] == "mlp" and done["id"] == runs["done"].name
    assert done["duration"] is not None and done["duration"] >= 0
    assert reply["runs"][0]["key"] == key(runs["live"])  # newest first


def test_run_detail(server, runs):
    status, reply = server.request("GET", f"lightning-lab/runs/{key(runs['done'])}")
    assert status == 200, reply
    assert reply["hparams"] == {"lr": 0.1, "hidden": 8}
    assert reply["metric_names"] == ["train_loss", "val_loss"] and reply["records"] == 21


@pytest.mark.parametrize("route, status, message", [
    ("runs/mlp/nope", 404, "no run mlp/nope"),
    ("runs/mlp/..", 400, "run id '..' is not a folder name"),
    ("runs/%2E%2E/%2E%2E", 400, "run name '..' is not a folder name"),
    ("runs/mlp/%2E%2E%2F%2E%2E/plot.png", 400, "is not a folder name"),
    ("runs/mlp/nope/plot.png", 404, "no run mlp/nope"),
    ("runs/mlp/nope/stop", 404, "no run mlp/nope"),
])
def test_unknown_or_escaping_run_ids_are_refused(server, route, status, message):
    method = "POST" if route.endswith("/stop") else "GET"
    got, reply = server.request(method, f"lightning-lab/{route}", {} if method == "POST" else None)
    assert got == status and message in reply["message"], (got, reply)


def test_plot_png_is_an_image_of_the_curves(server, runs):
    status, png = server.request("GET", f"lightning-lab/runs/{key(runs['done'])}/plot.png", raw=True)
    assert status == 200
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert width > 200 and height > 100, (width, height)


def test_stop_writes_the_stop_file_of_a_live_run_only(server, runs):
    assert not (runs["live"] / "STOP").exists()
    status, reply = server.request("POST", f"lightning-lab/runs/{key(runs['live'])}/stop", {})
    assert status == 202, reply
    assert (runs["live"] / "STOP").is_file()
    status, reply = server.request("POST", f"lightning-lab/runs/{key(runs['done'])}/stop", {})
    assert status == 409 and "is not running (status 'completed')" in reply["message"], reply
    assert not (runs["done"] / "STOP").exists()


# ---------------------------------------------------------------------------------------------- batch

def test_batch_starts_at_once_and_reports_progress_until_done(server, root):
    body = {"path": "notebooks/tiny.ipynb", "grid": ["lr=0.05,0.1"], "workers": 2}
    status, started = server.request("POST", "lightning-lab/batch", body)
    assert status == 202, started
    assert started["status"] == "running" and started["total"] == 2 and started["done"] == 0
    assert started["out"] == "lab_batch/tiny"

    def finished():
        status, progress = server.request("GET", f"lightning-lab/batch/{started['id']}")
        assert status == 200, progress
        return progress if progress["status"] != "running" else None

    progress = wait_for("the batch to finish", finished, 240, server, interval=1)
    assert progress["status"] == "completed", progress
    assert progress["done"] == 2 and progress["failed"] == []
    assert sorted(p["label"] for p in progress["points"]) == ["lr=0.05", "lr=0.1"]
    assert all("val_loss" in p["final"] for p in progress["points"]), progress["points"]
    assert (root / progress["results_csv"]).is_file()
    best = min(progress["points"], key=lambda p: p["final"]["val_loss"])
    assert progress["best"] == {"label": best["label"], "metric": "val_loss", "value": best["final"]["val_loss"]}


@pytest.mark.parametrize("body, message", [
    ({"path": "notebooks/tiny.ipynb", "grid": ["lr"]}, "lr"),
    ({"path": "notebooks/tiny.ipynb", "grid": {"lr": []}}, "non-empty list"),
    ({"path": "notebooks/tiny.ipynb", "grid": 3}, "grid must be"),
    ({"path": "notebooks/tiny.ipynb", "workers": 0}, "workers must be a whole number"),
    ({"path": "../tiny.ipynb"}, "contains '..'"),
    ({"path": "notebooks/tiny.ipynb", "out": "/tmp/out"}, "is absolute"),
])
def test_batch_refuses_bad_input(server, body, message):
    status, reply = server.request("POST", "lightning-lab/batch", body)
    assert status == 400 and message in reply["message"], reply


# ---------------------------------------------------------------------------------------------- packaging

def test_the_install_enables_both_extensions(tmp_path):
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}  # the environment's config only
    jupyter = Path(sys.executable).with_name("jupyter")
    server = subprocess.run([str(jupyter), "server", "extension", "list"], capture_output=True, text=True,
                            env=env, timeout=120)
    lab = subprocess.run([str(jupyter), "labextension", "list"], capture_output=True, text=True, env=env,
                         timeout=120)
    server_text, lab_text = _plain(server.stdout + server.stderr), _plain(lab.stdout + lab.stderr)
    assert "lightning_lab enabled" in server_text and re.search(r"lightning_lab \S+ OK", server_text), server_text
    assert re.search(r"lightning-lab-jupyterlab v\S+ enabled OK \(python, lightning-lab\)", lab_text), lab_text
    shipped = json.loads((Path(__file__).resolve().parents[1] / "lightning_lab" / "labextension" /
                          "package.json").read_text())
    assert shipped["name"] == "lightning-lab-jupyterlab" and shipped["jupyterlab"]["_build"]["load"]


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


