"""The widget's Stop button: it must work while the ``%%train`` cell is still running.

An ipywidgets click travels as a comm message, which the kernel handles only once the busy cell
has finished — too late. So the button's front end (a small anywidget module) also asks the
Jupyter server to interrupt the kernel (``POST /api/kernels/<id>/interrupt``, the request the ■
toolbar button sends); the trainer turns that SIGINT into "stop after this step". When training
runs on a background thread the shell is idle and the comm message alone does the job.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

_ESM = r"""
function pageConfig() {
  const el = document.getElementById("jupyter-config-data");
  try { return el ? JSON.parse(el.textContent) : {}; } catch (e) { return {}; }
}
function cookie(name) {
  const m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
  return m ? decodeURIComponent(m[1]) : "";
}
async function interruptKernel(kernelId) {
  const config = pageConfig();
  const base = (config.baseUrl || "/").replace(/\/?$/, "/");
  const headers = { "X-XSRFToken": cookie("_xsrf") };
  if (config.token) headers["Authorization"] = "token " + config.token;
  const url = base + "api/kernels/" + encodeURIComponent(kernelId) + "/interrupt";
  const reply = await fetch(url, { method: "POST", headers, credentials: "same-origin" });
  return reply.ok;
}
function render({ model, el }) {
  const button = document.createElement("button");
  button.className = "jupyter-button mod-danger lightning-lab-stop";
  button.title = model.get("tooltip");
  const sync = () => {
    button.textContent = "■ " + model.get("description");
    button.disabled = model.get("disabled");
  };
  sync();
  model.on("change:description", sync);
  model.on("change:disabled", sync);
  button.addEventListener("click", async () => {
    if (button.disabled) return;
    button.disabled = true;
    button.textContent = "stopping…";
    model.send({ event: "stop" });
    const kernelId = model.get("kernel_id");
    if (model.get("interrupt") && kernelId) {
      try { await interruptKernel(kernelId); } catch (err) { console.warn("lightning_lab stop:", err); }
    }
  });
  el.appendChild(button);
}
export default { render };
"""


def kernel_id() -> str:
    """This kernel's id as the Jupyter server knows it ("" outside a server-started kernel)."""
    try:
        from ipykernel import get_connection_file

        return Path(get_connection_file()).stem.removeprefix("kernel-")
    except Exception:  # not in a kernel, or no connection file
        return ""


def make_stop_button(interrupt: bool, tooltip: str) -> Any:
    """A :class:`StopButton` when anywidget is installed, else a plain ipywidgets Button (which
    only works while the shell is idle, i.e. for background training)."""
    try:
        import anywidget  # noqa: F401
    except ImportError:
        import ipywidgets

        return ipywidgets.Button(description="Stop", icon="stop", button_style="danger", tooltip=tooltip)
    return _stop_button_class()(interrupt=interrupt, kernel_id=kernel_id() if interrupt else "", tooltip=tooltip)


_CLASS: Any = None


def _stop_button_class() -> Any:
    """Built on first use, so importing this module does not import anywidget."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import anywidget
    import traitlets

    class StopButton(anywidget.AnyWidget):
        """A Stop button that interrupts the kernel through the server (see the module docstring).

        Mirrors the bits of ``ipywidgets.Button`` the view uses: ``description``, ``icon``,
        ``disabled``, ``on_click`` and ``click()``.
        """

        _esm = traitlets.Unicode(_ESM).tag(sync=True)
        description = traitlets.Unicode("Stop").tag(sync=True)
        tooltip = traitlets.Unicode("").tag(sync=True)
        disabled = traitlets.Bool(False).tag(sync=True)
        interrupt = traitlets.Bool(True).tag(sync=True)
        kernel_id = traitlets.Unicode("").tag(sync=True)
        icon = "stop"

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._handlers: list[Callable[[Any], None]] = []
            self.on_msg(self._on_message)

        def on_click(self, handler: Callable[[Any], None]) -> None:
            """Call ``handler(button)`` when the button is clicked."""
            self._handlers.append(handler)

        def click(self) -> None:
            """Run the click handlers (what a click does once its message reaches the kernel)."""
            for handler in self._handlers:
                handler(self)

        def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
            if isinstance(content, dict) and content.get("event") == "stop":
                self.click()

    _CLASS = StopButton
    return _CLASS
