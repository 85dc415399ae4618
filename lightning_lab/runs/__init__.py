"""The run directory: the one contract between the training engine and every view.

A run lives in ``<root>/<name>/<run id>/`` with ``run.json``, ``metrics.jsonl``, ``checkpoints/``,
``source/`` and ``logs/``. The engine writes it with :class:`RunWriter`; views read it with
:class:`Run`, :func:`list_runs` and :class:`MetricsTail`. Importing this package stays light:
no torch, and matplotlib only once :func:`compare` is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_lab.runs.reader import Run, find_last_checkpoint, list_runs, load_run
from lightning_lab.runs.records import RUN_STATUSES, MetricsTail, new_run_id, read_metrics, resolve_root
from lightning_lab.runs.writer import RunWriter

if TYPE_CHECKING:
    from lightning_lab.runs.compare import compare

__all__ = [
    "RUN_STATUSES",
    "MetricsTail",
    "Run",
    "RunWriter",
    "compare",
    "find_last_checkpoint",
    "list_runs",
    "load_run",
    "new_run_id",
    "read_metrics",
    "resolve_root",
]


def __getattr__(name: str) -> Any:
    # compare pulls in matplotlib, so it is imported on first use only. Importing the submodule
    # binds the *module* to this package's attribute "compare"; rebind it to the function.
    if name == "compare":
        from lightning_lab.runs.compare import compare

        globals()["compare"] = compare
        return compare
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
