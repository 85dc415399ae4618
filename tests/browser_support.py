"""A real Jupyter server for tests: ``jupyter lab`` or ``jupyter server`` on a free port, its state under ``tmp``.

Used by the browser tests (``test_browser.py``, ``test_lab_plugin.py``) and by the server
extension's route tests (``test_server.py``). Nothing from the user's Jupyter set-up (settings,
workspaces, user config) leaks in; the environment's own config (``<venv>/etc/jupyter``, where the
package enables its server extension) is read as a user's would be.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium"
INSTALL = "run scripts/install_browser.sh [VENV] (installs Debian's chromium and playwright==1.65.2 into the venv)"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
TOKEN = "lightning-lab-browser-test"


def browser_missing() -> str | None:
    """Why a browser test cannot run here (``None`` when chromium and playwright are both present)."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing; {INSTALL}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return f"the playwright package is missing; {INSTALL}"
    return None


class LabServer:
    """A Jupyter server on 127.0.0.1 in its own process group (``app``: ``"jupyterlab"`` or ``"jupyter_server"``).

    Args:
        tmp: Holds the server's config, runtime and settings folders and its log.
        root: The server root (default ``tmp``).
        runs_root: ``LIGHTNING_LAB_ROOT`` for the server and its kernels (default: unset).
        app: The module started with ``python -m``.
    """

    def __init__(self, tmp: Path, root: Path | None = None, runs_root: Path | None = None,
                 app: str = "jupyterlab") -> None:
        self.tmp = tmp
        self.root = root or tmp
        self.runs_root = runs_root
        self.log_path = tmp / f"{app}.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        jupyter = tmp / "jupyter"
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "JUPYTER_CONFIG_DIR": str(jupyter / "config"), "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
               "JUPYTERLAB_SETTINGS_DIR": str(jupyter / "settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(jupyter / "workspaces")}
        env.pop("LIGHTNING_LAB_NO_WIDGET", None)
        env.pop("LIGHTNING_LAB_ROOT", None)
        if runs_root is not None:
            env["LIGHTNING_LAB_ROOT"] = str(runs_root)
        # no "get Jupyter news?" toast over the notebook
        settings = jupyter / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        command = [sys.executable, "-m", app, "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                   "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
                   f"--ServerApp.root_dir={self.root}"]
        if app == "jupyterlab":
            command += ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                        "--LabApp.extension_manager=readonly"]
        if os.geteuid() == 0:  # CI containers run as root
            command.append("--allow-root")
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def request(self, method: str, path: str, body: Any = None, token: str | None = TOKEN,
                raw: bool = False) -> tuple[int, Any]:
        """``(status, JSON reply or bytes)`` of ``method path`` (4xx/5xx are returned, not raised)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Authorization": f"token {token}"} if token else {}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                status, content = reply.status, reply.read()
        except urllib.error.HTTPError as err:
            status, content = err.code, err.read()
        if raw:
            return status, content
        try:
            return status, json.loads(content) if content else None
        except ValueError:
            return status, content

    def api(self, path: str) -> Any:
        """The JSON reply of an authenticated ``GET path`` (raises on an error status)."""
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as reply:
            return json.loads(reply.read())

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the Jupyter server exited with code {self.process.returncode}{self.log_tail()}")
            try:
                self.api("api/status")
                return
            except (OSError, urllib.error.URLError, ValueError):
                time.sleep(0.25)
        raise AssertionError(f"the Jupyter server did not answer on {self.url} within {timeout:.0f} s{self.log_tail()}")

    def kernels(self) -> list[dict]:
        return self.api("api/kernels")

    def idle_kernel(self) -> dict | None:
        """The server's only kernel once it is started and idle, else ``None`` (for polling)."""
        try:
            kernels = self.kernels()
        except urllib.error.HTTPError as err:
            # jupyter_server answers 500 when the kernel list is asked for while a kernel is being
            # started (its last_activity is not set yet): not started yet, ask again.
            if err.code == 500:
                return None
            raise
        return kernels[0] if len(kernels) == 1 and kernels[0]["execution_state"] == "idle" else None

    def log_tail(self, lines: int = 40) -> str:
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n--- jupyter server log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
            os.killpg(self.process.pid, signal.SIGKILL)  # stragglers (kernels) in the group
        except ProcessLookupError:
            pass
        self.process.wait(5)
        self._log.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, condition: Callable[[], T], timeout: float, server: LabServer | None = None,
             interval: float = 0.1) -> T:
    """``condition()`` once it is truthy; an AssertionError naming ``what`` (with the server log) if not."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = server.log_tail() if server is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        time.sleep(interval)


def keep_artifacts(folder: Path, prefix: str, pattern: str = "*.png") -> Path | None:
    """Copy the screenshots in ``folder`` (as ``<prefix><name>``) to ``$LIGHTNING_LAB_ARTIFACTS`` (or the
    older ``$LIGHTNING_LAB_BROWSER_SHOTS``), else to ``test-artifacts/`` in the repository; returns where."""
    target = os.environ.get("LIGHTNING_LAB_ARTIFACTS") or os.environ.get("LIGHTNING_LAB_BROWSER_SHOTS")
    keep = Path(target) if target else Path(__file__).resolve().parents[1] / "test-artifacts"
    files = list(folder.glob(pattern))
    if not files:
        return None
    keep.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copy(file, keep / f"{prefix}{file.name}")
    return keep
