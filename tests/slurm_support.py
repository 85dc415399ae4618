"""Helpers for tests/test_slurm.py: the test cluster, the training script it runs, and run readers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = REPO / "scripts" / "slurm_cluster.sh"

# A tiny deterministic regression on lightning_lab.Trainer. --batch is the *global* batch: each of
# W processes takes batch/W, so a 2-task Slurm job is comparable with 1 process × the whole batch.
TRAIN_SCRIPT = '''\
"""A small regression trained by lightning_lab.Trainer, for the Slurm tests."""
import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_lab import LabModule, Trainer


class Regressor(LabModule):
    def __init__(self, sleep: float, fail_at: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
        self.sleep, self.fail_at = sleep, fail_at

    def training_step(self, batch, batch_idx):
        if self.global_step == self.fail_at:
            raise ValueError(f"diverged on purpose at step {self.global_step}")
        time.sleep(self.sleep)  # slow enough for a signal to arrive mid-run
        x, y = batch
        loss = F.mse_loss(self.net(x).squeeze(-1), y)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--root", default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--fail-at", type=int, default=-1)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=gen)
    y = x @ torch.tensor([1.5, -2.0, 0.5, 3.0]) + torch.linspace(0.0, 4.0, 64)
    model = Regressor(args.sleep, args.fail_at)
    trainer = Trainer(max_epochs=args.epochs, seed=7, deterministic=True, accelerator="cpu",
                      progress=False, root_dir=args.root, name="slurmtest")
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch // trainer.world_size, shuffle=True)
    trainer.fit(model, loader)
    if trainer.is_global_zero:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, args.out)
        print(f"world_size={trainer.world_size} steps={trainer.global_step}", flush=True)


if __name__ == "__main__":
    main()
'''
STEPS = 16  # 64 samples, global batch 8, 2 epochs


def why_no_cluster() -> str | None:
    """Why this machine cannot start the test cluster (None: it can, and the tests must run)."""
    if os.geteuid() != 0:
        return "the test Slurm cluster runs slurmctld/slurmd as root (SlurmUser=root); this user is not root"
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        return "slurm-wlm is not installed and there is no apt-get to install it (Debian/Ubuntu only)"
    return None


@dataclass
class Cluster:
    """A running test cluster: its state folder and config (exported as SLURM_CONF by the fixture)."""

    state_dir: Path
    conf: Path

    def scontrol(self, *args: str) -> str:
        done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "SLURM_CONF": str(self.conf)})
        assert done.returncode == 0, f"scontrol {' '.join(args)}: {done.stderr}"
        return done.stdout

    def logs(self) -> str:
        """The daemons' log tails, for a failing assertion."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.state_dir / "log" / name
            if path.is_file():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-25:]))
        return "\n".join(parts)


def cluster_command(command: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    """``scripts/slurm_cluster.sh COMMAND STATE_DIR`` (install included on a fresh machine)."""
    return subprocess.run([str(CLUSTER_SCRIPT), command, str(state_dir)], capture_output=True, text=True,
                          timeout=900)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without launcher variables that would change what a script detects."""
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not k.startswith(("TORCHELASTIC_", "LIGHTNING_LAB_", "SLURM_JOB", "SLURM_STEP"))}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def run_reference(script: Path, out: Path, root: Path, *args: str) -> dict[str, torch.Tensor]:
    """The script in one plain process (no Slurm) with the whole global batch: the expected weights."""
    done = subprocess.run([sys.executable, str(script), "--out", str(out), "--root", str(root), *args],
                          env=clean_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"the 1-process reference failed:\n{done.stdout}\n{done.stderr}"
    return torch.load(out, weights_only=True)


def run_logs(run_dir: Path, lines: int = 25) -> str:
    """The tails of a run's logs (batch shell and every rank), for a failing assertion's message."""
    parts = []
    for path in sorted(Path(run_dir).glob("logs/*.out")):
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {path.name}\n" + "\n".join(tail))
    return "\n".join(parts)


def read_run(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "run.json").read_text())


def step_records(run_dir: Path) -> list[dict[str, Any]]:
    """The metrics.jsonl records of training steps (those carrying the per-step loss)."""
    path = Path(run_dir) / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a partial last line while the run writes
    return [r for r in records if any(k.startswith("train_loss") and not k.endswith("epoch") for k in r)]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def assert_weights_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    assert actual.keys() == expected.keys(), what
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-5, rtol=0,
                                   msg=lambda m, k=key: f"{what}: {k}: {m}")
