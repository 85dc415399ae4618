/**
 * "Run as batch…": a dialog for the grid values and workers, then a notification that follows the
 * sweep's progress (`GET /lightning-lab/batch/<id>`) until it ends.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IBatchProgress, IBatchRequest, requestJSON } from './api';
import { formatValue } from './format';

const POLL_MS = 2000;

/** The dialog's body: grid lines, fixed parameters, workers. */
export class BatchForm extends Widget {
  constructor(private readonly _path: string) {
    super();
    const path = _path;
    this.addClass('ll-BatchDialog');
    const intro = document.createElement('div');
    intro.textContent =
      `Execute ${path} once per combination of the grid values (papermill, into its ` +
      '"parameters" cell), several at a time.';
    this.node.append(
      intro,
      field('Grid: one KEY=V1,V2,… per line', this._grid),
      field('Fixed parameters: one KEY=VALUE per line', this._params),
      field('Workers (points run at once)', this._workers)
    );
    this._grid.rows = 3;
    this._grid.placeholder = 'lr=0.001,0.003\nhidden=16,32';
    this._grid.name = 'grid';
    this._params.rows = 2;
    this._params.placeholder = 'max_epochs=1';
    this._params.name = 'params';
    this._workers.type = 'number';
    this._workers.min = '1';
    this._workers.value = '2';
    this._workers.name = 'workers';
  }

  /** The request the form describes. */
  getValue(): IBatchRequest {
    return {
      path: this._path,
      grid: lines(this._grid.value),
      params: lines(this._params.value),
      workers: Number(this._workers.value)
    };
  }

  private _grid = document.createElement('textarea');
  private _params = document.createElement('textarea');
  private _workers = document.createElement('input');
}

function field(text: string, input: HTMLElement): HTMLLabelElement {
  const label = document.createElement('label');
  label.append(text, input);
  return label;
}

function lines(text: string): string[] {
  return text
    .split('\n')
    .map(line => line.trim())
    .filter(line => line.length > 0);
}

/** Ask for the grid, start the sweep and follow its progress in a notification; `open` opens a file
 * (the results table, or the sweep's log when it failed) from the final notification. */
export async function runBatch(path: string, open: (path: string) => void): Promise<IBatchProgress | null> {
  const form = new BatchForm(path);
  const result = await showDialog({
    title: 'Run as batch…',
    body: form,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Run batch' })],
    focusNodeSelector: 'textarea'
  });
  if (!result.button.accept) {
    return null;
  }
  let progress: IBatchProgress;
  try {
    progress = await requestJSON<IBatchProgress>('batch', 'POST', form.getValue());
  } catch (error) {
    Notification.error(`Batch not started: ${(error as Error).message}`, { autoClose: false });
    return null;
  }
  const id = Notification.emit(describe(progress), 'in-progress', { autoClose: false });
  while (progress.status === 'running') {
    await new Promise(resolve => window.setTimeout(resolve, POLL_MS));
    try {
      progress = await requestJSON<IBatchProgress>(`batch/${encodeURIComponent(progress.id)}`);
    } catch (error) {
      Notification.update({ id, message: `Batch ${progress.id}: ${(error as Error).message}`, type: 'error' });
      return progress;
    }
    Notification.update({ id, message: describe(progress), type: 'in-progress' });
  }
  const file = progress.results_csv ?? progress.log;
  Notification.update({
    id,
    message: describe(progress),
    type: progress.status === 'completed' ? 'success' : 'error',
    autoClose: false,
    actions: [{ label: `Open ${file.split('/').pop()}`, callback: () => open(file) }]
  });
  return progress;
}

/**
 * One short line (notifications show about 140 characters):
 * `Batch nb.ipynb: 2/4 done, 1 failed (running); best lr=0.003: val_loss=0.31`.
 */
export function describe(progress: IBatchProgress): string {
  const failed = progress.failed.length ? `, ${progress.failed.length} failed` : '';
  let text = `Batch ${progress.notebook}: ${progress.done}/${progress.total} done${failed} (${progress.status})`;
  if (progress.best) {
    text += `; best ${progress.best.label}: ${progress.best.metric}=${formatValue(progress.best.value)}`;
  }
  if (progress.status === 'failed' && progress.message && !progress.done) {
    text += ` — ${progress.message.trim().split('\n').pop()}`;
  }
  return text;
}
