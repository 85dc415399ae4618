"""The learning-rate finder: an exponential sweep of the rate, loss against rate, one suggestion.

The sweep trains for ``num_steps`` optimizer steps from the model's current weights, multiplying
the learning rate by a constant factor each step from ``min_lr`` to ``max_lr``, and records the
training loss. It stops early once the loss (an exponential moving average, so one noisy batch
does not end it) exceeds ``early_stop_threshold`` × the best so far: the rate is diverging. Afterwards the
weights, the RNG states and the module's train/eval mode are put back exactly as they were: the
sweep leaves no trace in the model. Nothing is recorded in a run directory.

**The suggestion rule** (documented in the README): the losses are smoothed with a centred moving
average (no lag, unlike an EMA, which would shift the curve towards higher rates); among the
points up to the lowest smoothed loss, ignoring the first 10 % of the sweep, the suggestion is the
rate where the smoothed loss falls fastest against log10(rate) — the steepest descent of the
curve. That is where training makes the most progress per step; the minimum itself is usually
already too high (it sits just before divergence). With too few points to tell, it is the rate
of the lowest loss divided by 10.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from lightning_lab.engine.data import move_to_device
from lightning_lab.engine.module import LabModule, is_overridden
from lightning_lab.engine.optim import parse_optimizers
from lightning_lab.engine.seed import capture_rng_state, restore_rng_state
from lightning_lab.errors import ConfigurationError, UserCodeError

if TYPE_CHECKING:
    from lightning_lab.engine.trainer import Trainer

EARLY_STOP_SMOOTHING = 0.9
"""Weight of the running average in the loss the early stop watches (bias-corrected)."""


@dataclass
class LRFinderResult:
    """What :meth:`Trainer.find_lr` measured.

    Attributes:
        lrs: The learning rate of each step of the sweep.
        losses: The training loss of each step, smoothed by a centred moving average.
        raw_losses: The unsmoothed training loss of each step.
        suggestion: The suggested learning rate (``None`` when the sweep was too short to tell).
        stopped_early: The sweep stopped because the loss diverged.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float] = field(default_factory=list)
    suggestion: float | None = None
    stopped_early: bool = False

    def plot(self) -> Any:
        """Loss against learning rate (log scale), the suggestion marked: a matplotlib ``Figure``."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(5.2, 3.4), dpi=90)
        FigureCanvasAgg(figure)
        ax = figure.add_subplot(1, 1, 1)
        ax.plot(self.lrs, self.losses, color="#1f77b4", label="loss (smoothed)")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        if self.suggestion is not None:
            index = min(range(len(self.lrs)), key=lambda i: abs(math.log(self.lrs[i] / self.suggestion)))
            ax.plot([self.suggestion], [self.losses[index]], "o", color="#d62728",
                    label=f"suggestion {self.suggestion:.2g}")
            ax.axvline(self.suggestion, color="#d62728", linewidth=0.8, alpha=0.5)
        ax.legend(loc="best", fontsize=8)
        ax.set_title("learning-rate sweep", fontsize=10)
        figure.subplots_adjust(left=0.14, right=0.97, bottom=0.16, top=0.9)
        return figure

    def png(self) -> bytes:
        """:meth:`plot` as PNG bytes (for a notebook cell or a file)."""
        import io

        buffer = io.BytesIO()
        self.plot().canvas.print_png(buffer)
        return buffer.getvalue()

    def __repr__(self) -> str:
        best = f"{self.suggestion:.3g}" if self.suggestion is not None else "none"
        return f"LRFinderResult(suggestion={best}, steps={len(self.lrs)}, stopped_early={self.stopped_early})"


def smooth(values: list[float]) -> list[float]:
    """A centred moving average over ±5 % of the points (at least ±1); non-finite values are skipped."""
    half = max(1, len(values) // 20)
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - half): i + half + 1] if math.isfinite(v)]
        out.append(sum(window) / len(window) if window else math.nan)
    return out


def suggest(lrs: list[float], losses: list[float]) -> float | None:
    """The steepest-descent rate of a smoothed loss curve (see the module docstring)."""
    finite = [i for i, loss in enumerate(losses) if math.isfinite(loss)]
    if len(finite) < 5:
        return None
    lowest = min(finite, key=lambda i: losses[i])
    start = max(1, len(lrs) // 10)
    usable = set(finite)
    candidates = [i for i in range(start, lowest + 1) if i in usable]
    if len(candidates) < 3:
        return lrs[lowest] / 10  # the loss only rose: the usual "a decade below the minimum"
    logs = [math.log10(lr) for lr in lrs]
    span = max(1, len(lrs) // 20)
    slopes = {}
    for i in candidates:
        lo, hi = max(i - span, 0), min(i + span, len(lrs) - 1)
        if lo in usable and hi in usable:
            slopes[i] = (losses[hi] - losses[lo]) / (logs[hi] - logs[lo])
    return lrs[min(slopes, key=slopes.get)] if slopes else lrs[lowest] / 10


def check_range(min_lr: float, max_lr: float, num_steps: int, early_stop_threshold: float | None) -> None:
    """Refuse sweeps that cannot work, naming the option and the fix."""
    if not isinstance(min_lr, (int, float)) or isinstance(min_lr, bool) or not min_lr > 0:
        raise ConfigurationError(f"find_lr(min_lr={min_lr!r}): the smallest rate must be a positive number, e.g. 1e-7.")
    if not isinstance(max_lr, (int, float)) or isinstance(max_lr, bool) or not max_lr > min_lr:
        raise ConfigurationError(
            f"find_lr(max_lr={max_lr!r}): the largest rate must be greater than min_lr={min_lr!r}, e.g. max_lr=1.0."
        )
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 5:
        raise ConfigurationError(f"find_lr(num_steps={num_steps!r}): sweep at least 5 steps (100 is typical).")
    if early_stop_threshold is not None and not early_stop_threshold > 1:
        raise ConfigurationError(
            f"find_lr(early_stop_threshold={early_stop_threshold!r}): use a factor above 1 (e.g. 4.0), or None to "
            "sweep the whole range."
        )


def run_sweep(trainer: Trainer, model: LabModule, loader: Any, min_lr: float, max_lr: float, num_steps: int,
              early_stop_threshold: float | None) -> LRFinderResult:
    """Sweep and restore (see the module docstring); the trainer supplies device and precision."""
    if not isinstance(model, LabModule):
        raise UserCodeError(f"trainer.find_lr expects a LabModule, got {type(model).__name__}.")
    if not is_overridden(model, "training_step", LabModule):
        raise UserCodeError(f"{type(model).__name__} does not define training_step(self, batch, batch_idx).")
    engine = trainer.engine
    engine.launch()
    saved_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_rng = capture_rng_state()
    saved_device = next((p.device for p in model.parameters()), engine.device)
    saved_mode = model.training
    saved_trainer = getattr(model, "_trainer", None)
    saved_precision = engine.precision.state_dict()
    object.__setattr__(model, "_trainer", None)  # self.log is a no-op: the sweep records nothing
    optimizer, saved_optimizer = None, None
    try:
        model.to(engine.device)
        model.train()
        optimizer, _ = parse_optimizers(model.configure_optimizers(), type(model).__name__)
        # A model may hand out an optimizer it keeps: its state (and rates) must come back too.
        saved_optimizer = copy.deepcopy(optimizer.state_dict())
        return _sweep(trainer, model, optimizer, loader, min_lr, max_lr, num_steps, early_stop_threshold)
    finally:
        if optimizer is not None and saved_optimizer is not None:
            optimizer.load_state_dict(saved_optimizer)
        with torch.no_grad():
            model.load_state_dict(saved_weights)
        model.to(saved_device)
        model.train(saved_mode)
        object.__setattr__(model, "_trainer", saved_trainer)
        engine.precision.load_state_dict(saved_precision)
        restore_rng_state(saved_rng)


def _sweep(trainer: Trainer, model: LabModule, optimizer: torch.optim.Optimizer, loader: Any, min_lr: float,
           max_lr: float, num_steps: int, early_stop_threshold: float | None) -> LRFinderResult:
    precision, device = trainer.engine.precision, trainer.engine.device
    factor = (max_lr / min_lr) ** (1.0 / (num_steps - 1))
    lrs: list[float] = []
    raw: list[float] = []
    average, best = 0.0, math.inf
    stopped = False
    batches = _cycle(loader)
    owner = f"{type(model).__name__}.training_step"
    for step in range(num_steps):
        lr = min_lr * factor**step
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch_idx, batch = next(batches)
        batch = move_to_device(batch, device) if device.type != "cpu" else batch
        with precision.forward_context():
            outputs = model.training_step(batch, batch_idx)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
            raise UserCodeError(f"{owner} must return the scalar loss tensor (or a dict with 'loss') for find_lr.")
        precision.backward(loss)
        precision.optimizer_step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        lrs.append(lr)
        raw.append(value)
        average = EARLY_STOP_SMOOTHING * average + (1 - EARLY_STOP_SMOOTHING) * value
        watched = average / (1 - EARLY_STOP_SMOOTHING ** (step + 1))
        if not math.isfinite(watched):
            stopped = True
            break
        best = min(best, watched)
        if early_stop_threshold is not None and step > 0 and watched > early_stop_threshold * best:
            stopped = True
            break
    losses = smooth(raw)
    return LRFinderResult(lrs, losses, raw, suggest(lrs, losses), stopped_early=stopped)


def _cycle(loader: Any) -> Iterator[tuple[int, Any]]:
    while True:
        empty = True
        for batch_idx, batch in enumerate(loader):
            empty = False
            yield batch_idx, batch
        if empty:
            raise ConfigurationError("find_lr: the training DataLoader yields no batches.")
