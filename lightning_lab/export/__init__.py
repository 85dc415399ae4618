"""Notebook → clean training script, by dependency slicing (see SPEC "Export").

``export_notebook(path, output=None, cell=None)`` keeps what the ``%%train`` cell needs (imports,
functions, classes, assignments, mutations and seed calls), in notebook order, and turns that cell
into an argparse ``main()``; ``main_export(argv)`` is ``lightning-lab export``; ``magic_export(line)``
is ``%export``. Nothing here is imported by ``import lightning_lab``.
"""

from lightning_lab.export.errors import ExportError
from lightning_lab.export.exporter import (
    ExportResult,
    export_notebook,
    kernel_notebook_path,
    magic_export,
    main_export,
)
from lightning_lab.export.parse import DroppedLine
from lightning_lab.export.train_cell import Option

__all__ = [
    "DroppedLine",
    "ExportError",
    "ExportResult",
    "Option",
    "export_notebook",
    "kernel_notebook_path",
    "magic_export",
    "main_export",
]
