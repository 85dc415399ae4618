"""Where a run's time goes: the ``sys/...`` metrics records and the ``run.json["insight"]`` summary.

The engine measures each training batch in five phases and writes, every second or so, one
record of ``sys/...`` values to ``metrics.jsonl`` (milliseconds per batch over the last window);
when ``fit`` ends it writes the whole run's :class:`Insight` into ``run.json`` under
``"insight"``. Views (the live widget, ``%runs``, ``lightning-lab runs``, text progress) read
both through this module, so the names below are spelled in one place. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

PHASES = ("data", "transfer", "compute", "optimizer", "framework")
"""The phases of a training batch, in the order they happen.

``data``: blocked waiting for the next batch; ``transfer``: host→device copy; ``compute``: the
forward and backward pass (``training_step`` and ``backward``); ``optimizer``: clipping, the
optimizer step and ``zero_grad``; ``framework``: lightning_lab's own work and callbacks (logging,
checkpoints, progress, hooks)."""

PHASE_LABELS = {"data": "data wait", "transfer": "transfer", "compute": "forward+backward",
                "optimizer": "optimizer", "framework": "framework"}
PHASE_COLORS = {"data": "#d62728", "transfer": "#9467bd", "compute": "#2ca02c", "optimizer": "#17becf",
                "framework": "#ff7f0e"}

SYS_PREFIX = "sys/"
"""Every system metric's name starts with this; curves and the metrics table leave them out."""

SYS_BATCH_MS = "sys/batch_ms"
SYS_STEPS_PER_S = "sys/steps_per_s"
SYS_SAMPLES_PER_S = "sys/samples_per_s"
SYS_PEAK_MEMORY_MB = "sys/peak_memory_mb"
SYS_MEMORY_KIND = "sys/memory_kind"
SYS_ALLREDUCE_MS = "sys/allreduce_ms"
SYS_ADVICE = "sys/advice"


def sys_phase_key(phase: str) -> str:
    """The ``metrics.jsonl`` key of a phase's milliseconds per batch, e.g. ``"sys/data_ms"``."""
    return f"{SYS_PREFIX}{phase}_ms"


def is_sys_metric(name: str) -> bool:
    """Whether ``name`` is a system metric (written by the engine, not logged by the model)."""
    return name.startswith(SYS_PREFIX)


@dataclass
class Insight:
    """Where the time of a run's training batches went, and what to change.

    Attributes:
        phases_ms: Mean milliseconds per training batch in each of :data:`PHASES`.
        batch_ms: Mean wall milliseconds per training batch (validation excluded).
        batches: Training batches measured (the first, warm-up batch of a fit is not).
        steps_per_s: Optimizer steps per second of training-loop time.
        samples_per_s: Samples per second (batches/s × batch size), ``None`` when unknown.
        peak_memory_mb: CUDA allocator peak, or the process's peak RSS on CPU (MiB).
        memory_kind: ``"cuda"`` or ``"rss"``: which peak :attr:`peak_memory_mb` is.
        allreduce_ms: DDP gradient all-reduce time per batch not hidden behind backward, when
            it could be measured without slowing the step (gloo); ``None`` otherwise.
        validation_s: Seconds spent validating during fit (not part of the batch phases).
        advice: Short suggestions, most important first (see :mod:`lightning_lab.engine.advice`).
        device: The device trained on, e.g. ``"cpu"`` or ``"cuda:0"``.
        profile: With ``profile=True``: ``{"trace": "profile/trace.json", "batches", "device_time",
            "top_ops": [{"name", "self_ms", "calls", "share"}, ...]}``.
    """

    phases_ms: dict[str, float]
    batch_ms: float
    batches: int
    steps_per_s: float
    samples_per_s: float | None = None
    peak_memory_mb: float | None = None
    memory_kind: str = "rss"
    allreduce_ms: float | None = None
    validation_s: float = 0.0
    advice: list[str] = field(default_factory=list)
    device: str = "cpu"
    profile: dict[str, Any] | None = None

    @property
    def shares(self) -> dict[str, float]:
        """Each phase's share of the measured batch time (they sum to 1 when anything was measured)."""
        return shares_of(self.phases_ms)

    @property
    def bound(self) -> str | None:
        """The phase taking the largest share (``"data"`` means data-bound), ``None`` if unmeasured."""
        shares = self.shares
        return max(shares, key=shares.get) if shares else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data for ``run.json["insight"]`` (with ``shares`` and ``bound`` added)."""
        data = asdict(self)
        data["shares"] = {k: round(v, 4) for k, v in self.shares.items()}
        data["bound"] = self.bound
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Insight:
        """Read ``run.json["insight"]`` back (unknown keys are ignored, so older readers cope)."""
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("phases_ms", {})
        values.setdefault("batch_ms", 0.0)
        values.setdefault("batches", 0)
        values.setdefault("steps_per_s", 0.0)
        return cls(**values)

    def compact(self) -> str:
        """One line for tables: the bound phase and its share, then throughput.

        Example: ``"data-bound 63% · 412 samples/s"``.
        """
        bound = self.bound
        if bound is None:
            return "-"
        rate = (f"{format_rate(self.samples_per_s)} samples/s" if self.samples_per_s
                else f"{format_rate(self.steps_per_s)} steps/s")
        return f"{bound}-bound {self.shares[bound]:.0%} · {rate}"

    def text(self) -> str:
        """A few lines for scripts and logs: the phase shares, throughput, memory and advice."""
        shares = self.shares
        if not shares:
            return "where the time goes: nothing measured"
        parts = [f"{PHASE_LABELS[p]} {shares[p]:.0%}" for p in PHASES if p in shares and shares[p] >= 0.005]
        lines = [f"where the time goes ({self.batch_ms:.3g} ms/batch over {self.batches} batches): "
                 + ", ".join(parts)]
        rate = f"{format_rate(self.steps_per_s)} steps/s"
        if self.samples_per_s:
            rate += f", {format_rate(self.samples_per_s)} samples/s"
        if self.peak_memory_mb is not None:
            what = "CUDA peak" if self.memory_kind == "cuda" else "peak RSS"
            rate += f", {what} {self.peak_memory_mb:,.0f} MiB"
        if self.allreduce_ms is not None:
            rate += f", all-reduce wait {self.allreduce_ms:.3g} ms/batch"
        lines.append(f"throughput: {rate}")
        lines.extend(f"advice: {tip}" for tip in self.advice)
        if self.profile and self.profile.get("top_ops"):
            lines.append(self.profile_text())
        return "\n".join(lines)

    def profile_text(self, rows: int = 10) -> str:
        """The profiled top operators as aligned text (``""`` without a profile)."""
        if not self.profile:
            return ""
        ops = self.profile.get("top_ops", [])[:rows]
        kind = "CUDA" if self.profile.get("device_time") else "CPU"
        width = max([len(str(op["name"])[:60]) for op in ops] + [8])
        lines = [f"top operators by self {kind} time over {self.profile.get('batches')} profiled batches "
                 f"(trace: {self.profile.get('trace')}):",
                 f"  {'operator':<{width}}  {'self ms':>9}  {'share':>6}  {'calls':>6}"]
        lines += [f"  {str(op['name'])[:60]:<{width}}  {op['self_ms']:>9.3f}  {op['share']:>6.1%}  {op['calls']:>6}"
                  for op in ops]
        return "\n".join(lines)


def shares_of(phases_ms: Mapping[str, float]) -> dict[str, float]:
    """Normalise phase milliseconds to shares of their sum (``{}`` when the sum is 0)."""
    total = sum(max(float(v), 0.0) for v in phases_ms.values())
    if total <= 0:
        return {}
    return {p: max(float(phases_ms[p]), 0.0) / total for p in PHASES if p in phases_ms}


def phases_from_record(record: Mapping[str, Any]) -> dict[str, float]:
    """The phase milliseconds of one ``sys/...`` metrics record (``{}`` if it holds none)."""
    out = {}
    for phase in PHASES:
        value = record.get(sys_phase_key(phase))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[phase] = float(value)
    return out


def format_rate(rate: float | None) -> str:
    """A throughput for people: ``1234`` → ``"1,234"``, ``3.14159`` → ``"3.14"``."""
    if rate is None:
        return "-"
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


__all__ = ["PHASES", "PHASE_COLORS", "PHASE_LABELS", "SYS_PREFIX", "Insight", "format_rate", "is_sys_metric",
           "phases_from_record", "shares_of", "sys_phase_key"]
