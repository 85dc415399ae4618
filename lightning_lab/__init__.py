"""lightning_lab: a notebook-first deep-learning research environment on PyTorch.

One engine trains in a notebook, a script, several processes or a cluster; one run directory
records every run. ``from lightning_lab import LabModule, Trainer``.
"""

__version__ = "0.1.0"

from lightning_lab.engine import Engine, LabDataModule, LabModule, Trainer, seed_everything  # noqa: E402
from lightning_lab.errors import LabError  # noqa: E402

__all__ = ["Engine", "LabDataModule", "LabError", "LabModule", "Trainer", "__version__", "seed_everything"]


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext lightning_lab``: registers ``%%train``, ``%runs`` and ``%export``."""
    from lightning_lab.notebook import load_ipython_extension as load

    load(ipython)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The Jupyter server extension (``lightning_lab.server``); jupyter_server is imported only when it loads."""
    return [{"module": "lightning_lab.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab plugin, for ``jupyter labextension develop``."""
    return [{"src": "labextension", "dest": "lightning-lab-jupyterlab"}]
