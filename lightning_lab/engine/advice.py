"""Rules that turn where the time goes into a short list of things to change.

Each rule reads the measured phase shares and the training set-up (what the DataLoader, the
Trainer and the device are now) and returns at most one sentence naming the option to change,
its current value and a value to try. :func:`advise` runs them all and keeps the few that apply.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DATA_SHARE = 0.20
"""Data wait above this share of the batch time means the run is data-bound."""
FRAMEWORK_SHARE = 0.15
"""lightning_lab's own work (logging, checkpoints, callbacks) above this share is worth cutting."""
ALLREDUCE_SHARE = 0.20
"""DDP gradient all-reduce wait above this share of the batch time is worth cutting."""
MAX_TIPS = 3


@dataclass(frozen=True)
class Setup:
    """What the run is configured with, as far as the advice rules care.

    ``num_workers``/``pin_memory``/``persistent_workers`` are ``None`` when the training data
    is not a ``torch.utils.data.DataLoader`` (so they cannot be known).
    """

    device_type: str = "cpu"
    precision: str = "32-true"
    bf16_supported: bool = False
    num_workers: int | None = None
    pin_memory: bool | None = None
    persistent_workers: bool | None = None
    log_every_n_steps: int = 1
    checkpoint_every_n_steps: int | None = None
    world_size: int = 1
    accumulate_grad_batches: int = 1
    cpu_count: int = os.cpu_count() or 1


Rule = Callable[[Mapping[str, float], float | None, Setup], tuple[float, str] | None]


def data_rule(shares: Mapping[str, float], allreduce: float | None, setup: Setup) -> tuple[float, str] | None:
    """Data-bound: more loader workers, pinned memory (CUDA), persistent workers; once all are set, cheaper samples."""
    share = shares.get("data", 0.0)
    if share <= DATA_SHARE:
        return None
    head = f"data-bound: {share:.0%} of each batch waits for the next batch."
    if setup.num_workers is None:
        return share, (f"{head} Load batches in parallel: use a torch DataLoader with num_workers > 0 "
                       "(and persistent_workers=True).")
    workers = setup.num_workers
    try_workers = min(max(2, 2 * workers), max(setup.cpu_count, 2))
    changes = []  # only what differs from the setup: never "set x (now x)"
    if try_workers > workers:
        changes.append(f"num_workers={try_workers} (now {workers})")
    if setup.device_type == "cuda" and not setup.pin_memory:
        changes.append(f"pin_memory=True (now {setup.pin_memory})")
    if not setup.persistent_workers:
        changes.append(f"persistent_workers=True (now {setup.persistent_workers})")
    if changes:
        return share, f"{head} In the DataLoader set " + ", ".join(changes) + "."
    return share, (f"{head} The DataLoader already runs {workers} worker processes on {setup.cpu_count} CPU "
                   "cores: make each sample cheaper to load (decode, resize or tokenize once before training "
                   "and cache the result) or load it where it is computed (on the device).")


def framework_rule(shares: Mapping[str, float], allreduce: float | None, setup: Setup) -> tuple[float, str] | None:
    """Framework work is a large share: log or checkpoint less often."""
    share = shares.get("framework", 0.0)
    if share <= FRAMEWORK_SHARE:
        return None
    changes = [f"log less often, log_every_n_steps={max(50, setup.log_every_n_steps * 10)} "
               f"(now {setup.log_every_n_steps})"]
    if setup.checkpoint_every_n_steps is not None:
        changes.append(f"checkpoint less often, ModelCheckpoint(every_n_train_steps="
                       f"{setup.checkpoint_every_n_steps * 10}) (now {setup.checkpoint_every_n_steps})")
    else:
        changes.append("checkpoint less often (last.ckpt is saved every epoch: train longer epochs)")
    return share, (f"{share:.0%} of each batch is logging, checkpoints and callbacks: "
                   + "; ".join(changes) + "; or lighten per-step callbacks.")


def precision_rule(shares: Mapping[str, float], allreduce: float | None, setup: Setup) -> tuple[float, str] | None:
    """fp32 on a GPU that computes in bf16: bf16-mixed."""
    if setup.device_type != "cuda" or not setup.bf16_supported or setup.precision != "32-true":
        return None
    share = shares.get("compute", 0.0) + shares.get("optimizer", 0.0)
    return share, ("this GPU supports bfloat16 but the run is fp32: precision=\"bf16-mixed\" (%%train "
                   "--precision bf16-mixed) usually trains much faster at the same accuracy.")


def allreduce_rule(shares: Mapping[str, float], allreduce: float | None, setup: Setup) -> tuple[float, str] | None:
    """DDP waits on gradient all-reduce: synchronise less often."""
    if setup.world_size < 2 or allreduce is None or allreduce <= ALLREDUCE_SHARE:
        return None
    target = max(2, setup.accumulate_grad_batches * 4)
    return allreduce, (f"{allreduce:.0%} of each batch waits for the gradient all-reduce: accumulate gradients "
                       f"to synchronise less often, accumulate_grad_batches={target} (now "
                       f"{setup.accumulate_grad_batches}), or use fewer, faster-linked processes.")


RULES: tuple[Rule, ...] = (data_rule, framework_rule, allreduce_rule, precision_rule)


def advise(shares: Mapping[str, float], setup: Setup, allreduce_share: float | None = None) -> list[str]:
    """The tips that apply, largest share of time first, at most :data:`MAX_TIPS`.

    Args:
        shares: Each phase's share of the batch time (see :data:`lightning_lab.runs.insight.PHASES`).
        setup: The run's configuration.
        allreduce_share: The DDP all-reduce wait as a share of the batch time, when measured.

    Example:
        >>> advise({"data": 0.6, "compute": 0.4}, Setup(num_workers=0))[0][:11]
        'data-bound:'
    """
    found = [tip for rule in RULES if (tip := rule(shares, allreduce_share, setup)) is not None]
    found.sort(key=lambda item: -item[0])
    return [text for _, text in found[:MAX_TIPS]]
