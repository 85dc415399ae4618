"""The ``%%train`` live widget in a real JupyterLab, in headless Chromium driven by Playwright.

Proves what kernel-level tests cannot: that the widget renders in the browser (header, progress
bar, metrics table, curves image) and that its Stop button, clicked while the cell is still busy,
reaches the kernel (the anywidget front end interrupts it through the server's REST API) and
stops the run gracefully: run.json says "stopped", last.ckpt holds the step it stopped at, the
cell finishes and leaves the static curves and the resume hint in its output.

Needs Debian's chromium and the ``playwright`` package (no browser download): both are installed
by ``scripts/install_browser.sh``. Without them this module is skipped.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import nbformat
import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, TOKEN, LabServer, browser_missing, keep_artifacts
from browser_support import wait_for as _wait

if browser_missing():
    pytest.skip(browser_missing(), allow_module_level=True)
from playwright.sync_api import Error as PlaywrightError  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402

RUN_NAME = "browser"

SETUP = """\
%load_ext lightning_lab
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
        time.sleep(0.05)  # slow steps: training lasts long enough to be stopped mid-run
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
TRAIN = f"%%train --max-epochs 100 --name {RUN_NAME}\nmodel = Net()"


# ---------------------------------------------------------------------------------------------- server

@pytest.fixture
def lab(tmp_path):
    server = LabServer(tmp_path, runs_root=tmp_path / "runs")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------- helpers

def _run_dir(root: Path) -> Path | None:
    runs = sorted((root / RUN_NAME).glob("*/run.json")) if (root / RUN_NAME).is_dir() else []
    return runs[-1].parent if runs else None


def _run_info(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):  # being replaced right now (atomic rename): read again
        return {}


def _steps(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(line).get("step", 0) for line in lines if line.strip().endswith("}")]
    return max(steps, default=0)


# ---------------------------------------------------------------------------------------------- test

def test_live_widget_renders_and_its_stop_button_stops_a_busy_cell(lab, tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(TRAIN)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(notebook, tmp_path / "browser.ipynb")
    console: list[str] = []
    interrupts: list[tuple[float, int]] = []  # (time, HTTP status) of interrupt requests the page sent

    def fail(message: str) -> str:
        return message + "\n--- browser console (tail) ---\n" + "\n".join(console[-20:]) + lab.log_tail()

    def on_request(request) -> None:
        if request.method == "POST" and request.url.endswith("/interrupt"):
            response = request.response()
            interrupts.append((time.monotonic(), response.status if response else 0))

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1100})
                page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
                page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
                page.on("requestfinished", on_request)
                page.on("requestfailed", on_request)
                page.set_default_timeout(30_000)
                result = _drive(page, lab, tmp_path, fail, interrupts)
            finally:
                browser.close()
    finally:
        keep_artifacts(tmp_path, "live-widget-")  # the screenshots, to $LIGHTNING_LAB_ARTIFACTS or test-artifacts/

    run_dir, stopped_step, stopped_after = result
    import torch

    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["loop"]["global_step"] == stopped_step, (
        f"last.ckpt is at step {checkpoint['loop']['global_step']}, not at the step the run stopped at ({stopped_step})")
    print(f"\nstopped {stopped_after:.2f} s after the click, at step {stopped_step}; "
          f"screenshots: {tmp_path / 'widget.png'}, {tmp_path / 'stopped.png'}")


def _drive(page: Page, lab: LabServer, tmp_path: Path, fail, interrupts) -> tuple[Path, int, float]:
    page.goto(f"{lab.url}lab/tree/browser.ipynb?token={TOKEN}")

    # The notebook is open and its kernel is started and idle.
    try:
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=45_000)
        kernel = _wait("the notebook's kernel to start", lab.idle_kernel, 45, lab, interval=0.25)
        page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=15_000)
        page.locator(".jp-Toolbar-kernelName", has_text="Python 3").first.wait_for(timeout=15_000)
    except PlaywrightError as err:
        page.screenshot(path=tmp_path / "lab.png")
        raise AssertionError(fail(f"the notebook or its kernel did not get ready: {err}")) from None

    # Run both cells as a user would: click into the first cell, Shift+Enter twice.
    cells = page.locator(".jp-Notebook .jp-Cell")
    cells.first.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    page.keyboard.press("Shift+Enter")

    # The live widget renders while the cell runs: Stop button, header, progress bar, table, curves.
    cell = cells.nth(1)
    stop = cell.locator("button.lightning-lab-stop")
    image = cell.locator("img.widget-image")
    try:
        stop.wait_for(state="visible", timeout=60_000)
        cell.locator(".widget-hprogress .progress-bar").wait_for(state="visible")
        cell.locator(".widget-html table", has_text="train_loss").wait_for(state="visible")
        image.wait_for(state="visible")
    except PlaywrightError as err:
        page.screenshot(path=tmp_path / "lab.png")
        raise AssertionError(fail(f"the live widget did not render in the %%train cell: {err}")) from None
    run_dir = _wait("the run directory", lambda: _run_dir(lab.runs_root), 30, lab)
    _wait("a few steps in metrics.jsonl", lambda: _steps(run_dir) >= 5, 30, lab)
    first_curves = image.get_attribute("src")
    _wait("the curves image to be redrawn while training", lambda: image.get_attribute("src") != first_curves, 30, lab)
    page.wait_for_timeout(300)  # let the new image paint
    cell.scroll_into_view_if_needed()
    page.screenshot(path=tmp_path / "lab.png")
    cell.screenshot(path=tmp_path / "widget.png")

    header = cell.locator(".widget-html").first.inner_text()
    assert f"{RUN_NAME}/{run_dir.name}" in header and "running" in header, header
    assert re.search(r"epoch \d+/100", header) and re.search(r"step \d+/1600", header), header
    bar = cell.locator(".widget-hprogress .progress-bar").evaluate("el => parseFloat(el.style.width) || 0")
    assert 0 < bar < 100, f"the progress bar is at {bar}%"
    size = image.evaluate("el => [el.naturalWidth, el.naturalHeight]")
    assert min(size) > 100, f"the curves image is {size[0]}x{size[1]} px"
    table = cell.locator(".widget-html table").inner_text()
    assert "train_loss" in table, table
    assert stop.is_enabled() and "Stop" in stop.inner_text(), stop.inner_text()
    assert _run_info(run_dir).get("status") == "running", _run_info(run_dir)
    # Still running: the prompt shows [*]. (Not the server's execution_state, which the widget manager's
    # create_subshell_request on the control channel turns to "idle" while the cell is busy.)
    assert cell.locator(".jp-InputPrompt").inner_text().strip() == "[*]:", "the %%train cell is not running"

    # Click Stop while the cell is busy: the run stops within a couple of seconds.
    steps_before = _steps(run_dir)
    clicked = time.monotonic()
    try:
        with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/interrupt"),
                                  timeout=5_000) as interrupt:
            stop.click()
    except PlaywrightError as err:
        raise AssertionError(fail(f"the Stop button sent no interrupt request to the server: {err}")) from None
    assert interrupt.value.status == 204, fail(f"the server answered the interrupt with {interrupt.value.status}")
    _wait("run.json to say status 'stopped' after the Stop click",
          lambda: _run_info(run_dir).get("status") == "stopped", 5, lab, interval=0.05)
    stopped_after = time.monotonic() - clicked
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file(), fail(f"no {last} after the stop")

    # The cell finishes; the same kernel is idle again.
    try:
        cell.locator(".jp-InputPrompt", has_text=re.compile(r"\[\d+\]")).wait_for(timeout=15_000)
        page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=15_000)
    except PlaywrightError as err:
        page.screenshot(path=tmp_path / "lab.png")
        raise AssertionError(fail(f"the %%train cell did not finish after Stop: {err}")) from None
    _wait("the kernel to be idle", lab.idle_kernel, 10, lab)
    assert lab.idle_kernel()["id"] == kernel["id"], "the kernel was restarted instead of interrupted"

    # Its output keeps the final header, the static curves image and the resume hint.
    outputs = cell.locator(".jp-OutputArea")
    try:
        outputs.locator(".jp-RenderedImage img").first.wait_for(state="visible", timeout=10_000)
    except PlaywrightError as err:
        raise AssertionError(fail(f"no static curves image in the cell output: {err}")) from None
    text = outputs.inner_text()
    hint = re.search(r"stopped at epoch (\d+), step (\d+); last\.ckpt saved", text)
    assert hint and "ckpt_path='last'" in text, fail(f"no resume hint in the cell output:\n{text}")
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, fail(f"an error in the cell output:\n{text}")
    header = cell.locator(".widget-html").first.inner_text()
    assert "stopped" in header and not stop.is_visible(), header
    cell.screenshot(path=tmp_path / "stopped.png")
    stopped_step = int(hint.group(2))
    assert steps_before <= stopped_step < 1600, (steps_before, stopped_step)
    assert [status for _, status in interrupts] == [204], fail(f"expected one interrupt request, got {interrupts}")

    # The kernel is healthy: the next cell runs and sees the stopped run and the trained model.
    cells.nth(2).locator(".jp-InputArea-editor").click()
    page.keyboard.type("print(_run.status, _trainer.global_step, type(model).__name__)")
    page.keyboard.press("Shift+Enter")
    try:
        cells.nth(2).locator(".jp-OutputArea", has_text=f"stopped {stopped_step} Net").wait_for(timeout=15_000)
    except PlaywrightError:
        raise AssertionError(fail("the next cell did not run normally after the stop: "
                                  + cells.nth(2).inner_text())) from None
    return run_dir, stopped_step, stopped_after
