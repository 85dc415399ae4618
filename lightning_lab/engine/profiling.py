"""``Trainer(profile=True)``: torch.profiler over a few batches after warm-up, into the run directory.

The profiler starts when batch ``skip`` ends (so the warm-up batches are not in it) and stops
``active`` batches later, so the trace covers whole batches: waiting for data, the step, the
framework's work. It writes ``<run>/profile/trace.json`` (open it in Perfetto or
``chrome://tracing``) and ``<run>/profile/top_ops.txt``, and puts the top operators by self time
into the run's insight (``run.json["insight"]["profile"]``). torch.profiler is imported only here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_lab.callbacks.base import Callback
from lightning_lab.errors import ConfigurationError

if TYPE_CHECKING:
    from lightning_lab.engine.module import LabModule
    from lightning_lab.engine.trainer import Trainer

PROFILE_DIR = "profile"
TRACE_FILE = "trace.json"
TABLE_FILE = "top_ops.txt"


@dataclass
class ProfileResult:
    """What a profiled fit recorded.

    Attributes:
        trace: The Chrome trace file (``<run>/profile/trace.json``).
        batches: Batches profiled.
        device_time: Whether operator times are device (CUDA) self times rather than CPU ones.
        top_ops: The operators with the most self time, most first: ``{"name", "self_ms",
            "calls", "share"}`` (milliseconds summed over the profiled batches; ``share`` of the
            profiled self time).
        table: torch.profiler's own table of the same operators.
    """

    trace: Path
    batches: int
    device_time: bool
    top_ops: list[dict[str, Any]] = field(default_factory=list)
    table: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``run.json`` (the trace path relative to the run directory)."""
        data = asdict(self)
        data["trace"] = f"{PROFILE_DIR}/{TRACE_FILE}"
        data.pop("table")
        return data

    def text(self, rows: int = 10) -> str:
        """The top operators as aligned text, for scripts and logs."""
        from lightning_lab.runs.insight import Insight

        summary = Insight(phases_ms={}, batch_ms=0.0, batches=0, steps_per_s=0.0, profile=self.to_dict())
        return summary.profile_text(rows).replace(f"{PROFILE_DIR}/{TRACE_FILE}", str(self.trace), 1)


class Profiler(Callback):
    """Runs ``torch.profiler`` over ``active`` training batches once ``skip`` batches have warmed up.

    Added by ``Trainer(profile=True)``; pass one in ``callbacks=`` to choose ``skip``/``active``.

    Args:
        skip: Batches to train before profiling (first-step costs are not representative).
        active: Batches to profile.
        record_shapes: Also record input shapes (larger traces).

    Raises:
        ConfigurationError: ``skip`` is negative or ``active`` is less than 1.
    """

    def __init__(self, skip: int = 5, active: int = 5, record_shapes: bool = False) -> None:
        if not isinstance(skip, int) or skip < 0:
            raise ConfigurationError(f"Profiler(skip={skip!r}): give the number of warm-up batches, 0 or more.")
        if not isinstance(active, int) or active < 1:
            raise ConfigurationError(f"Profiler(active={active!r}): profile at least 1 batch.")
        self.skip = skip
        self.active = active
        self.record_shapes = record_shapes
        self.result: ProfileResult | None = None
        self._profiler: Any = None
        self._seen = 0
        self._profiled = 0

    def on_train_start(self, trainer: Trainer, module: LabModule) -> None:
        self._seen = self._profiled = 0
        self.result = None
        if self.skip == 0:
            self._start(trainer)

    def on_train_batch_end(self, trainer: Trainer, module: LabModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._seen += 1
        if self._profiler is not None:
            self._profiled += 1
            if self._profiled >= self.active:
                self._stop(trainer)
        elif self._seen == self.skip and self.result is None:
            self._start(trainer)

    def on_train_end(self, trainer: Trainer, module: LabModule) -> None:
        if self._profiler is not None:  # a short run: keep what was profiled
            self._stop(trainer)
        if self.result is not None and trainer.insight is not None:
            trainer.insight.profile = self.result.to_dict()  # run.json and every view show it

    def on_exception(self, trainer: Trainer, module: LabModule, exception: BaseException) -> None:
        if self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            self._profiler = None

    def _start(self, trainer: Trainer) -> None:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if trainer.engine.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._profiler = profile(activities=activities, record_shapes=self.record_shapes)
        self._profiler.__enter__()
        # Profiled batches run slower, and starting/stopping is costly: keep them out of the insight.
        trainer._timer.leave_out(self.active + 1)

    def _stop(self, trainer: Trainer) -> None:
        profiler, self._profiler = self._profiler, None
        profiler.__exit__(None, None, None)
        if not trainer.is_global_zero or trainer.run_dir is None:
            return
        folder = trainer.run_dir / PROFILE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        trace = folder / TRACE_FILE
        profiler.export_chrome_trace(str(trace))
        device_time = trainer.engine.device.type == "cuda"
        self.result = ProfileResult(trace=trace, batches=self._profiled, device_time=device_time,
                                    top_ops=top_operators(profiler, device_time))
        sort = "self_cuda_time_total" if device_time else "self_cpu_time_total"
        try:
            self.result.table = profiler.key_averages().table(sort_by=sort, row_limit=15)
        except Exception:  # the table is a convenience; the trace and top_ops are the record
            self.result.table = self.result.text()
        (folder / TABLE_FILE).write_text(self.result.table + "\n")


def top_operators(profiler: Any, device_time: bool, count: int = 15) -> list[dict[str, Any]]:
    """The ``count`` operators with the most self time in a finished ``torch.profiler.profile``."""
    rows = []
    for event in profiler.key_averages():
        if device_time:
            self_us = getattr(event, "self_device_time_total", None)
            if self_us is None:
                self_us = getattr(event, "self_cuda_time_total", 0.0)
        else:
            self_us = event.self_cpu_time_total
        if self_us > 0:
            rows.append((event.key, float(self_us), int(event.count)))
    total = sum(us for _, us, _ in rows) or 1.0
    rows.sort(key=lambda row: -row[1])
    return [{"name": name, "self_ms": round(us / 1e3, 4), "calls": calls, "share": round(us / total, 4)}
            for name, us, calls in rows[:count]]
