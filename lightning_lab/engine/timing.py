"""Per-batch timing of the training loop: where each batch's time goes, at negligible cost.

The trainer reads ``time.perf_counter`` at the phase boundaries of every training batch (five
reads) and hands them to :meth:`StepTimer.add`, which only adds floats. About once a second it
turns the window into a ``sys/...`` record for ``metrics.jsonl``; at the end of ``fit`` it makes
the run's :class:`~lightning_lab.runs.insight.Insight`.

On CUDA the host clock only sees kernel launches, so every ``sample_every``-th batch also
records CUDA events at the same boundaries; they are read when they have completed (``query``),
at emission time — never with a synchronize in the loop. The data wait and the framework's
own work stay host times: that is where the host blocks.
"""

from __future__ import annotations

import resource
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lightning_lab.engine.advice import Setup, advise
from lightning_lab.runs.insight import (
    PHASES,
    SYS_ADVICE,
    SYS_ALLREDUCE_MS,
    SYS_BATCH_MS,
    SYS_MEMORY_KIND,
    SYS_PEAK_MEMORY_MB,
    SYS_SAMPLES_PER_S,
    SYS_STEPS_PER_S,
    Insight,
    shares_of,
    sys_phase_key,
)

if TYPE_CHECKING:
    import torch

    from lightning_lab.engine.trainer import Trainer

EMIT_INTERVAL_S = 1.0
"""Seconds between two ``sys/...`` records (the first comes one interval after training starts)."""
CUDA_SAMPLE_EVERY = 10
"""On CUDA, one batch in this many is also timed with CUDA events."""

_GPU_PHASES = ("transfer", "compute", "optimizer")


class _Totals:
    """Sums of seconds per phase over some batches (a window, or the whole fit)."""

    __slots__ = ("batches", "compute", "data", "optimizer", "steps", "transfer", "wall")

    def __init__(self) -> None:
        self.data = self.transfer = self.compute = self.optimizer = self.wall = 0.0
        self.batches = 0
        self.steps = 0

    @property
    def framework(self) -> float:
        """The rest of the wall time: the framework's own work (derived, so the hot path adds less)."""
        return max(self.wall - self.data - self.transfer - self.compute - self.optimizer, 0.0)

    def merge(self, other: _Totals) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def phases_ms(self) -> dict[str, float]:
        n = max(self.batches, 1)
        return {p: getattr(self, p) / n * 1e3 for p in PHASES}


class CudaEvents:
    """Times one batch in ``every`` on the GPU with CUDA events, read lazily.

    Marks: 0 before the host→device copy, 1 after it, 2 after backward, 3 after the optimizer.
    """

    def __init__(self, device: torch.device, every: int = CUDA_SAMPLE_EVERY) -> None:
        import torch

        self._torch = torch
        self.device = device
        self.every = every
        self._count = 0
        self._events: list[Any] | None = None
        self._pending: deque[list[Any]] = deque()
        self.seconds = {p: 0.0 for p in _GPU_PHASES}
        self.samples = 0

    def mark(self, index: int) -> None:
        """Record event ``index`` of this batch when the batch is sampled."""
        if index == 0:
            self._count += 1
            if self._count % self.every:
                self._events = None
                return
            self._events = [self._torch.cuda.Event(enable_timing=True) for _ in range(4)]
        if self._events is not None:
            self._events[index].record()
            if index == 3:
                self._pending.append(self._events)
                self._events = None

    def collect(self, wait: bool = False) -> None:
        """Add the GPU times of sampled batches whose events have completed (all with ``wait``)."""
        while self._pending:
            events = self._pending[0]
            if wait:
                events[3].synchronize()
            elif not events[3].query():
                return
            self._pending.popleft()
            for phase, (a, b) in zip(_GPU_PHASES, ((0, 1), (1, 2), (2, 3)), strict=True):
                self.seconds[phase] += events[a].elapsed_time(events[b]) / 1e3
            self.samples += 1

    def phases_ms(self) -> dict[str, float]:
        """Mean GPU milliseconds per sampled batch in each GPU phase."""
        n = max(self.samples, 1)
        return {p: s / n * 1e3 for p, s in self.seconds.items()}


class StepTimer:
    """Accumulates the trainer's per-batch clock readings; see the module docstring.

    The trainer sets :attr:`c0`, :attr:`c1` and :attr:`o1` (before forward, after backward,
    after the optimizer) and calls :meth:`add` once per batch with the other boundaries.

    Args:
        setup: What the advice rules need to know about the run.
        emit: Receives each ``sys/...`` record (a dict of values) to write.
        batch_size: Returns the current batch's size (called once per record, not per batch).
        device: The training device; CUDA devices get sampled CUDA events and allocator peaks.
        interval: Seconds between records (default :data:`EMIT_INTERVAL_S`).
        clock: The host clock (a test seam).
    """

    def __init__(self, setup: Setup, emit: Callable[[dict[str, Any]], None] | None = None,
                 batch_size: Callable[[], int | None] | None = None, device: torch.device | None = None,
                 interval: float | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.setup = setup
        self.emit = emit
        self.batch_size = batch_size or (lambda: None)
        self.device = device
        self.interval = EMIT_INTERVAL_S if interval is None else interval
        self.clock = clock
        self.cuda = device is not None and device.type == "cuda"
        self.gpu: CudaEvents | None = CudaEvents(device) if self.cuda else None
        self.transfers = self.cuda  # on CPU there is no copy to time
        self.c0 = self.c1 = self.o1 = 0.0
        self.paused = 0.0  # validation inside the current batch, left out of its phases
        self.validation = 0.0
        self.total = _Totals()
        self.window = _Totals()
        self._window_start = 0.0
        self._next_emit = 0.0
        self._last_end: float | None = None
        self._skip = 1  # the first batch pays for lazy initialisation: leave it out
        self._samples_per_batch: int | None = None
        self.allreduce_s: float | None = None  # added to under DDP (time_allreduce) when it can be measured
        self.grads_ready_at: float | None = None  # when the last gradient of this backward was ready (DDP)
        self._allreduce_total: float | None = None
        self.last_record: dict[str, Any] | None = None

    # -- per batch (hot path) ------------------------------------------------------------------

    def epoch_start(self) -> float:
        """The clock now; time since the previous batch ended (epoch end and start) is framework work."""
        now = self.clock()
        if self._last_end is not None:
            self.window.wall += now - self._last_end
        else:
            self._window_start = now
            self._next_emit = now + self.interval
        return now

    def add(self, start: float, fetched: float, moved: float, end: float, stepped: bool) -> bool:
        """Account one batch; returns whether a ``sys/...`` record is due (call :meth:`record`)."""
        self._last_end = end
        wall = end - start
        if self.paused:  # validation ran inside this batch: not one of its phases
            wall -= self.paused
            self.validation += self.paused
            self.paused = 0.0
        if self._skip:  # warm-up, or batches slowed down on purpose (profiled)
            self._skip -= 1
            return False
        w = self.window
        w.data += fetched - start
        if moved != fetched:
            w.transfer += moved - fetched
        w.compute += self.c1 - self.c0
        w.optimizer += self.o1 - self.c1
        w.wall += wall
        w.batches += 1
        w.steps += stepped
        return end >= self._next_emit

    def backward_done(self, now: float, reduced: bool) -> None:
        """Backward returned at ``now``; when DDP ``reduced`` the gradients, count the wait since the last was ready."""
        if reduced and self.allreduce_s is not None:
            self.allreduce_s += max(now - self.grads_ready_at, 0.0)
        self.grads_ready_at = None

    def leave_out(self, batches: int) -> None:
        """Leave the current batch and the next ``batches - 1`` out of the measurements (profiling)."""
        self._skip = max(self._skip, batches)

    # -- records -------------------------------------------------------------------------------

    def record(self) -> float:
        """Emit the ``sys/...`` values of the window since the last record and start a new window.

        Returns:
            The clock after emitting: the next batch starts then (emitting counts as framework work).
        """
        now = self.clock()
        window, self.window = self.window, _Totals()
        self.total.merge(window)
        seconds = max(now - self._window_start, 1e-9)
        self._window_start = now
        self._next_emit = now + self.interval
        phases = self._phases_ms(window, wait=False)
        values: dict[str, Any] = {sys_phase_key(p): round(v, 4) for p, v in phases.items()}
        values[SYS_BATCH_MS] = round(window.wall / max(window.batches, 1) * 1e3, 4)
        values[SYS_STEPS_PER_S] = round(window.steps / seconds, 3)
        size = self._batch_size()
        if size:
            values[SYS_SAMPLES_PER_S] = round(window.batches * size / seconds, 2)
        memory = self.peak_memory_mb()
        if memory is not None:
            values[SYS_PEAK_MEMORY_MB] = round(memory, 1)
            values[SYS_MEMORY_KIND] = "cuda" if self.cuda else "rss"
        allreduce = self._allreduce_share(window)
        if self.allreduce_s is not None:
            values[SYS_ALLREDUCE_MS] = round(self.allreduce_s / max(window.batches, 1) * 1e3, 4)
            self._allreduce_total = (self._allreduce_total or 0.0) + self.allreduce_s
            self.allreduce_s = 0.0
        values[SYS_ADVICE] = advise(shares_of(phases), self.setup, allreduce)
        self.last_record = values
        if self.emit is not None:
            self.emit(values)
        end = self.clock()
        self.window.wall += end - now
        return end

    def summary(self) -> Insight:
        """The whole fit's :class:`Insight` (waits for outstanding CUDA events: call it once, at the end)."""
        if self._last_end is not None:  # the last epoch's end (its checkpoint) is framework work
            self.window.wall += self.clock() - self._last_end
            self._last_end = None
        self.total.merge(self.window)
        self.window = _Totals()
        if self.allreduce_s is not None:
            self._allreduce_total = (self._allreduce_total or 0.0) + self.allreduce_s
            self.allreduce_s = 0.0
        total = self.total
        phases = self._phases_ms(total, wait=True)
        seconds = total.wall
        steps_per_s = total.steps / seconds if seconds > 0 else 0.0
        size = self._batch_size()
        samples = total.batches * size / seconds if size and seconds > 0 else None
        insight = Insight(
            phases_ms={p: round(v, 4) for p, v in phases.items()},
            batch_ms=round(total.wall / max(total.batches, 1) * 1e3, 4),
            batches=total.batches,
            steps_per_s=round(steps_per_s, 3),
            samples_per_s=round(samples, 2) if samples is not None else None,
            peak_memory_mb=_round(self.peak_memory_mb()),
            memory_kind="cuda" if self.cuda else "rss",
            validation_s=round(self.validation, 4),
            device=str(self.device) if self.device is not None else "cpu",
        )
        allreduce_share = None
        if self._allreduce_total is not None and total.batches:
            insight.allreduce_ms = round(self._allreduce_total / total.batches * 1e3, 4)
            allreduce_share = self._allreduce_total / seconds if seconds > 0 else None
        insight.advice = advise(insight.shares, self.setup, allreduce_share)
        return insight

    # -- helpers -------------------------------------------------------------------------------

    def _phases_ms(self, totals: _Totals, wait: bool) -> dict[str, float]:
        phases = totals.phases_ms()
        if self.gpu is not None:
            self.gpu.collect(wait=wait)
            if self.gpu.samples:
                phases.update(self.gpu.phases_ms())  # device time, not the host's launch time
        return phases

    def _allreduce_share(self, window: _Totals) -> float | None:
        if self.allreduce_s is None or window.wall <= 0:
            return None
        return self.allreduce_s / window.wall

    def _batch_size(self) -> int | None:
        if self._samples_per_batch is None:
            try:
                self._samples_per_batch = self.batch_size()
            except Exception:  # an odd batch type: throughput in steps/s only
                self._samples_per_batch = 0
        return self._samples_per_batch or None

    def peak_memory_mb(self) -> float | None:
        """CUDA allocator peak on CUDA; the process's peak resident set size on CPU (MiB)."""
        if self.cuda:
            import torch

            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        except (OSError, ValueError):
            return None
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def setup_of(trainer: Trainer, loader: Any) -> Setup:
    """What the advice rules need, read from a trainer about to fit and its training loader."""
    from torch.utils.data import DataLoader

    from lightning_lab.callbacks import ModelCheckpoint
    from lightning_lab.engine.data import PreparedLoader

    engine = trainer.engine
    source = loader.loader if isinstance(loader, PreparedLoader) else loader
    workers = pin = persistent = None
    if isinstance(source, DataLoader):
        workers, pin, persistent = source.num_workers, source.pin_memory, source.persistent_workers
    every = next((c.every_n_train_steps for c in trainer.callbacks
                  if isinstance(c, ModelCheckpoint) and c.every_n_train_steps), None)
    return Setup(
        device_type=engine.device.type, precision=engine.precision.name, bf16_supported=_bf16(engine.device),
        num_workers=workers, pin_memory=pin, persistent_workers=persistent,
        log_every_n_steps=trainer.log_every_n_steps, checkpoint_every_n_steps=every,
        world_size=engine.world_size, accumulate_grad_batches=trainer.accumulate_grad_batches,
    )


def _bf16(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported())
    except Exception:  # an old driver or a CUDA build without the query
        return False


def time_allreduce(ddp: Any, timer: StepTimer) -> list[Any]:
    """Measure DDP's exposed gradient all-reduce wait into ``timer`` (gloo only).

    Returns the hooks' handles (none when it cannot measure): remove them when the fit ends, or a
    later fit of the same model would still run this one's hooks.

    DDP overlaps communication with backward: buckets are reduced as their gradients become
    ready, and backward returns once the last bucket's reduction is done. So the time from the
    last gradient becoming ready to backward's return is the wait the step cannot hide. A hook
    after each parameter's gradient accumulation records when that was (the trainer adds the
    rest after backward, see :meth:`StepTimer.backward_done`). No DDP communication hook is
    registered: a Python one would run on gloo's threads, and a gloo thread still releasing it
    when the interpreter shuts down aborts the process. With NCCL a CUDA stream is involved and
    nothing cheap can be read: CUDA runs report no all-reduce wait rather than a wrong one.
    """
    if ddp.device_ids:  # NCCL on CUDA (see above)
        return []
    clock = timer.clock

    def ready(_param: Any) -> None:
        timer.grads_ready_at = clock()

    handles = [param.register_post_accumulate_grad_hook(ready) for param in ddp.parameters() if param.requires_grad]
    timer.allreduce_s = 0.0
    return handles
