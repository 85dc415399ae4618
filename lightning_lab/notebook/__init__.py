"""The notebook experience: ``%load_ext lightning_lab`` gives ``%%train``, ``%runs`` and ``%export``."""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics (called by ``%load_ext lightning_lab``)."""
    from lightning_lab.notebook.magic import LabMagics

    ipython.register_magics(LabMagics)
