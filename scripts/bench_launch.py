"""Launch backends: how soon a ``%%train --devices 2`` run shows its first metric, and DDP throughput.

Two measurements, side by side in one run (absolute times on a shared 2-core VM mean little):

1. Time to first metric. A real ``python3`` kernel (jupyter_client, widget on) runs the same
   small model three ways, alternated for ``--repeats`` rounds:
   ``%%train --devices 2`` (export → ``lightning-lab run`` → torch elastic launch of 2 workers →
   the widget tails ``metrics.jsonl``), and ``%%train`` in the kernel for reference. For each, the
   client's clock at submit is compared with the first record's ``time`` in ``metrics.jsonl``
   ("logged"); for ``--devices 2`` the kernel also records when the widget first *received* a
   record (``launch.json["first_metric_after_s"]``, measured from the start of the magic).
2. DDP throughput on CPU. The same script (MLP 256→512→512→10, batch 64 per process, one torch
   thread per process, gloo) runs ``--devices 1`` and ``--devices 2`` alternately; each prints its
   optimizer steps per second measured inside ``fit`` after a warm-up (start-up excluded).
   Samples/s counts every process's batch.

Run from the repository root::

    .venv/bin/python scripts/bench_launch.py [--repeats 3] [--steps 400]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SETUP = """\
%load_ext lightning_lab
import torch, torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from lightning_lab import LabModule
g = torch.Generator().manual_seed(0)
X = torch.randn(2048, 32, generator=g)
Y = (X[:, 0] > 0).long()

class Net(LabModule):
    def __init__(self, lr=0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
"""

CELL = "%%train --max-epochs 1 --seed 0 --name {name} {extra}\nmodel = Net()\nloader = DataLoader(TensorDataset(X, Y), batch_size=32)"

THROUGHPUT = textwrap.dedent("""\
    import argparse, json, time, torch, torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from lightning_lab import LabModule, Trainer
    from lightning_lab.callbacks import Callback

    torch.set_num_threads(1)

    class Net(LabModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Clock(Callback):
        def __init__(self, warmup):
            self.warmup, self.t0, self.t1 = warmup, None, None
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == self.warmup:
                self.t0 = time.perf_counter()
            self.t1 = time.perf_counter()

    p = argparse.ArgumentParser(); p.add_argument("--devices", default="1"); p.add_argument("--steps", type=int)
    a = p.parse_args()
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64 * 4096, 256, generator=g), torch.randint(0, 10, (64 * 4096,), generator=g))
    clock = Clock(warmup=20)
    t = Trainer(max_steps=a.steps, devices=a.devices, accelerator="cpu", progress=False, callbacks=[clock],
                enable_checkpointing=False)
    t.fit(Net(), DataLoader(data, batch_size=64))
    if t.is_global_zero:
        print("RESULT", json.dumps({"steps_per_s": (a.steps - 20) / (clock.t1 - clock.t0), "world": t.world_size}))
""")


def first_metric_times(repeats: int) -> dict[str, list[float]]:
    from jupyter_client import KernelManager

    root = Path(tempfile.mkdtemp(prefix="bench_launch_"))
    env = {**os.environ, "LIGHTNING_LAB_ROOT": str(root)}
    env.pop("LIGHTNING_LAB_NO_WIDGET", None)
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(root))
    client = km.client()
    client.start_channels()
    client.wait_for_ready(timeout=120)
    times: dict[str, list[float]] = {"devices 2: logged": [], "devices 2: in widget": [], "in kernel: logged": []}

    def run(code: str) -> None:
        msg_id = client.execute(code)
        while True:
            msg = client.get_iopub_msg(timeout=600)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status" \
                    and msg["content"]["execution_state"] == "idle":
                return

    def first_logged(name: str, since: float) -> tuple[float, Path]:
        (run_dir,) = sorted((root / name).iterdir())[-1:]
        with open(run_dir / "metrics.jsonl") as f:
            return json.loads(f.readline())["time"] - since, run_dir

    try:
        run(SETUP)
        for i in range(repeats):
            for kind in (("remote", "local") if i % 2 == 0 else ("local", "remote")):
                name = f"{kind}{i}"
                extra = "--devices 2" if kind == "remote" else ""
                t0 = time.time()
                run(CELL.format(name=name, extra=extra))
                logged, run_dir = first_logged(name, t0)
                if kind == "remote":
                    times["devices 2: logged"].append(logged)
                    launch = json.loads((run_dir / "launch.json").read_text())
                    times["devices 2: in widget"].append(launch["first_metric_after_s"])
                else:
                    times["in kernel: logged"].append(logged)
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)
    return times


def throughput(repeats: int, steps: int) -> dict[int, list[float]]:
    folder = Path(tempfile.mkdtemp(prefix="bench_ddp_"))
    script = folder / "ddp_throughput.py"
    script.write_text(THROUGHPUT)
    env = {**os.environ, "LIGHTNING_LAB_ROOT": str(folder / "runs"), "OMP_NUM_THREADS": "1"}
    rates: dict[int, list[float]] = {1: [], 2: []}
    for i in range(repeats):
        for devices in ((1, 2) if i % 2 == 0 else (2, 1)):
            done = subprocess.run([sys.executable, str(script), "--devices", str(devices), "--steps", str(steps)],
                                  cwd=folder, capture_output=True, text=True, env=env, check=True)
            line = next(x for x in done.stdout.splitlines() if "RESULT" in x)
            rates[devices].append(json.loads(line.split("RESULT ", 1)[1])["steps_per_s"])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()

    print(f"time to first metric (median of {args.repeats}; seconds from submitting the cell):")
    for label, values in first_metric_times(args.repeats).items():
        print(f"  {label:<22} {statistics.median(values):6.2f} s   (all: {', '.join(f'{v:.2f}' for v in values)})")
    rates = throughput(args.repeats, args.steps)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"DDP on CPU, MLP 256-512-512-10, batch 64 per process, 1 thread each (median of {args.repeats}):")
    print(f"  1 process : {one:7.1f} steps/s  {one * 64:8.0f} samples/s")
    print(f"  2 processes: {two:7.1f} steps/s  {two * 128:8.0f} samples/s")
    print(f"  2 vs 1: steps/s {two / one:.2f}x, samples/s {2 * two / one:.2f}x  (cores on this machine: {os.cpu_count()})")


if __name__ == "__main__":
    main()
