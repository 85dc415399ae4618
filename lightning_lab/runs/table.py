"""A plain-text table of runs (the CLI's ``runs`` command and ``%runs`` print it)."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_lab.runs.insight import Insight
from lightning_lab.runs.reader import Run
from lightning_lab.runs.records import parse_time

INSIGHT_HEADER = "where the time goes"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _started(run: Run) -> str:
    when = parse_time(run.start_time)
    return when.astimezone().strftime("%Y-%m-%d %H:%M") if when is not None else "-"


def _value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _insight(run: Run) -> str:
    data = run.info.get("insight")
    if not isinstance(data, dict):
        return "-"
    try:
        return Insight.from_dict(data).compact()
    except (TypeError, ValueError, KeyError):  # written by another version: show what we can
        return "-"


def runs_table(runs: Sequence[Run], max_metrics: int = 4) -> str:
    """Name, id, status, start, duration and up to ``max_metrics`` final metrics per run, aligned in columns.

    Metrics are chosen by how many runs report them (validation metrics first on ties). When any run
    recorded where its time went (``run.json["insight"]``), a last column says what bound it, e.g.
    ``data-bound 63% · 412 samples/s``.
    """
    if not runs:
        return "no runs"
    counts: dict[str, int] = {}
    finals = [run.final for run in runs]
    for final in finals:
        for key in final:
            counts[key] = counts.get(key, 0) + 1
    metrics = sorted(counts, key=lambda k: (-counts[k], not k.startswith("val"), k))[:max_metrics]
    header = ["name", "id", "status", "started", "duration", *metrics]
    rows = [
        [run.name, run.id, run.status, _started(run), _duration(run.duration),
         *(_value(f.get(m, "")) for m in metrics)]
        for run, f in zip(runs, finals, strict=True)
    ]
    insights = [_insight(run) for run in runs]
    if any(text != "-" for text in insights):
        header.append(INSIGHT_HEADER)
        for row, text in zip(rows, insights, strict=True):
            row.append(text)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, *rows]]
    return "\n".join(lines)
