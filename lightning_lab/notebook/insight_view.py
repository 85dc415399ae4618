"""The notebook's "where the time goes" strip: a stacked bar of the batch phases, throughput, advice.

Plain HTML (no JavaScript, no images), so it renders in the live widget, in a saved notebook's
output, on GitHub and in nbviewer alike. Fed from a ``sys/...`` metrics record while training
and from the run's :class:`~lightning_lab.runs.insight.Insight` at the end.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_lab.runs.insight import (
    PHASE_COLORS,
    PHASE_LABELS,
    PHASES,
    SYS_ADVICE,
    SYS_BATCH_MS,
    SYS_MEMORY_KIND,
    SYS_PEAK_MEMORY_MB,
    SYS_SAMPLES_PER_S,
    SYS_STEPS_PER_S,
    Insight,
    format_rate,
    phases_from_record,
    shares_of,
)

_MIN_LABEL_SHARE = 0.08  # narrower segments carry no text (the legend names them)


def insight_html(phases_ms: Mapping[str, float], *, batch_ms: float | None = None, steps_per_s: float | None = None,
                 samples_per_s: float | None = None, peak_memory_mb: float | None = None, memory_kind: str = "rss",
                 advice: Sequence[str] = (), title: str = "where the time goes") -> str:
    """The strip as an HTML fragment (``""`` when nothing was measured yet).

    Args:
        phases_ms: Milliseconds per batch in each phase (see :data:`~lightning_lab.runs.insight.PHASES`).
        batch_ms: Wall milliseconds per batch, shown beside the title.
        steps_per_s / samples_per_s: Throughput.
        peak_memory_mb / memory_kind: Peak memory and which peak it is (``"cuda"`` or ``"rss"``).
        advice: Short tips, shown as a list under the bar.
        title: The strip's heading.
    """
    shares = shares_of(phases_ms)
    if not shares:
        return ""
    segments = []
    for phase in PHASES:
        share = shares.get(phase, 0.0)
        if share <= 0.0:
            continue
        label = f"{PHASE_LABELS[phase]} {share:.0%}" if share >= _MIN_LABEL_SHARE else ""
        segments.append(
            f'<div title="{html.escape(PHASE_LABELS[phase])}: {share:.1%}" style="width:{share * 100:.2f}%;'
            f"background:{PHASE_COLORS[phase]};color:white;overflow:hidden;white-space:nowrap;"
            f'text-overflow:clip;padding-left:3px;box-sizing:border-box">{html.escape(label)}</div>'
        )
    bar = ('<div style="display:flex;width:420px;max-width:100%;height:18px;border-radius:3px;overflow:hidden;'
           f'font-size:11px;line-height:18px;background:#eee">{"".join(segments)}</div>')
    legend = " &middot; ".join(
        f'<span style="color:{PHASE_COLORS[p]}">&#9632;</span> {html.escape(PHASE_LABELS[p])} {shares[p]:.0%}'
        for p in PHASES if shares.get(p, 0.0) >= 0.005
    )
    facts = []
    if batch_ms:
        facts.append(f"{batch_ms:.3g} ms/batch")
    if steps_per_s:
        facts.append(f"{format_rate(steps_per_s)} steps/s")
    if samples_per_s:
        facts.append(f"{format_rate(samples_per_s)} samples/s")
    if peak_memory_mb is not None:
        facts.append(f"{'GPU peak' if memory_kind == 'cuda' else 'peak RSS'} {peak_memory_mb:,.0f} MiB")
    head = f"<b>{html.escape(title)}</b>" + (f" &middot; {' &middot; '.join(facts)}" if facts else "")
    tips = "".join(f"<li>{html.escape(tip)}</li>" for tip in advice)
    tips_html = f'<ul style="margin:2px 0 0 0;padding-left:18px;color:#a04000">{tips}</ul>' if tips else ""
    return (f'<div class="lightning-lab-insight" style="font-size:12px;line-height:1.5;margin:4px 0">{head}'
            f'{bar}<div style="font-size:11px;color:#555">{legend}</div>{tips_html}</div>')


def html_from_record(record: Mapping[str, Any]) -> str:
    """The strip for one live ``sys/...`` metrics record (the last second of training)."""
    advice = record.get(SYS_ADVICE)
    return insight_html(
        phases_from_record(record), batch_ms=_number(record.get(SYS_BATCH_MS)),
        steps_per_s=_number(record.get(SYS_STEPS_PER_S)), samples_per_s=_number(record.get(SYS_SAMPLES_PER_S)),
        peak_memory_mb=_number(record.get(SYS_PEAK_MEMORY_MB)),
        memory_kind=str(record.get(SYS_MEMORY_KIND, "rss")),
        advice=[str(a) for a in advice] if isinstance(advice, list) else (),
    )


def html_from_insight(insight: Insight) -> str:
    """The strip for a whole run (``run.json["insight"]``)."""
    return insight_html(insight.phases_ms, batch_ms=insight.batch_ms, steps_per_s=insight.steps_per_s,
                        samples_per_s=insight.samples_per_s, peak_memory_mb=insight.peak_memory_mb,
                        memory_kind=insight.memory_kind, advice=insight.advice,
                        title=f"where the time went ({insight.batches} batches)")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def profile_html(profile: Mapping[str, Any], rows: int = 10) -> str:
    """The profiled top operators (``Insight.profile``) as an HTML table."""
    kind = "CUDA" if profile.get("device_time") else "CPU"
    body = "".join(
        f"<tr><td style='text-align:left'>{html.escape(str(op['name']))}</td><td>{op['self_ms']:.3f}</td>"
        f"<td>{op['share']:.1%}</td><td>{op['calls']}</td></tr>"
        for op in profile.get("top_ops", [])[:rows]
    )
    return (f"<div class='lightning-lab-profile' style='font-size:12px'><b>top operators by self {kind} time</b> "
            f"over {profile.get('batches')} profiled batches &middot; Chrome trace: "
            f"<code>{html.escape(str(profile.get('trace')))}</code> in the run directory"
            "<table style='font-family:monospace;font-size:12px'><tr><th style='text-align:left'>operator</th>"
            f"<th>self ms</th><th>share</th><th>calls</th></tr>{body}</table></div>")
