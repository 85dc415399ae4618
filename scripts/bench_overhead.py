"""Engine overhead vs a hand-written PyTorch loop (and PyTorch Lightning, when installed).

SPEC "Performance": on a tiny MLP on CPU (~0.4 ms steps, where framework overhead shows most),
``Trainer.fit`` at its defaults with ``progress=False`` and one ``self.log`` per step must be
at most 3 % slower than the raw loop, and faster than Lightning; ``import lightning_lab`` after
``import torch`` must take at most 0.3 s.

Three variants train the same model (same init: same seed), on the same synthetic data, for the
same number of steps:

    (a) raw      a hand-written loop: zero_grad / forward / cross_entropy / backward / step
    (b) lab      lightning_lab ``Trainer(max_epochs=E, progress=False, root_dir=<tmp>).fit``
                 (checkpointing on, as by default) with ``self.log("train_loss", loss)`` per step;
                 the optimization insight (per-batch phase timing, ``sys/...`` records) is on, as by default
    (c) lightning  ``lightning.Trainer(...)`` with ``self.log("train_loss", loss)`` per step
                 (skipped when ``lightning`` is not importable)

The runs alternate (a, b, c, a, b, c, ...) after one untimed warm-up each; only ``fit`` (or the
loop) is timed: model, data, DataLoader and Trainer construction are not, DataLoader iteration
is. Then ``import lightning_lab`` (and ``import lightning``) is timed in fresh subprocesses.

Run from the repository root::

    .venv/bin/python scripts/bench_overhead.py                 # full settings
    .venv/bin/python scripts/bench_overhead.py --quick         # smoke run
    .venv/bin/python scripts/bench_overhead.py --repeats 9 --epochs 4

Nothing is written to the repository: every run directory lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a plain script from a checkout without installing
    sys.path.insert(0, str(REPO))

OVERHEAD_TARGET = 1.03  # lightning_lab / raw
IMPORT_TARGET_S = 0.3

# Model / data sizes: a raw step (DataLoader batch + forward + backward + SGD step) takes about
# 0.4 ms on one CPU thread with these, which is where per-step framework overhead shows most.
IN_FEATURES, HIDDEN, CLASSES = 64, 64, 10
LR = 0.05


# ---------------------------------------------------------------------------------------- setup
def make_data(samples: int, seed: int) -> TensorDataset:
    """A learnable synthetic classification problem (a random linear teacher), fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, IN_FEATURES, generator=gen)
    teacher = torch.randn(IN_FEATURES, CLASSES, generator=gen)
    y = (x @ teacher + 0.5 * torch.randn(samples, CLASSES, generator=gen)).argmax(dim=1)
    return TensorDataset(x, y)


def make_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(IN_FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))


def make_loader(data: TensorDataset, batch_size: int, seed: int) -> DataLoader:
    torch.manual_seed(seed)  # the raw loop's shuffling draws from the global RNG
    return DataLoader(data, batch_size=batch_size, shuffle=True)


# ---------------------------------------------------------------------------------------- variants
# Each ``prepare_*`` builds everything untimed and returns (run, cleanup); ``run()`` is timed and
# returns the last training loss (a sanity check that all variants trained the same problem).
Prepared = tuple[Callable[[], float], Callable[[], None]]


def prepare_raw(data: TensorDataset, args: argparse.Namespace) -> Prepared:
    model = make_net(args.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loader = make_loader(data, args.batch_size, args.seed)
    epochs = args.epochs

    def run() -> float:
        model.train()
        loss = None
        for _ in range(epochs):
            for x, y in loader:
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
        return float(loss.detach())

    return run, lambda: None


def prepare_lab(data: TensorDataset, args: argparse.Namespace) -> Prepared:
    from lightning_lab import LabModule, Trainer

    class Classifier(LabModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_net(args.seed)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=LR)

    tmp = tempfile.mkdtemp(prefix="bench_lab_")
    trainer = Trainer(max_epochs=args.epochs, progress=False, root_dir=tmp, seed=args.seed)
    model = Classifier()
    loader = make_loader(data, args.batch_size, args.seed)

    def run() -> float:
        trainer.fit(model, loader)
        LAST_INSIGHT[:] = [trainer.insight]
        return float(trainer.callback_metrics["train_loss"])

    return run, lambda: shutil.rmtree(tmp, ignore_errors=True)


LAST_INSIGHT: list[Any] = []  # where the time of the last timed lightning_lab fit went, by its own measurement


def lightning_version() -> str | None:
    if importlib.util.find_spec("lightning") is None:
        return None
    try:
        import lightning
    except Exception as err:  # installed but broken: report, don't crash the benchmark
        print(f"lightning is installed but cannot be imported ({err!r}); skipping it.")
        return None
    quiet_lightning()  # after the import: importing lightning sets its loggers' levels
    return str(lightning.__version__)


def prepare_lightning(data: TensorDataset, args: argparse.Namespace) -> Prepared:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_net(args.seed)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=LR)

    tmp = tempfile.mkdtemp(prefix="bench_lightning_")
    L.seed_everything(args.seed, verbose=False)
    trainer = L.Trainer(
        max_epochs=args.epochs, enable_progress_bar=False, enable_model_summary=False,
        logger=CSVLogger(tmp), default_root_dir=tmp, accelerator="cpu", devices=1,
    )
    model = Classifier()
    loader = make_loader(data, args.batch_size, args.seed)

    def run() -> float:
        trainer.fit(model, loader)
        return float(trainer.callback_metrics["train_loss"])

    return run, lambda: shutil.rmtree(tmp, ignore_errors=True)


def quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning(\..*)?")
    warnings.filterwarnings("ignore", message=r".*(num_workers|does not have many workers|Checkpoint directory).*")


def time_variant(prepare: Callable[[TensorDataset, argparse.Namespace], Prepared], data: TensorDataset,
                 args: argparse.Namespace) -> tuple[float, float]:
    run, cleanup = prepare(data, args)
    gc.collect()
    try:
        start = time.perf_counter()
        loss = run()
        elapsed = time.perf_counter() - start
    finally:
        cleanup()
    return elapsed, loss


# ---------------------------------------------------------------------------------------- imports
def time_import(module: str, repeats: int) -> list[float]:
    """``import module`` after ``import torch``, in a fresh interpreter each time (seconds)."""
    code = (
        "import time, torch\n"
        "t = time.perf_counter()\n"
        f"import {module}\n"
        "print(repr(time.perf_counter() - t))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    times = []
    with tempfile.TemporaryDirectory(prefix="bench_import_") as cwd:  # nothing lands in the repo
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                                 cwd=cwd, env=env, timeout=300)
            if out.returncode != 0:
                raise RuntimeError(f"import {module} failed:\n{out.stderr.strip()}")
            times.append(float(out.stdout.strip().splitlines()[-1]))
    return times


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per variant (default 7; quick: 2)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 2; quick: 1)")
    parser.add_argument("--samples", type=int, default=None, help="dataset size (default 16384: 512 steps per epoch; quick: 512)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, init and shuffling (default 0)")
    parser.add_argument("--import-repeats", type=int, default=None, help="fresh-process import timings (default 7)")
    parser.add_argument("--no-lightning", action="store_true", help="skip PyTorch Lightning even if installed")
    parser.add_argument("--quick", action="store_true", help="few steps and rounds: a smoke run, not a measurement")
    args = parser.parse_args(argv)
    quick = args.quick
    args.repeats = args.repeats if args.repeats is not None else (2 if quick else 7)
    args.epochs = args.epochs if args.epochs is not None else (1 if quick else 2)
    args.samples = args.samples if args.samples is not None else (512 if quick else 16384)
    args.import_repeats = args.import_repeats if args.import_repeats is not None else (2 if quick else 7)
    for name in ("repeats", "epochs", "samples", "batch_size", "import_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not quick and args.repeats < 5:
        print(f"note: --repeats {args.repeats} < 5: medians will be noisy.", file=sys.stderr)
    return args


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}×"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    os.environ.pop("LIGHTNING_LAB_RUN_DIR", None)  # a launcher's run dir must not capture these runs
    quiet_lightning()

    steps_per_epoch = -(-args.samples // args.batch_size)
    steps = steps_per_epoch * args.epochs
    lightning = None if args.no_lightning else lightning_version()

    import lightning_lab

    print(f"python {platform.python_version()}, torch {torch.__version__}, lightning_lab {lightning_lab.__version__}, "
          f"lightning {lightning or 'not installed (skipped)' if not args.no_lightning else 'skipped (--no-lightning)'}")
    print(f"MLP {IN_FEATURES}→{HIDDEN}→{CLASSES}, SGD, {args.samples} samples, batch {args.batch_size}, "
          f"{args.epochs} epoch(s) = {steps} steps, seed {args.seed}, torch threads 1, "
          f"{args.repeats} alternated rounds{' (QUICK smoke run)' if args.quick else ''}")

    variants: list[tuple[str, str, Callable[..., Prepared]]] = [
        ("raw", "raw PyTorch loop", prepare_raw),
        ("lab", "lightning_lab Trainer", prepare_lab),
    ]
    if lightning:
        variants.append(("lightning", f"Lightning {lightning}", prepare_lightning))

    data = make_data(args.samples, args.seed)
    times: dict[str, list[float]] = {key: [] for key, _, _ in variants}
    losses: dict[str, float] = {}
    for _key, _, prepare in variants:  # warm-up: first-call lazy initialisation, caches
        time_variant(prepare, data, args)
    for round_idx in range(args.repeats):
        line = []
        for key, _, prepare in variants:
            elapsed, loss = time_variant(prepare, data, args)
            times[key].append(elapsed)
            losses[key] = loss
            line.append(f"{key} {elapsed * 1e3:7.1f} ms")
        print(f"round {round_idx + 1}/{args.repeats}: " + "  ".join(line), flush=True)

    med = {key: statistics.median(values) for key, values in times.items()}
    raw = med["raw"]
    ratio = {key: med[key] / raw for key in med}
    paired = {key: statistics.median(t / r for t, r in zip(times[key], times["raw"], strict=True)) for key in med}
    print()
    best = {key: min(values) / min(times["raw"]) for key, values in times.items()}
    print(f"{'variant':<24}{'median':>11}{'min':>11}{'per step':>11}{'vs raw':>9}{'paired':>9}{'min/min':>9}"
          f"{'overhead/step':>15}{'last loss':>11}")
    for key, label, _ in variants:
        overhead_us = (med[key] - raw) / steps * 1e6
        print(f"{label:<24}{med[key] * 1e3:>8.1f} ms{min(times[key]) * 1e3:>8.1f} ms"
              f"{med[key] / steps * 1e3:>8.3f} ms{ratio[key]:>8.3f}×{paired[key]:>8.3f}×{best[key]:>8.3f}×"
              f"{overhead_us:>12.1f} µs{losses[key]:>11.4f}")
    print("(vs raw: ratio of medians; paired: median of the per-round ratios; min/min: ratio of the fastest runs, "
          "least sensitive to other load; overhead/step: (median − raw median) / steps, fixed per-fit costs included. "
          "The last losses differ for lightning_lab because its engine-owned sampler shuffles with its own seeded "
          "order.)")

    if LAST_INSIGHT and LAST_INSIGHT[0] is not None:
        print("\nlightning_lab's own account of its last timed fit (optimization insight, on by default):")
        print("  " + LAST_INSIGHT[0].text().replace("\n", "\n  "))
    lightning_ok = "lightning" not in ratio or ratio["lab"] < ratio["lightning"]
    # Three estimates of one ratio; on a noisy machine they can straddle the target, and then the
    # wall clock cannot tell (scripts/bench_instructions.py counts instructions instead).
    estimates = (ratio["lab"], paired["lab"], best["lab"])
    verdict = ("MET" if max(estimates) <= OVERHEAD_TARGET else "NOT MET" if min(estimates) > OVERHEAD_TARGET
               else "INCONCLUSIVE")
    why = (" (the estimates straddle the target: too noisy; see scripts/bench_instructions.py)"
           if verdict == "INCONCLUSIVE" else "")
    print(f"target lightning_lab/raw ≤ {OVERHEAD_TARGET:.2f}: {verdict}{why} (median {ratio['lab']:.3f}×, paired "
          f"{paired['lab']:.3f}×, min/min {best['lab']:.3f}×)" + (f"; below Lightning's {ratio['lightning']:.2f}×: "
                                      f"{'MET' if lightning_ok else 'NOT MET'}" if "lightning" in ratio else
                                      "; Lightning not measured"))

    print()
    imports: dict[str, list[float]] = {"lightning_lab": time_import("lightning_lab", args.import_repeats)}
    if lightning:
        imports["lightning"] = time_import("lightning", args.import_repeats)
    for module, values in imports.items():
        print(f"import {module:<14} (after torch, fresh process, {len(values)}×): median "
              f"{statistics.median(values):.3f} s  [{', '.join(f'{v:.3f}' for v in values)}]")
    import_med = statistics.median(imports["lightning_lab"])
    import_ok = import_med <= IMPORT_TARGET_S
    print(f"target import lightning_lab ≤ {IMPORT_TARGET_S} s: {'MET' if import_ok else 'NOT MET'} ({import_med:.3f} s)")

    # Markdown summary, ready for the README.
    print()
    print(f"Overhead on CPU (1 thread), MLP {IN_FEATURES}→{HIDDEN}→{CLASSES}, batch {args.batch_size}, {steps} steps, "
          f"median of {args.repeats} alternated runs; torch {torch.__version__}"
          f"{'; QUICK smoke run, not a measurement' if args.quick else ''}:")
    print()
    print("| Variant | fit time (median) | per step | vs raw loop | fastest vs fastest | target |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| Raw PyTorch loop | {raw * 1e3:.1f} ms | {raw / steps * 1e3:.3f} ms | 1.000× | 1.000× | |")
    print(f"| lightning_lab `Trainer.fit` (defaults, progress off, 1 `self.log`/step) | {med['lab'] * 1e3:.1f} ms | "
          f"{med['lab'] / steps * 1e3:.3f} ms | {ratio['lab']:.3f}× | {best['lab']:.3f}× | ≤ {OVERHEAD_TARGET:.2f}×: "
          f"{verdict.lower() if lightning_ok else 'not met'} |")
    if "lightning" in med:
        print(f"| Lightning {lightning} `Trainer.fit` (1 `self.log`/step) | {med['lightning'] * 1e3:.1f} ms | "
              f"{med['lightning'] / steps * 1e3:.3f} ms | {ratio['lightning']:.3f}× | {best['lightning']:.3f}× | |")
    else:
        why = "--no-lightning" if args.no_lightning else "not installed"
        print(f"| Lightning | skipped ({why}) | | | | |")
    print()
    print("| Import (after `import torch`, fresh process, median) | time | target |")
    print("|---|---:|---|")
    print(f"| `import lightning_lab` | {import_med:.3f} s | ≤ {IMPORT_TARGET_S} s: {'met' if import_ok else 'not met'} |")
    if "lightning" in imports:
        print(f"| `import lightning` | {statistics.median(imports['lightning']):.3f} s | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
