"""A small training script for tests/test_launch.py, run as users run theirs.

    python tests/launch_script.py --devices 2 --batch 8             # the engine starts 2 workers
    torchrun --nproc_per_node 2 tests/launch_script.py --batch 8    # torch's launcher starts them
    python tests/launch_script.py --batch 16                        # one process, twice the batch

``--batch`` is per process. Rank 0 prints ``RESULT {json}`` with the run directory and the final
weights. ``--fail-rank R --fail-step S`` makes rank R raise at step S; ``--sleep`` slows every
step so a test can interrupt mid-run.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_lab import LabModule, Trainer


class Regressor(LabModule):
    def __init__(self, sleep: float = 0.0, fail_rank: int = -1, fail_step: int = -1) -> None:
        super().__init__()
        self.sleep, self.fail_rank, self.fail_step = sleep, fail_rank, fail_step
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        if self.sleep:
            time.sleep(self.sleep)
        if self.trainer.engine.rank == self.fail_rank and self.global_step == self.fail_step:
            raise RuntimeError(f"deliberate failure on rank {self.fail_rank} at step {self.fail_step}")
        x, y = batch
        loss = F.mse_loss(self.net(x).squeeze(-1), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x).squeeze(-1), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def dataset(size: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 4, generator=gen)
    y = x @ torch.tensor([1.5, -2.0, 0.5, 3.0]) + torch.linspace(0.0, 4.0, size)  # shards differ by rank
    return TensorDataset(x, y)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--fail-rank", type=int, default=-1)
    parser.add_argument("--fail-step", type=int, default=-1)
    parser.add_argument("--root", default=None)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)

    torch.manual_seed(0)  # the same initial weights in every process and every launch
    model = Regressor(args.sleep, args.fail_rank, args.fail_step)
    trainer = Trainer(max_epochs=args.epochs, devices=args.devices, accelerator="cpu", seed=7, deterministic=True,
                      progress=False, root_dir=args.root, name=args.name)
    trainer.fit(model, DataLoader(dataset(64, 1), batch_size=args.batch, shuffle=True),
                DataLoader(dataset(24, 2), batch_size=args.batch))
    if trainer.is_global_zero:
        weights = {k: v.flatten().tolist() for k, v in model.state_dict().items()}
        print("RESULT " + json.dumps({"run": str(trainer.run.path), "weights": weights,
                                      "world_size": trainer.world_size}), flush=True)


if __name__ == "__main__":
    main()
