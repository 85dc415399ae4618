/**
 * The server extension's routes (`/lightning-lab/...`), typed. The reply types mirror
 * `lightning_lab/server/*.py` (one place each side; the Python docstrings name the fields).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** `POST /lightning-lab/export`. */
export interface IExportReply {
  script: string;
  notebook: string;
  train_cell: number | null;
  kept_cells: number[];
  dropped_cells: number[];
  dropped_lines: string[];
  options: string[];
  summary: string;
}

/** One run in `GET /lightning-lab/runs`. */
export interface IRunSummary {
  key: string;
  name: string;
  id: string;
  status: 'running' | 'completed' | 'failed' | 'stopped' | string;
  start_time: string | null;
  end_time: string | null;
  duration: number | null;
  final: Record<string, number>;
}

/** `GET /lightning-lab/runs`. */
export interface IRunsReply {
  root: string;
  runs: IRunSummary[];
}

/** One finished point of a sweep. */
export interface IBatchPoint {
  id: string;
  label: string;
  status: string;
  final: Record<string, number>;
  error: string | null;
}

/** `POST /lightning-lab/batch` and `GET /lightning-lab/batch/<id>`. */
export interface IBatchProgress {
  id: string;
  status: 'running' | 'completed' | 'failed';
  notebook: string;
  out: string;
  total: number;
  done: number;
  failed: string[];
  points: IBatchPoint[];
  results_csv: string | null;
  best: { label: string; metric: string; value: number } | null;
  log: string;
  message?: string;
}

/** The body of `POST /lightning-lab/batch`. */
export interface IBatchRequest {
  path: string;
  grid: string[];
  params: string[];
  workers: number;
}

/** An error reply of the server extension, with its message. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

const settings = (): ServerConnection.ISettings => ServerConnection.makeSettings();

/** The URL of a route under `<base url>lightning-lab/`. */
export function routeUrl(path: string): string {
  return URLExt.join(settings().baseUrl, 'lightning-lab', path);
}

/** The route of one run, `runs/<name>/<run id>`, each part URL-encoded. */
export function runRoute(key: string, suffix = ''): string {
  const route = 'runs/' + key.split('/').map(encodeURIComponent).join('/');
  return suffix ? `${route}/${suffix}` : route;
}

async function send(path: string, init: RequestInit): Promise<Response> {
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(routeUrl(path), init, settings());
  } catch (error) {
    throw new ApiError(`cannot reach the Jupyter server: ${String(error)}`, 0);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const data = await response.json();
      message = data.message ?? message;
    } catch {
      // not JSON (e.g. the server extension is not enabled): keep the status line
    }
    if (response.status === 404 && message.startsWith('404')) {
      message += ' (is the lightning_lab server extension enabled? `jupyter server extension list`)';
    }
    throw new ApiError(message, response.status);
  }
  return response;
}

/** The JSON reply of `method path`; throws an `ApiError` with the server's message on a 4xx/5xx. */
export async function requestJSON<T>(path: string, method = 'GET', body?: unknown): Promise<T> {
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
  }
  const response = await send(path, init);
  return (await response.json()) as T;
}

/** The bytes of `GET path` (the curves image) as a Blob. */
export async function requestBlob(path: string): Promise<Blob> {
  const response = await send(path, { method: 'GET' });
  return response.blob();
}
