/**
 * The "Runs" sidebar: the runs under the server's runs root with status, duration and final
 * metrics, refreshed every few seconds while a run is live; selecting one shows its curves
 * (a PNG the server renders from the run directory) and, for a live run, a Stop button.
 */
import { Notification } from '@jupyterlab/apputils';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { IRunsReply, IRunSummary, requestBlob, requestJSON, runRoute } from './api';
import { formatDuration, formatMetrics } from './format';

const IDLE_POLL_MS = 15000;

export class RunsPanel extends Widget {
  constructor() {
    super();
    this.id = 'lightning-lab-runs';
    this.addClass('ll-RunsPanel');
    this.title.caption = 'Runs (lightning_lab)';
    const header = document.createElement('div');
    header.className = 'll-RunsPanel-header';
    header.textContent = 'Runs';
    const refresh = document.createElement('button');
    refresh.className = 'jp-Button jp-mod-minimal ll-RunsPanel-refresh';
    refresh.textContent = '⟳';
    refresh.title = 'Refresh the runs';
    refresh.onclick = () => void this.refresh();
    header.appendChild(refresh);
    this._message.className = 'll-RunsPanel-message';
    this._detail.className = 'll-RunDetail';
    this.node.append(header, this._message, this._table, this._detail);
  }

  /** Seconds between refreshes while a run is live. */
  livePollSeconds = 2;

  /** The selected run's key (`<name>/<run id>`), or null. */
  get selected(): string | null {
    return this._selected;
  }

  /** The runs as last read. */
  get runs(): IRunSummary[] {
    return this._runs;
  }

  /** Read the runs again and redraw; the selected run's curves are redrawn when it is live. */
  async refresh(): Promise<void> {
    window.clearTimeout(this._timer);
    try {
      const reply = await requestJSON<IRunsReply>('runs');
      this._runs = reply.runs;
      this._root = reply.root;
      this._error = '';
    } catch (error) {
      this._error = String((error as Error).message ?? error);
    }
    this._render();
    const selected = this._runs.find(r => r.key === this._selected);
    // redraw the curves of a live run, and once more when its status changes (the final curves)
    if (selected && (selected.status === 'running' || this._shown.get(selected.key) !== selected.status)) {
      await this._showCurves(selected);
    }
    this._schedule();
  }

  /** Select a run (shows its curves). */
  async select(key: string): Promise<void> {
    this._selected = key;
    this._shown.delete(key);
    await this.refresh();
  }

  /** Whether a run is live (the panel then refreshes every `livePollSeconds`). */
  get anyLive(): boolean {
    return this._runs.some(run => run.status === 'running');
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.refresh();
  }

  dispose(): void {
    window.clearTimeout(this._timer);
    if (this._imageUrl) {
      URL.revokeObjectURL(this._imageUrl);
    }
    super.dispose();
  }

  private _schedule(): void {
    if (this.isDisposed) {
      return;
    }
    const delay = this.anyLive ? this.livePollSeconds * 1000 : IDLE_POLL_MS;
    // only a visible panel polls; showing it again refreshes at once
    this._timer = window.setTimeout(() => {
      if (this.isVisible) {
        void this.refresh();
      } else {
        this._schedule();
      }
    }, delay);
  }

  private _render(): void {
    this._message.textContent = this._error
      ? `Cannot list the runs: ${this._error}`
      : this._runs.length
        ? `${this._runs.length} run(s) in ${this._root}`
        : `No runs yet in ${this._root}. Run a %%train cell to make one.`;
    this._table.replaceChildren();
    for (const run of this._runs) {
      const row = this._table.insertRow();
      row.className = 'll-RunRow' + (run.key === this._selected ? ' ll-selected' : '');
      row.dataset.key = run.key;
      row.dataset.status = run.status;
      row.onclick = () => void this.select(run.key);
      const name = row.insertCell();
      name.innerHTML = '';
      const label = document.createElement('div');
      label.className = 'll-RunRow-name';
      label.textContent = run.key;
      const metrics = document.createElement('div');
      metrics.className = 'll-RunRow-metrics';
      metrics.textContent = formatMetrics(run.final);
      name.append(label, metrics);
      const status = row.insertCell();
      const badge = document.createElement('span');
      badge.className = `ll-status ll-status-${run.status}`;
      badge.textContent = run.status;
      status.appendChild(badge);
      row.insertCell().textContent = formatDuration(run.duration);
    }
    const selected = this._runs.find(r => r.key === this._selected);
    if (!selected) {
      this._detail.replaceChildren();
    }
  }

  private async _showCurves(run: IRunSummary): Promise<void> {
    const title = document.createElement('div');
    title.className = 'll-RunDetail-title';
    title.textContent = `${run.key} · ${run.status} · ${formatDuration(run.duration)}`;
    const parts: HTMLElement[] = [title];
    if (run.status === 'running') {
      const stop = document.createElement('button');
      stop.className = 'jp-Button jp-mod-styled jp-mod-warn ll-RunDetail-stop';
      stop.textContent = 'Stop run';
      stop.onclick = () => void stopRun(run.key).then(() => this.refresh());
      parts.push(stop);
    }
    try {
      const blob = await requestBlob(runRoute(run.key, 'plot.png'));
      const url = URL.createObjectURL(blob);
      const image = document.createElement('img');
      image.className = 'll-RunDetail-curves';
      image.alt = `curves of ${run.key}`;
      image.src = url;
      parts.push(image);
      if (this._imageUrl) {
        URL.revokeObjectURL(this._imageUrl);
      }
      this._imageUrl = url;
      this._shown.set(run.key, run.status);
    } catch (error) {
      const message = document.createElement('div');
      message.textContent = `No curves: ${(error as Error).message}`;
      parts.push(message);
    }
    if (this._selected === run.key) {
      this._detail.replaceChildren(...parts);
    }
  }

  private _runs: IRunSummary[] = [];
  private _root = '';
  private _error = '';
  private _selected: string | null = null;
  private _shown = new Map<string, string>(); // run key -> the status its curves were drawn at
  private _timer = 0;
  private _imageUrl = '';
  private _message = document.createElement('div');
  private _table = document.createElement('table');
  private _detail = document.createElement('div');
}

/** Ask the run `key` to stop (its STOP file); a notification says what happened. */
export async function stopRun(key: string): Promise<boolean> {
  try {
    await requestJSON(runRoute(key, 'stop'), 'POST', {});
    Notification.info(`Stop requested for ${key}; it stops at its next step.`, { autoClose: 5000 });
    return true;
  } catch (error) {
    Notification.error(`Cannot stop ${key}: ${(error as Error).message}`, { autoClose: false });
    return false;
  }
}
