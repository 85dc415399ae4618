"""The JupyterLab plugin in a real JupyterLab, in headless Chromium driven by Playwright.

A user's path through it: open a notebook, click the toolbar's "Export to training script"
button and see the script open in an editor tab (and the notification listing what it left
out); run the ``%%train`` cell, see the live widget's curves image, open the "Runs" sidebar and
see the run there, live then completed, with its curves when selected. The commands are in the
palette. Screenshots are kept (``$LIGHTNING_LAB_ARTIFACTS``, else ``test-artifacts/``).

Needs Debian's chromium and the ``playwright`` package (``scripts/install_browser.sh``); skipped without them.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
from browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TOKEN,
    LabServer,
    browser_missing,
    keep_artifacts,
    wait_for,
)

if browser_missing():
    pytest.skip(browser_missing(), allow_module_level=True)
from playwright.sync_api import Error as PlaywrightError  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402

RUN_NAME = "plugin"
SETUP = """\
%load_ext lightning_lab
!echo "a shell line the script leaves out"
import time, torch, torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from lightning_lab import LabModule

g = torch.Generator().manual_seed(0)
X = torch.randn(256, 8, generator=g)
Y = (X[:, 0] > 0).long()

class Net(LabModule):
    def __init__(self, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(8, 2)

    def training_step(self, batch, batch_idx):
        time.sleep(0.03)  # a few seconds of training: the live views have something to show
        x, y = batch
        loss = F.cross_entropy(self.layer(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

train_loader = DataLoader(TensorDataset(X, Y), batch_size=16, shuffle=True)
val_loader = DataLoader(TensorDataset(X, Y), batch_size=64)
"""
TRAIN = f"%%train --max-epochs 8 --name {RUN_NAME}\nmodel = Net()"
LONG_TRAIN = "%%train --max-epochs 100 --name stoppable\nmodel = Net()"
SWEEP_TRAIN = "%%train --max-epochs 1 --name sweep\nmodel = Net(lr)"


@pytest.fixture
def lab(tmp_path):
    server = LabServer(tmp_path)  # runs root: the plugin's default, <server root>/lab_runs
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def write_notebook(path: Path, *cells: str, parameters: str | None = None) -> Path:
    code = [nbformat.v4.new_code_cell(source) for source in cells]
    if parameters is not None:
        tagged = nbformat.v4.new_code_cell(parameters)
        tagged.metadata["tags"] = ["parameters"]
        code.insert(0, tagged)
    notebook = nbformat.v4.new_notebook(cells=code)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(notebook, path)
    return path


@contextmanager
def browser_page(lab: LabServer, shots: Path, prefix: str) -> Iterator[tuple[Page, Callable[[str], str]]]:
    """A headless Chromium page, and ``fail(message)`` that adds the console and server log to a message;
    the screenshots saved under ``shots`` are kept as artifacts."""
    console: list[str] = []

    def fail(message: str) -> str:
        return message + "\n--- browser console (tail) ---\n" + "\n".join(console[-20:]) + lab.log_tail()

    shots.mkdir(exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
                page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
                page.set_default_timeout(30_000)
                yield page, fail
            finally:
                browser.close()
    finally:
        keep_artifacts(shots, prefix)


def open_notebook(page: Page, lab: LabServer, name: str, shots: Path, fail: Callable[[str], str]) -> None:
    """Open ``name`` in JupyterLab and wait for its kernel to be idle."""
    page.goto(f"{lab.url}lab/tree/{name}?token={TOKEN}")
    try:
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=45_000)
        wait_for("the notebook's kernel to start", lab.idle_kernel, 45, lab, interval=0.25)
        page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=15_000)
    except PlaywrightError as err:
        page.screenshot(path=shots / "lab.png")
        raise AssertionError(fail(f"the notebook or its kernel did not get ready: {err}")) from None


def run_all_cells(page: Page) -> None:
    """Click into the first cell and press Shift+Enter once per cell, as a user would."""
    cells = page.locator(".jp-Notebook .jp-Cell")
    count = cells.count()
    cells.first.locator(".jp-InputArea-editor").click()
    for _ in range(count):
        page.keyboard.press("Shift+Enter")


def open_runs_sidebar(page: Page) -> None:
    """Click the Runs sidebar's tab (the ⚡ on the left)."""
    page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="lightning-lab-runs"]').click()


def test_export_button_and_runs_sidebar(lab, tmp_path):
    write_notebook(tmp_path / "plugin.ipynb", SETUP, TRAIN)
    shots = tmp_path / "shots"
    with browser_page(lab, shots, "lab-plugin-") as (page, fail):
        _drive(page, lab, tmp_path, shots, fail)


def _drive(page: Page, lab: LabServer, tmp_path: Path, shots: Path, fail) -> None:
    open_notebook(page, lab, "plugin.ipynb", shots, fail)

    # The notebook toolbar has the plugin's buttons (from the settings schema's jupyter.lab.toolbars).
    toolbar = page.locator(".jp-NotebookPanel-toolbar")
    export = toolbar.locator('[data-command="lightning-lab:export"]')
    try:
        export.wait_for(state="visible", timeout=15_000)
        toolbar.locator('[data-command="lightning-lab:batch"]').wait_for(state="visible", timeout=5_000)
    except PlaywrightError as err:
        page.screenshot(path=shots / "lab.png")
        raise AssertionError(fail(f"no lightning_lab buttons in the notebook toolbar: {err}")) from None

    # Export: one click saves, exports, opens the script in an editor tab and lists what it left out.
    export.click()
    script = tmp_path / "plugin.py"
    try:
        tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="plugin.py")
        tab.wait_for(state="visible", timeout=20_000)
        editor = page.locator(".jp-FileEditor .cm-content").last
        editor.wait_for(state="visible", timeout=10_000)
        page.locator(".jp-FileEditor .cm-content", has_text="def main(").last.wait_for(timeout=10_000)
        toast = page.locator(".Toastify__toast", has_text="Exported plugin.ipynb to plugin.py")
        toast.wait_for(state="visible", timeout=10_000)
    except PlaywrightError as err:
        page.screenshot(path=shots / "export.png")
        raise AssertionError(fail(f"the exported script did not open in an editor tab: {err}")) from None
    assert script.is_file() and "def main(" in script.read_text()
    page.wait_for_timeout(600)  # the notification slides in
    toast_text = toast.inner_text()
    assert "Left out" in toast_text and "echo" in toast_text, toast_text
    page.screenshot(path=shots / "export.png")

    # The commands are in the palette.
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("Lightning Lab")
    items = page.locator(".lm-CommandPalette-item")
    try:
        items.filter(has_text="Run as batch").first.wait_for(timeout=10_000)
    except PlaywrightError as err:
        raise AssertionError(fail(f"the palette has no lightning_lab commands: {err}")) from None
    labels = " | ".join(items.all_inner_texts())
    for label in ("Export to training script", "Run as batch", "Stop run", "Show runs"):
        assert label in labels, labels
    page.keyboard.press("Escape")

    # Back to the notebook: run both cells; the live widget's curves image appears.
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="plugin.ipynb").click()
    run_all_cells(page)
    cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
    image = cell.locator("img.widget-image")
    try:
        image.wait_for(state="visible", timeout=90_000)
    except PlaywrightError as err:
        page.screenshot(path=shots / "lab.png")
        raise AssertionError(fail(f"the live widget's curves image did not appear: {err}")) from None
    size = image.evaluate("el => [el.naturalWidth, el.naturalHeight]")
    assert min(size) > 100, f"the curves image is {size[0]}x{size[1]} px"
    cell.screenshot(path=shots / "widget.png")

    # The Runs sidebar lists the run (while it is live, then completed) and shows its curves when clicked.
    open_runs_sidebar(page)
    row = page.locator(f'#lightning-lab-runs .ll-RunRow[data-key^="{RUN_NAME}/"]')
    try:
        row.wait_for(state="visible", timeout=30_000)
    except PlaywrightError as err:
        page.screenshot(path=shots / "runs.png")
        raise AssertionError(fail(f"the run does not show in the Runs sidebar: {err}")) from None
    run_dirs = sorted((tmp_path / "lab_runs" / RUN_NAME).glob("*/run.json"))
    assert len(run_dirs) == 1, run_dirs  # the server pointed the kernel's runs root at <root>/lab_runs
    assert row.get_attribute("data-key") == f"{RUN_NAME}/{run_dirs[0].parent.name}"
    row.click()
    curves = page.locator("#lightning-lab-runs img.ll-RunDetail-curves")
    try:
        curves.wait_for(state="visible", timeout=20_000)
        page.locator(f'#lightning-lab-runs .ll-RunRow[data-key^="{RUN_NAME}/"][data-status="completed"]').wait_for(
            timeout=120_000)
    except PlaywrightError as err:
        page.screenshot(path=shots / "runs.png")
        raise AssertionError(fail(f"the run's curves or its completion did not show in the sidebar: {err}")) from None
    wait_for("the curves image to load", lambda: curves.evaluate("el => el.naturalWidth") > 100, 10, lab)
    detail = page.locator("#lightning-lab-runs .ll-RunDetail-title", has_text="completed")
    try:
        detail.wait_for(timeout=10_000)  # the selected run's curves are redrawn once it ends
    except PlaywrightError as err:
        raise AssertionError(fail(f"the selected run's detail still shows it live: {err}")) from None
    assert page.locator("#lightning-lab-runs .ll-RunDetail-stop").count() == 0, "a Stop button on a finished run"
    text = row.inner_text()
    assert "completed" in text and re.search(r"val_loss=\d", text), text
    page.wait_for_timeout(300)
    page.screenshot(path=shots / "runs.png")


def test_stop_button_in_the_runs_sidebar_stops_a_live_run(lab, tmp_path):
    write_notebook(tmp_path / "long.ipynb", SETUP, LONG_TRAIN)
    shots = tmp_path / "shots"
    with browser_page(lab, shots, "lab-plugin-stop-") as (page, fail):
        open_notebook(page, lab, "long.ipynb", shots, fail)
        run_all_cells(page)
        cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
        try:
            cell.locator("img.widget-image").wait_for(state="visible", timeout=90_000)
        except PlaywrightError as err:
            raise AssertionError(fail(f"the %%train cell did not start: {err}")) from None
        open_runs_sidebar(page)
        row = page.locator('#lightning-lab-runs .ll-RunRow[data-key^="stoppable/"]')
        try:
            row.wait_for(state="visible", timeout=30_000)
            row.click()
            stop = page.locator("#lightning-lab-runs .ll-RunDetail-stop")
            stop.wait_for(state="visible", timeout=20_000)
        except PlaywrightError as err:
            page.screenshot(path=shots / "runs.png")
            raise AssertionError(fail(f"no Stop button for the live run in the sidebar: {err}")) from None
        run_dir = tmp_path / "lab_runs" / row.get_attribute("data-key")
        assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
        stop.click()
        try:
            page.locator(".Toastify__toast", has_text="Stop requested").wait_for(timeout=10_000)
            page.locator('#lightning-lab-runs .ll-RunRow[data-key^="stoppable/"][data-status="stopped"]').wait_for(
                timeout=30_000)
            # the cell ends normally: its prompt gets a number again
            cell.locator(".jp-InputPrompt", has_text=re.compile(r"\[\d+\]")).wait_for(timeout=30_000)
        except PlaywrightError as err:
            page.screenshot(path=shots / "runs.png")
            raise AssertionError(fail(f"the run did not stop after the sidebar's Stop button: {err}")) from None
        page.screenshot(path=shots / "runs.png")
        info = json.loads((run_dir / "run.json").read_text())
        assert info["status"] == "stopped", info["status"]
        steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        assert max(steps) < 1600, "the run trained to its end instead of stopping"
        assert "Traceback" not in cell.locator(".jp-OutputArea").inner_text()


def test_batch_dialog_starts_a_sweep_and_follows_its_progress(lab, tmp_path):
    write_notebook(tmp_path / "sweep.ipynb", SETUP.replace('!echo "a shell line the script leaves out"\n', ""),
                   SWEEP_TRAIN, parameters="lr = 0.1")
    shots = tmp_path / "shots"
    with browser_page(lab, shots, "lab-plugin-batch-") as (page, fail):
        open_notebook(page, lab, "sweep.ipynb", shots, fail)
        page.locator('.jp-NotebookPanel-toolbar [data-command="lightning-lab:batch"]').click()
        dialog = page.locator(".jp-Dialog")
        try:
            dialog.locator("textarea[name=grid]").wait_for(state="visible", timeout=10_000)
        except PlaywrightError as err:
            raise AssertionError(fail(f"the batch dialog did not open: {err}")) from None
        dialog.locator("textarea[name=grid]").fill("lr=0.05,0.2")
        dialog.locator("input[name=workers]").fill("2")
        dialog.screenshot(path=shots / "dialog.png")
        dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
        try:
            page.locator(".Toastify__toast", has_text=re.compile(r"Batch sweep\.ipynb: \d/2 done")).first.wait_for(
                timeout=15_000)
            page.locator(".Toastify__toast", has_text="2/2 done (completed)").wait_for(timeout=240_000)
        except PlaywrightError as err:
            page.screenshot(path=shots / "progress.png")
            raise AssertionError(fail(f"the sweep's progress did not reach 2/2 completed: {err}")) from None
        page.screenshot(path=shots / "progress.png")
        done = page.locator(".Toastify__toast", has_text="2/2 done (completed)")
        assert re.search(r"best lr=0\.(05|2): val_loss=\d", done.inner_text()), done.inner_text()
        done.get_by_role("button", name="Open results.csv").click()
        try:
            page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="results.csv").wait_for(timeout=15_000)
        except PlaywrightError as err:
            raise AssertionError(fail(f"the notification's action did not open results.csv: {err}")) from None
        page.screenshot(path=shots / "results.png")
    with (tmp_path / "lab_batch" / "sweep" / "results.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert sorted((r["lr"], r["status"]) for r in rows) == [("0.05", "completed"), ("0.2", "completed")], rows
