/**
 * lightning_lab's JupyterLab plugin: "Export to training script", "Run as batch…" and "Stop run"
 * (command palette and notebook toolbar, see schema/plugin.json) and the "Runs" sidebar.
 */
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';

import { IExportReply, requestJSON } from './api';
import { runBatch } from './batchDialog';
import { RunsPanel, stopRun } from './runsPanel';

const PLUGIN_ID = 'lightning-lab-jupyterlab:plugin';
const CATEGORY = 'Lightning Lab';

export namespace CommandIDs {
  export const exportScript = 'lightning-lab:export';
  export const batch = 'lightning-lab:batch';
  export const stop = 'lightning-lab:stop';
  export const showRuns = 'lightning-lab:show-runs';
}

export const lightningIcon = new LabIcon({
  name: 'lightning-lab:bolt',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">' +
    '<path class="jp-icon3" fill="#616161" d="M13 2 4 14h6l-1 8 9-12h-6l1-8z"/></svg>'
});

/** Save the notebook, export it on the server, open the script and list what it left out. */
async function exportNotebook(app: JupyterFrontEnd, panel: NotebookPanel): Promise<IExportReply | null> {
  await panel.context.ready;
  if (panel.context.model.dirty) {
    await panel.context.save();
  }
  let reply: IExportReply;
  try {
    reply = await requestJSON<IExportReply>('export', 'POST', { path: panel.context.path });
  } catch (error) {
    Notification.error(`Export failed: ${(error as Error).message}`, { autoClose: false });
    return null;
  }
  await app.commands.execute('docmanager:open', { path: reply.script, factory: 'Editor' });
  const dropped = reply.dropped_lines.length
    ? `\nLeft out (${reply.dropped_lines.length}):\n` + reply.dropped_lines.join('\n')
    : '\nNo notebook-only lines were left out.';
  Notification.success(`Exported ${reply.notebook} to ${reply.script}.${dropped}`, { autoClose: 8000 });
  return reply;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Export to training script, run as batch, and the Runs sidebar of lightning_lab.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ILabShell, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    notebooks: INotebookTracker,
    palette: ICommandPalette | null,
    labShell: ILabShell | null,
    settings: ISettingRegistry | null
  ) => {
    const runs = new RunsPanel();
    runs.title.icon = lightningIcon;
    runs.title.label = labShell ? '' : 'Runs';
    app.shell.add(runs, 'left', { rank: 650 });

    const current = (): NotebookPanel | null => notebooks.currentWidget;
    const hasNotebook = () => current() !== null;

    app.commands.addCommand(CommandIDs.exportScript, {
      label: 'Export to training script',
      caption: 'Save the notebook and turn it into a training script (lightning_lab export)',
      icon: args => (args.toolbar ? lightningIcon : undefined),
      className: 'lightning-lab-export-button',
      isEnabled: hasNotebook,
      execute: async () => {
        const panel = current();
        return panel ? exportNotebook(app, panel) : null;
      }
    });
    app.commands.addCommand(CommandIDs.batch, {
      label: args => (args.toolbar ? 'Batch' : 'Run as batch…'),
      caption: 'Execute the notebook over a grid of parameter values (papermill), in parallel',
      className: 'lightning-lab-batch-button',
      isEnabled: hasNotebook,
      execute: async () => {
        const panel = current();
        if (!panel) {
          return null;
        }
        if (panel.context.model.dirty) {
          await panel.context.save();
        }
        const open = (path: string) => void app.commands.execute('docmanager:open', { path });
        const progress = await runBatch(panel.context.path, open);
        void runs.refresh();
        return progress;
      }
    });
    app.commands.addCommand(CommandIDs.stop, {
      label: 'Stop run',
      caption: 'Stop the selected live run in the Runs sidebar (or the only live one) gracefully',
      execute: async args => {
        await runs.refresh();
        const live = runs.runs.filter(run => run.status === 'running');
        const key =
          (args.key as string | undefined) ??
          (live.some(run => run.key === runs.selected) ? runs.selected : live.length === 1 ? live[0].key : null);
        if (!key) {
          Notification.warning(
            live.length ? 'Several runs are live: select one in the Runs sidebar, then Stop run.' : 'No run is live.',
            { autoClose: 5000 }
          );
          return false;
        }
        const stopped = await stopRun(key);
        void runs.refresh();
        return stopped;
      }
    });
    app.commands.addCommand(CommandIDs.showRuns, {
      label: 'Show runs',
      caption: 'Open the Runs sidebar',
      execute: () => app.shell.activateById(runs.id)
    });
    if (palette) {
      for (const command of Object.values(CommandIDs)) {
        palette.addItem({ command, category: CATEGORY });
      }
    }
    if (settings) {
      void settings
        .load(PLUGIN_ID)
        .then(loaded => {
          const apply = () => {
            runs.livePollSeconds = loaded.get('livePollSeconds').composite as number;
          };
          apply();
          loaded.changed.connect(apply);
        })
        .catch(reason => console.error('lightning-lab: cannot load settings', reason));
    }
  }
};

export default plugin;
