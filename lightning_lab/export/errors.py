"""The one error the exporter raises on purpose: it names the cell (and the line or name) and the fix."""

from __future__ import annotations

from lightning_lab.errors import LabError


class ExportError(LabError, ValueError):
    """The notebook cannot become a script: a name the slice cannot resolve, a cell that does not parse,
    a ``%%train`` line that cannot be read. The message starts with ``cell N`` and says how to fix it."""
