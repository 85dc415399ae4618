"""The local launch backend, for real: worker processes through torch's elastic launcher (gloo on CPU).

``python script.py --devices 2``, ``torchrun --nproc_per_node 2 script.py`` and
``lightning-lab run script.py --devices 2`` must train the same weights as one process with twice
the batch; a failing worker is reported with its traceback and leaves no process behind; Ctrl-C
stops the workers gracefully; Slurm's preemption path (SIGUSR1 → save → continue from last.ckpt)
gives the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_lab.runs import load_run, read_metrics

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "lightning_lab"]


@pytest.fixture
def script(tmp_path: Path) -> Path:
    """A private copy of the training script: its path tells this test's processes apart from all others."""
    target = tmp_path / "train_launch.py"
    shutil.copyfile(HERE / "launch_script.py", target)
    return target


def run(command: list[str], cwd: Path, timeout: float = 240, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTNING_LAB_")}
    environment.update(PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment)


def result_of(done: subprocess.CompletedProcess[str]) -> dict:
    lines = [line for line in done.stdout.splitlines() if "RESULT " in line]
    assert len(lines) == 1, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}"
    return json.loads(lines[0].split("RESULT ", 1)[1])


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(torch.tensor(a[key]), torch.tensor(b[key]), rtol=1e-5, atol=1e-6, msg=key)


def leftover_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker`` (zombies excluded)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(cmdline)
    return found


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_devices_2_from_a_plain_script_equals_torchrun_and_one_process_with_twice_the_batch(script, tmp_path):
    root = str(tmp_path / "runs")
    launched = run([sys.executable, str(script), "--devices", "2", "--batch", "8", "--root", root], tmp_path)
    torchrun = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                    "--batch", "8", "--root", root], tmp_path)
    single = run([sys.executable, str(script), "--batch", "16", "--root", root], tmp_path)
    for done in (launched, torchrun, single):
        assert done.returncode == 0, done.stderr[-3000:]
    a, b, c = result_of(launched), result_of(torchrun), result_of(single)
    assert (a["world_size"], b["world_size"], c["world_size"]) == (2, 2, 1)
    assert_same_weights(a["weights"], c["weights"])
    assert_same_weights(b["weights"], c["weights"])
    assert "starting 2 workers" in launched.stderr

    run_dir = Path(a["run"])  # the supervisor's run: named like any run of the model, logs per rank
    info = json.loads((run_dir / "run.json").read_text())
    assert (info["status"], info["world_size"], info["backend"], info["name"]) == ("completed", 2, "local",
                                                                                   "Regressor")
    assert {p.name for p in (run_dir / "logs").glob("rank*")} >= {"rank0.out", "rank0.err", "rank1.out", "rank1.err"}
    assert "RESULT" in (run_dir / "logs" / "rank0.out").read_text()
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "train_loss" in r]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 3 * 4  # 64 samples / (2 × 8) per step
    assert not leftover_processes(str(script))


def test_a_failing_worker_fails_the_run_with_its_traceback_and_leaves_no_process(script, tmp_path):
    root = str(tmp_path / "runs")
    done = run([sys.executable, str(script), "--devices", "2", "--root", root, "--fail-rank", "1",
                "--fail-step", "3"], tmp_path)
    assert done.returncode != 0
    assert "worker rank 1 failed (RuntimeError: deliberate failure on rank 1 at step 3)" in done.stderr
    (run_dir,) = (tmp_path / "runs" / "Regressor").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed"
    error = info["error"]
    assert (error["rank"], error["type"], error["log"]) == (1, "RuntimeError", "logs/rank1.err")
    assert "deliberate failure on rank 1 at step 3" in error["message"]
    assert "training_step" in error["traceback"]  # the user's frame, not the launcher's
    assert "Traceback" in (run_dir / "logs" / "rank1.err").read_text()
    time.sleep(0.5)
    assert not leftover_processes(str(script))


def test_lightning_lab_run_local_and_its_errors(script, tmp_path):
    root = tmp_path / "runs"
    done = run([*CLI, "run", str(script), "--devices", "2", "--root", str(root), "--", "--batch", "8"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = result_of(done)
    run_dir = Path(result["run"])
    assert run_dir.parent == root / "train_launch"  # named after the script
    assert (run_dir / "source" / "train_launch.py").read_text() == script.read_text()
    launch = json.loads((run_dir / "launch.json").read_text())
    assert (launch["backend"], launch["world_size"], launch["args"]) == ("local", 2, ["--batch", "8"])
    assert f"run train_launch/{run_dir.name}: completed" in done.stderr
    assert load_run(run_dir).status == "completed"

    bad = [
        (["--nodes", "2"], "--nodes 2 needs a cluster: use --backend slurm"),
        (["--devices", "0"], "--devices must be a positive integer"),
        (["--partition", "gpu"], "--partition and --time are Slurm options"),
    ]
    for options, message in bad:
        failed = run([*CLI, "run", str(script), *options], tmp_path)
        assert failed.returncode == 2 and message in failed.stderr and "Traceback" not in failed.stderr, failed.stderr
    missing = run([*CLI, "run", str(tmp_path / "nope.py")], tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_ctrl_c_stops_the_workers_after_their_step_and_saves(script, tmp_path):
    root = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, str(script), "--devices", "2", "--root", str(root), "--epochs", "50",
                             "--sleep", "0.05"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        def some_steps() -> bool:
            return any(read_metrics(p) for p in root.glob("Regressor/*/metrics.jsonl"))

        wait_for(some_steps, 90, "the first logged step")
        os.kill(proc.pid, signal.SIGINT)  # the supervisor only, as `kill -INT`: it asks the workers to stop
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    (run_dir,) = (root / "Regressor").iterdir()
    run_info = load_run(run_dir)
    assert run_info.status == "stopped"
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["loop"]["global_step"] == max(r["step"] for r in run_info.metrics)
    assert 0 < saved["loop"]["global_step"] < 50 * 8
    assert not (run_dir / "STOP").exists()
    assert not leftover_processes(str(script))


def test_preemption_signal_saves_and_the_next_start_continues_to_the_same_weights(script, tmp_path):
    """Slurm's warning signal, without Slurm: SIGUSR1 to both workers, then the job "starts again"."""
    root = tmp_path / "runs"
    reference = result_of(run([sys.executable, str(script), "--devices", "2", "--root", str(root), "--name", "ref"],
                              tmp_path))
    run_dir = root / "preempted" / "job"
    env = {**os.environ, "LIGHTNING_LAB_RUN_DIR": str(run_dir), "LIGHTNING_LAB_REQUEUE": "1",
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), "--devices", "2", "--sleep", "0.1"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        wait_for(lambda: len(read_metrics(run_dir / "metrics.jsonl")) >= 3, 90, "three logged steps")
        os.kill(proc.pid, signal.SIGUSR1)  # the supervisor passes the warning on to its workers
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    logs = "".join(f"\n--- {f.name}\n{f.read_text()[-2000:]}" for f in sorted((run_dir / "logs").glob("rank*.err")))
    assert proc.returncode == 0, err[-3000:] + logs
    first = json.loads((run_dir / "run.json").read_text())
    assert first["status"] == "stopped" and len(first["preemptions"]) == 1, first
    stopped_at = first["preemptions"][0]["step"]
    assert 0 < stopped_at < 12 and (run_dir / "checkpoints" / "last.ckpt").is_file()

    again = run([sys.executable, str(script), "--devices", "2"], tmp_path, env={
        "LIGHTNING_LAB_RUN_DIR": str(run_dir), "LIGHTNING_LAB_REQUEUE": "1"})
    resumed = result_of(again)
    assert Path(resumed["run"]) == run_dir
    assert_same_weights(resumed["weights"], reference["weights"])
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and len(info["resumes"]) == 1
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "train_loss" in r]
    assert steps == list(range(1, 13))  # one continuous curve: every step once


NOTEBOOK_SETUP = """\
%load_ext lightning_lab
import json, time, torch, torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from lightning_lab import LabModule

g = torch.Generator().manual_seed(1)
X = torch.randn(64, 4, generator=g)
Y = X @ torch.tensor([1.5, -2.0, 0.5, 3.0]) + torch.linspace(0.0, 4.0, 64)

class Regressor(LabModule):
    def __init__(self, sleep=0.0):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        if self.hparams.sleep:
            time.sleep(self.hparams.sleep)
        x, y = batch
        loss = F.mse_loss(self.net(x).squeeze(-1), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)
"""


def test_notebook_train_devices_2_leaves_the_trained_weights_in_the_kernels_model(tmp_path, monkeypatch):
    """nbclient runs `%%train --devices 2`: the weights equal one in-kernel process with twice the batch."""
    import nbformat
    from nbclient import NotebookClient

    cells = [
        NOTEBOOK_SETUP,
        "%%train --devices 2 --max-epochs 3 --seed 0 --name two\n"
        "model = Regressor()\n"
        "loader = DataLoader(TensorDataset(X, Y), batch_size=8, shuffle=True)",
        "%%train --max-epochs 3 --seed 0 --name one\n"
        "reference = Regressor()\n"
        "big_loader = DataLoader(TensorDataset(X, Y), batch_size=16, shuffle=True)",
        "saved = torch.load(_run.path.parent.parent / 'two' / next(iter(sorted(p.name for p in "
        "(_run.path.parent.parent / 'two').iterdir()))) / 'checkpoints' / 'last.ckpt', weights_only=True)\n"
        "same_as_saved = all(torch.equal(v, saved['state_dict'][k]) for k, v in model.state_dict().items())\n"
        "diff = max((model.state_dict()[k] - v).abs().max().item() for k, v in reference.state_dict().items())\n"
        "print('CHECK', json.dumps({'saved': same_as_saved, 'diff': diff}))",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    env_root = tmp_path / "runs"
    monkeypatch.setenv("LIGHTNING_LAB_ROOT", str(env_root))
    monkeypatch.setenv("LIGHTNING_LAB_NO_WIDGET", "1")  # nbclient has no widget front end
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    train_out = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert "2 process(es) on the local backend" in train_out and "completed" in train_out, train_out
    assert any("image/png" in o.get("data", {}) for o in nb.cells[1].outputs)  # the final curves, as a PNG
    check = next(line for o in nb.cells[3].outputs for line in o.get("text", "").splitlines() if "CHECK" in line)
    result = json.loads(check.split("CHECK ", 1)[1])
    assert result["saved"] is True
    assert result["diff"] < 1e-5
    (run_dir,) = (env_root / "two").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    assert (info["status"], info["world_size"], info["backend"]) == ("completed", 2, "local")
    script = (run_dir / "source" / "train.py").read_text()
    assert "def main(" in script and "class Regressor" in script
    assert json.loads((run_dir / "launch.json").read_text())["first_metric_after_s"] > 0


def test_interrupting_a_devices_2_cell_stops_the_workers_and_keeps_what_was_saved(tmp_path):
    from test_magic import Kernel

    kernel = Kernel(tmp_path)
    try:
        assert kernel.run(NOTEBOOK_SETUP)["error"] is None
        msg = kernel.submit("%%train --devices 2 --max-epochs 100 --name slow --no-widget\n"
                            "model = Regressor(sleep=0.05)\n"
                            "loader = DataLoader(TensorDataset(X, Y), batch_size=8)")
        wait_for(lambda: any(read_metrics(p) for p in tmp_path.glob("slow/*/metrics.jsonl")), 120, "a step")
        kernel.km.interrupt_kernel()
        out = kernel.collect(msg, timeout=120)
        assert out["error"] is None, out  # stopped gracefully, no KeyboardInterrupt traceback
        assert "stopping the workers after their current step" in out["stderr"]
        (run_dir,) = (tmp_path / "slow").iterdir()
        assert load_run(run_dir).status == "stopped"
        check = kernel.run(
            f"saved = torch.load({str(run_dir / 'checkpoints' / 'last.ckpt')!r}, weights_only=True)\n"
            "print(all(torch.equal(v, saved['state_dict'][k]) for k, v in model.state_dict().items()), _run.status)")
        assert check["stdout"].split() == ["True", "stopped"], check
        assert not leftover_processes(str(run_dir))
    finally:
        kernel.close()
