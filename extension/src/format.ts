/** Small text helpers of the Runs sidebar and notifications. */

/** `"42 s"`, `"3 min 5 s"`, `"1 h 02 min"`; `"—"` when unknown. */
export function formatDuration(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) {
    return '—';
  }
  const s = Math.round(seconds);
  if (s < 60) {
    return `${s} s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)} min ${s % 60} s`;
  }
  const minutes = Math.floor((s % 3600) / 60);
  return `${Math.floor(s / 3600)} h ${String(minutes).padStart(2, '0')} min`;
}

/** A metric value with 4 significant digits. */
export function formatValue(value: number): string {
  if (Number.isInteger(value)) {
    return String(value);
  }
  return Number(value.toPrecision(4)).toString();
}

/** `val_loss=0.31 · train_loss=0.28`: at most `limit` metrics, losses first. */
export function formatMetrics(final: Record<string, number>, limit = 3): string {
  const names = Object.keys(final).sort((a, b) => {
    const rank = (n: string) => (n.includes('loss') ? 0 : 1);
    return rank(a) - rank(b) || a.localeCompare(b);
  });
  return names
    .slice(0, limit)
    .map(name => `${name}=${formatValue(final[name])}`)
    .join(' · ');
}
