"""The Slurm backend against a real slurmctld/slurmd on localhost (scripts/slurm_cluster.sh).

The module starts its own single-node cluster (own config, ports, state, munge socket) in a
temporary folder and stops it afterwards; every job of these tests runs on it. A 2-task job is
compared with one plain process taking the whole global batch, as tests/test_ddp.py does for
torchrun. Skipped only where the cluster cannot run at all (not root, or no Slurm and no apt).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from slurm_support import (
    STEPS,
    TRAIN_SCRIPT,
    Cluster,
    assert_weights_equal,
    clean_env,
    cluster_command,
    read_run,
    run_logs,
    run_reference,
    step_records,
    wait_for,
    why_no_cluster,
)

from lightning_lab.launch import LaunchSpec
from lightning_lab.launch.rundir import read_launch
from lightning_lab.launch.sbatch import sbatch_script
from lightning_lab.launch.slurm import SlurmError, run_slurm

JOB_TIMEOUT_S = 240  # a job start imports torch on 2 busy cores; a whole job takes ~20 s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh single-node Slurm cluster for this module, with SLURM_CONF pointing at it."""
    reason = why_no_cluster()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm-cluster")
    started = cluster_command("start", state)
    assert started.returncode == 0, f"scripts/slurm_cluster.sh start failed:\n{started.stdout}\n{started.stderr}"
    running = Cluster(state, state / "slurm.conf")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(running.conf))
        try:
            yield running
        finally:
            stopped = cluster_command("stop", state)
            assert stopped.returncode == 0, stopped.stderr


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slurm-script") / "train_slurm.py"
    path.write_text(TRAIN_SCRIPT)
    return path


@pytest.fixture(scope="module")
def reference(script: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """Weights of one plain process with the whole batch of 8, trained uninterrupted."""
    base = tmp_path_factory.mktemp("slurm-reference")
    return run_reference(script, base / "weights.pt", base / "runs")


def _only_run(root: Path, name: str) -> Path:
    runs = [p for p in (root / name).iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run directory under {root / name}, found {runs}"
    return runs[0]


# ---------------------------------------------------------------------------------- no cluster
def test_sbatch_script_asks_for_the_nodes_tasks_gpus_time_and_partition(script: Path, tmp_path: Path):
    spec = LaunchSpec(script, ["--lr", "0.1"], backend="slurm", devices=4, nodes=2, partition="gpu",
                      time="1:00:00", name="big")
    text = sbatch_script(spec, tmp_path, {"LIGHTNING_LAB_RUN_DIR": str(tmp_path)}, gpus=True)
    for line in ("#SBATCH --job-name=big", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --gpus-per-node=4", "#SBATCH --time=1:00:00", "#SBATCH --partition=gpu",
                 f"#SBATCH --output={tmp_path}/logs/slurm-%j.out", "#SBATCH --open-mode=append",
                 "#SBATCH --requeue", "#SBATCH --signal=USR1@90", "export LIGHTNING_LAB_REQUEUE=1",
                 "export LIGHTNING_LAB_BACKEND=slurm", f"export LIGHTNING_LAB_RUN_DIR={tmp_path}"):
        assert line in text.splitlines(), f"{line!r} missing from:\n{text}"
    assert "srun --kill-on-bad-exit=1" in text and f"{sys.executable} -u {script} --lr 0.1" in text
    cpu = sbatch_script(LaunchSpec(script, backend="slurm"), tmp_path)
    assert "--gpus-per-node" not in cpu and "--partition" not in cpu and "--time" not in cpu
    checked = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr


def test_without_sbatch_the_error_says_how_to_get_slurm(script: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    spec = LaunchSpec(script, backend="slurm", root=str(tmp_path / "runs"))
    with pytest.raises(SlurmError, match=r"needs Slurm's `sbatch`.*slurm_cluster\.sh start.*--backend local"):
        run_slurm(spec)
    assert not (tmp_path / "runs").exists(), "a failed start left a run directory behind"


# ---------------------------------------------------------------------------------- real jobs
def test_cli_two_task_job_trains_like_one_process_with_twice_the_batch(cluster: Cluster, script: Path,
                                                                        reference: dict[str, Any], tmp_path: Path):
    """`lightning-lab run --backend slurm --devices 2`: a 2-task job, batch 4 each == 1 × batch 8."""
    out = tmp_path / "weights.pt"
    done = subprocess.run(
        [sys.executable, "-m", "lightning_lab", "run", str(script), "--backend", "slurm", "--devices", "2",
         "--time", "10", "--name", "ddp", "--root", str(tmp_path / "runs"), "--", "--out", str(out)],
        env=clean_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    run_dir = _only_run(tmp_path / "runs", "ddp")
    report = (f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}\n"
              f"{run_logs(run_dir)}\n{cluster.logs()}")
    assert done.returncode == 0, report
    assert "submitted Slurm job" in done.stderr and "ended COMPLETED" in done.stderr, report
    assert "step " in done.stdout, f"no progress lines streamed from metrics.jsonl:\n{report}"
    info = read_run(run_dir)
    assert (info["status"], info["backend"], info["world_size"]) == ("completed", "slurm", 2), info
    job = read_launch(run_dir)["slurm"]["job_id"]
    assert "TimeLimit=00:10:00" in cluster.scontrol("show", "job", job)
    assert [r["step"] for r in step_records(run_dir)] == list(range(1, STEPS + 1))
    assert (run_dir / "slurm.sbatch").is_file() and (run_dir / "logs" / f"slurm-{job}.rank1.out").is_file()
    assert_weights_equal(torch.load(out, weights_only=True), reference, "Slurm 2 × batch 4 vs 1 × batch 8")


def test_cli_unknown_partition_is_one_line_from_sbatch(cluster: Cluster, script: Path, tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "lightning_lab", "run", str(script), "--backend", "slurm", "--partition", "nope",
         "--root", str(tmp_path / "runs"), "--", "--out", str(tmp_path / "w.pt")],
        env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "sbatch refused the job" in lines[0] and "invalid partition" in lines[0].lower(), lines[0]


def test_failing_script_fails_the_run_with_its_traceback(cluster: Cluster, script: Path, tmp_path: Path):
    lines: list[str] = []
    spec = LaunchSpec(script, ["--out", str(tmp_path / "w.pt"), "--fail-at", "2"], backend="slurm", devices=2,
                      root=str(tmp_path / "runs"), name="broken")
    code = run_slurm(spec, say=lines.append)
    run_dir = _only_run(tmp_path / "runs", "broken")
    report = "\n".join([*lines, run_logs(run_dir), cluster.logs()])
    assert code == 1, report  # the script's own exit status (srun's would be 143: it terminated the peer)
    assert any("ended FAILED" in line for line in lines), report
    info = read_run(run_dir)
    assert info["status"] == "failed", info
    error = info["error"]
    assert (error["type"], error["message"]) == ("ValueError", "diverged on purpose at step 2"), error
    assert "in training_step" in error["traceback"], error
    assert (run_dir / error["log"]).is_file(), error
    assert [r["step"] for r in step_records(run_dir)] == [1, 2], "the steps before the failure stay recorded"


def test_preempted_job_requeues_and_resumes_to_the_uninterrupted_weights(
        cluster: Cluster, script: Path, reference: dict[str, Any], tmp_path: Path):
    """USR1 to the batch shell mid-run: last.ckpt, requeue, the same job resumes; one continuous run."""
    root, out, lines, result = tmp_path / "runs", tmp_path / "weights.pt", [], {}
    spec = LaunchSpec(script, ["--out", str(out), "--sleep", "0.5"], backend="slurm", devices=2, root=str(root),
                      name="preempt", env={"OMP_NUM_THREADS": "1"})
    follower = threading.Thread(target=lambda: result.update(code=run_slurm(spec, say=lines.append)), daemon=True)
    follower.start()
    run_dir = wait_for(lambda: next(root.glob("preempt/*/launch.json"), None), 60, "the run directory").parent
    job = wait_for(lambda: read_launch(run_dir).get("slurm", {}).get("job_id"), 60, "the job id")
    wait_for(lambda: len(step_records(run_dir)) >= 3, JOB_TIMEOUT_S, f"step 3 of job {job}")
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, timeout=30)

    def requeued() -> bool:
        job_line = cluster.scontrol("show", "job", "--oneliner", job)
        return "JobState=PENDING" in job_line and "Restarts=1" in job_line

    wait_for(requeued, 60, f"job {job} to be requeued")
    # slurmd refuses a credential created in the same second its job was killed ("Job N already killed,
    # do not launch batch job"): Slurm's own requeue delay covers that, and so must this shortcut.
    time.sleep(3)
    cluster.scontrol("update", f"JobId={job}", "StartTime=now")  # instead of Slurm's ~2 min requeue delay
    follower.join(timeout=JOB_TIMEOUT_S)
    report = "\n".join([*lines, run_logs(run_dir), cluster.logs()])
    assert not follower.is_alive(), f"run_slurm still following after {JOB_TIMEOUT_S} s:\n{report}"
    assert result.get("code") == 0, report
    assert any("ended COMPLETED after 1 requeue(s)" in line for line in lines), report

    info = read_run(run_dir)
    assert (info["status"], info["backend"], info["world_size"]) == ("completed", "slurm", 2), info
    preempted_at = [p["step"] for p in info.get("preemptions", [])]
    assert len(preempted_at) == 1 and 3 <= preempted_at[0] < STEPS, info.get("preemptions")
    starts = (run_dir / "logs" / f"job-{job}.started").read_text().split()
    assert [s for s in starts if s.startswith("restart=")] == ["restart=0", "restart=1"], starts
    assert "requeued Slurm job" in (run_dir / "logs" / f"slurm-{job}.rank0.out").read_text()
    steps = [r["step"] for r in step_records(run_dir)]
    assert steps == list(range(1, STEPS + 1)), f"one continuous curve, each step once: {steps}"
    assert [p for p in (root / "preempt").iterdir() if p.is_dir()] == [run_dir]
    assert_weights_equal(torch.load(out, weights_only=True), reference, "preempted and resumed vs uninterrupted")



def test_ctrl_c_cancels_the_job_and_keeps_the_run(cluster: Cluster, script: Path, tmp_path: Path):
    """Ctrl-C on `lightning-lab run --backend slurm`: the job is cancelled, no rank left, the run stopped."""
    root = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightning_lab", "run", str(script), "--backend", "slurm", "--devices", "2",
         "--name", "interrupted", "--root", str(root), "--", "--out", str(tmp_path / "w.pt"), "--sleep", "1"],
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_dir = wait_for(lambda: next(root.glob("interrupted/*/launch.json"), None), 60, "the run").parent
        wait_for(lambda: len(step_records(run_dir)) >= 2, JOB_TIMEOUT_S, "step 2")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    job = read_launch(run_dir)["slurm"]["job_id"]
    assert f"cancelled Slurm job {job}" in err, err
    assert "JobState=CANCELLED" in cluster.scontrol("show", "job", job)

    def ranks_left() -> list[str]:
        found = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
        return [line for line in found if str(script) in line and "lightning_lab" not in line]

    wait_for(lambda: not ranks_left(), 30, "the job's ranks to exit")
    assert read_run(run_dir)["status"] == "stopped"
    assert len(step_records(run_dir)) < STEPS


def test_a_job_that_cannot_run_here_says_why_and_ctrl_c_cancels_it(cluster: Cluster, script: Path, tmp_path: Path):
    """--nodes 2 on a 1-node cluster: Slurm keeps it pending; the user is told why instead of a silent wait."""
    err_file = tmp_path / "stderr.txt"
    with err_file.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lightning_lab", "run", str(script), "--backend", "slurm", "--nodes", "2",
             "--root", str(tmp_path / "runs"), "--", "--out", str(tmp_path / "w.pt")],
            env=clean_env(), stdout=subprocess.DEVNULL, stderr=err, text=True)
        try:
            wait_for(lambda: "PartitionNodeLimit" in err_file.read_text(), 60, "the pending reason")
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = err_file.read_text()
    assert "asks for more nodes than the partition allows" in text and "Ctrl-C cancels it" in text, text
    assert proc.returncode == 130 and "cancelled Slurm job" in text, text


def test_notebook_train_backend_slurm_loads_the_trained_weights(cluster: Cluster, tmp_path: Path):
    """`%%train --backend slurm --devices 2` in a real kernel: exported, submitted, followed, weights loaded."""
    from test_launch import NOTEBOOK_SETUP
    from test_magic import Kernel

    kernel = Kernel(tmp_path)  # inherits SLURM_CONF: the kernel submits to this module's cluster
    try:
        assert kernel.run(NOTEBOOK_SETUP)["error"] is None
        out = kernel.run("%%train --backend slurm --devices 2 --max-epochs 2 --seed 0 --name nbslurm --no-widget "
                         "--time 10\n"
                         "model = Regressor()\n"
                         "loader = DataLoader(TensorDataset(X, Y), batch_size=4, shuffle=True)", timeout=JOB_TIMEOUT_S)
        run_dir = _only_run(tmp_path, "nbslurm")
        report = f"{out}\n{run_logs(run_dir)}\n{cluster.logs()}"
        assert out["error"] is None and "2 process(es) on the slurm backend" in out["stderr"], report
        assert "completed" in out["stdout"] and "the trained weights are in the model" in out["stdout"], report
        info = read_run(run_dir)
        assert (info["status"], info["backend"], info["world_size"]) == ("completed", "slurm", 2), info
        assert (run_dir / "slurm.sbatch").is_file() and (run_dir / "source" / "train.py").is_file()
        check = kernel.run(
            "%%train --max-epochs 2 --seed 0 --name single --no-widget\n"
            "reference = Regressor()\n"
            "big_loader = DataLoader(TensorDataset(X, Y), batch_size=8, shuffle=True)")
        assert check["error"] is None, check
        compare = kernel.run(
            f"saved = torch.load({str(run_dir / 'checkpoints' / 'last.ckpt')!r}, weights_only=True)\n"
            "print(all(torch.equal(v, saved['state_dict'][k]) for k, v in model.state_dict().items()))\n"
            "print(max((model.state_dict()[k] - v).abs().max().item() for k, v in reference.state_dict().items()))")
        loaded, diff = compare["stdout"].split()
        assert loaded == "True" and float(diff) < 1e-5, compare
    finally:
        kernel.close()
