"""Worker script for tests/test_ddp.py: the same training scenarios in 1 or in N processes.

Launched two ways by the tests, with the same arguments::

    python tests/ddp_worker.py OUT_DIR SCENARIO...                                    # 1 process
    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT_DIR SCENARIO...

Batch sizes are given *globally* and divided by the world size, so a 2-process run with
per-process batch B is compared against a 1-process run with batch 2B. Every rank computes a
result dict per scenario; rank 0 gathers them (``results[scenario] = [rank 0's, rank 1's, ...]``)
and rewrites ``OUT_DIR/results.pt`` after each scenario, so the scenarios finished before a
failure still report.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_lab import Engine, LabModule, Trainer

SEED = 7          # Trainer seed: the shuffling order of every run
INIT_SEED = 0     # torch seed right before a model is built: the same initial weights everywhere
TRAIN_SIZE = 64
VAL_SIZE = 37     # not divisible by 2 processes, nor by the validation batch size
VAL_BATCH = 5     # per process, in every run


def make_dataset(size: int, seed: int) -> TensorDataset:
    """Regression data ``(x, y, index)``; ``index`` lets the evaluation check which samples it saw."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 4, generator=gen)
    y = x @ torch.tensor([1.5, -2.0, 0.5, 3.0]) + 0.3 * torch.randn(size, generator=gen)
    y = y + torch.linspace(0.0, 4.0, size)  # targets drift with the index: rank shards differ
    return TensorDataset(x, y, torch.arange(size))


def make_net() -> nn.Module:
    torch.manual_seed(INIT_SEED)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))


class Regressor(LabModule):
    """A deterministic MLP (no dropout) trained with plain SGD on a mean MSE loss."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.net = make_net()
        self.lr = lr
        self.seen: list[int] = []  # indices this process evaluated in the current evaluation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, index = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True, sync_dist=True)
        # An epoch-only metric of this rank's samples: mean(i**2 for i in range(TRAIN_SIZE)) per epoch.
        self.log("train_sq_index", (index.double() ** 2).mean(), on_step=False, on_epoch=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.seen = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, index = batch
        self.log("val_loss", F.mse_loss(self(x), y), sync_dist=True)
        # Its exact epoch value is mean(i**2 for i in range(VAL_SIZE)) only when every sample is
        # counted once and the epoch mean is weighted by the batch sizes over all ranks.
        self.log("val_sq_index", (index.double() ** 2).mean(), sync_dist=True)
        self.seen.extend(index.tolist())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _trainer(out: Path, name: str, **kwargs: Any) -> Trainer:
    options: dict[str, Any] = {"seed": SEED, "max_epochs": 2, "progress": False, "enable_checkpointing": False,
                               "root_dir": out / name, "name": name, "accelerator": "cpu"}
    return Trainer(**{**options, **kwargs})


# ---------------------------------------------------------------------------------- scenarios
def scenario_engine(out: Path) -> dict[str, Any]:
    """Engine by hand (Fabric style): collectives, barrier, save, and a training loop."""
    engine = Engine(accelerator="cpu")
    engine.launch()
    rank, world = engine.rank, engine.world_size
    res: dict[str, Any] = {"rank": rank, "world_size": world, "is_global_zero": engine.is_global_zero}
    local = torch.tensor([rank + 1.0, 2.0 * (rank + 1)])
    for op in ("sum", "mean", "max", "min"):
        res[f"all_reduce_{op}"] = engine.all_reduce(local, op=op)
    res["local_after_reduce"] = local  # all_reduce must not change its input
    res["all_gather"] = engine.all_gather(torch.arange(3, dtype=torch.float32) + 10 * rank)
    res["all_gather_object"] = engine.all_gather_object({"rank": rank})
    res["broadcast"] = engine.broadcast({"from": rank, "payload": [1, 2, 3] if rank == 0 else None})
    res["broadcast_src_last"] = engine.broadcast(f"rank{rank}", src=world - 1)
    # Barrier: the last rank writes a marker late; after the barrier every rank must see it.
    marker = out / "barrier_marker"
    if rank == world - 1:
        if world > 1:
            time.sleep(1.0)
        marker.write_text("written before the barrier")
    engine.barrier()
    res["marker_seen_after_barrier"] = marker.exists()
    engine.barrier()  # nobody may start the next scenario's collectives while rank 0 still reads

    # A hand-written loop: global batch 8 split over the processes.
    model = make_net()
    initial = _weights(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model, optimizer = engine.setup(model, optimizer)
    loader = engine.setup_dataloaders(DataLoader(make_dataset(TRAIN_SIZE, 1), batch_size=8 // world,
                                                 shuffle=True), seed=SEED)
    res["loader_len"] = len(loader)
    # Without a seed every rank must still shuffle with the same order, or the shards overlap.
    unseeded = engine.setup_dataloaders(DataLoader(make_dataset(TRAIN_SIZE, 1), batch_size=8 // world,
                                                   shuffle=True))
    res["unseeded_indices"] = [int(i) for _x, _y, index in unseeded for i in index]
    for _ in range(2):
        for x, y, _index in loader:
            with engine.autocast():
                loss = F.mse_loss(model(x).squeeze(-1), y)
            engine.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
    plain = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    res["initial"] = initial
    res["final"] = _weights(plain)
    engine.save(out / "engine.ckpt", {"model": model, "optimizer": optimizer})
    res["saved"] = engine.load(out / "engine.ckpt")["model"]  # after save's barrier: every rank reads it
    return res


def scenario_grad(out: Path) -> dict[str, Any]:
    """Trainer.fit with a global batch of 8 (2 × 4 or 1 × 8), shuffled, two epochs."""
    trainer = _trainer(out, "grad")
    model = Regressor()
    initial = _weights(model)
    world = trainer.world_size
    loader = DataLoader(make_dataset(TRAIN_SIZE, 1), batch_size=8 // world, shuffle=True)
    trainer.fit(model, loader)
    return {"world_size": world, "is_global_zero": trainer.is_global_zero, "initial": initial,
            "final": _weights(model), "global_step": trainer.global_step,
            "callback_metrics": trainer.callback_metrics, "run_dir": str(trainer.run_dir),
            # hooks the fit left on the user's parameters (its all-reduce timing must take its own away)
            "grad_hooks_left": sum(len(p._post_accumulate_grad_hooks or {}) for p in model.parameters())}


def scenario_accum(out: Path) -> dict[str, Any]:
    """accumulate_grad_batches=2 with 2 × batch 4 (DDP) against no accumulation with 1 × batch 16."""
    world = Engine(accelerator="cpu").world_size
    accumulate = 2 if world > 1 else 1
    trainer = _trainer(out, "accum", accumulate_grad_batches=accumulate)
    model = Regressor()
    loader = DataLoader(make_dataset(TRAIN_SIZE, 2), batch_size=16 // (world * accumulate), shuffle=True)
    trainer.fit(model, loader)
    return {"world_size": world, "accumulate": accumulate, "final": _weights(model),
            "global_step": trainer.global_step, "callback_metrics": trainer.callback_metrics}


def scenario_val(out: Path) -> dict[str, Any]:
    """Validation over 37 samples in batches of 5 per process, during fit and by trainer.validate."""
    trainer = _trainer(out, "val")
    model = Regressor()
    world = trainer.world_size
    train = DataLoader(make_dataset(TRAIN_SIZE, 3), batch_size=8 // world, shuffle=True)
    val = DataLoader(make_dataset(VAL_SIZE, 4), batch_size=VAL_BATCH, shuffle=False)
    trainer.fit(model, train, val)
    res: dict[str, Any] = {"world_size": world, "fit_metrics": trainer.callback_metrics,
                           "fit_seen": list(model.seen), "final": _weights(model)}
    res["validate"] = trainer.validate(model, val)
    res["validate_seen"] = list(model.seen)
    return res


def scenario_resume(out: Path) -> dict[str, Any]:
    """The "grad" run stopped mid-epoch (max_steps=5), then resumed with ckpt_path="last"."""
    first = _trainer(out, "resume", enable_checkpointing=True, max_steps=5)
    world = first.world_size
    loader = DataLoader(make_dataset(TRAIN_SIZE, 1), batch_size=8 // world, shuffle=True)
    first.fit(Regressor(), loader)
    second = _trainer(out, "resume", enable_checkpointing=True)
    model = Regressor()
    second.fit(model, loader, ckpt_path="last")
    return {"world_size": world, "stopped_at": first.global_step, "first_run_dir": str(first.run_dir),
            "run_dir": str(second.run_dir), "final": _weights(model), "global_step": second.global_step,
            "callback_metrics": second.callback_metrics}


SCENARIOS = {"engine": scenario_engine, "grad": scenario_grad, "accum": scenario_accum, "val": scenario_val,
             "resume": scenario_resume}


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    names = argv[1:] or list(SCENARIOS)
    results: dict[str, Any] = {}
    engine = None
    for name in names:
        try:
            res = SCENARIOS[name](out)
        except BaseException:
            print(f"[ddp_worker] scenario {name!r} failed:", file=sys.stderr, flush=True)
            traceback.print_exc()
            raise  # torchrun then stops the other ranks: no rank waits forever in a collective
        if engine is None:
            engine = Engine(accelerator="cpu")
            engine.launch()
        gathered = engine.all_gather_object(res)
        if engine.is_global_zero:
            results[name] = gathered
            torch.save(results, out / "results.tmp")
            (out / "results.tmp").replace(out / "results.pt")
        print(f"[ddp_worker] rank {engine.rank}: scenario {name!r} done", flush=True)
    if engine is not None:
        engine.barrier()


if __name__ == "__main__":
    main(sys.argv[1:])
