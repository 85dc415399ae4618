"""Finding the model and the data of a ``%%train`` cell from the code alone (the notebook is not run).

The rules are ``%%train``'s (see :mod:`lightning_lab.notebook.discovery`): ``--model``/``--data``/
``--val``, else what the body assigns, else the notebook's variables; two loaders are told apart by
a val/valid/eval/test/dev name. A value's kind is judged from the code that makes it: a class whose
bases lead to ``LabModule`` is a model, to ``LabDataModule`` a datamodule; ``DataLoader(...)`` (or a
variable named like a loader) is a loader.
"""

from __future__ import annotations

import ast

from lightning_lab.export.errors import ExportError
from lightning_lab.export.names import analyze, call_name
from lightning_lab.export.parse import Statement
from lightning_lab.export.slicing import Slicer

_VAL_WORDS = ("val", "valid", "eval", "test", "dev")
_LOADER_WORDS = ("loader", "_dl", "dl_")


def assignments(body: list[Statement]) -> dict[str, tuple[Statement, ast.expr | None]]:
    """Names the body binds at top level, first binding first, with the value of a simple assignment."""
    found: dict[str, tuple[Statement, ast.expr | None]] = {}
    for stmt in body:
        node = stmt.node
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = (stmt, node.value)
                else:
                    for part in ast.walk(target):
                        if isinstance(part, ast.Name):
                            found.setdefault(part.id, (stmt, None))
        else:
            for name in sorted(analyze(node).binds):
                found.setdefault(name, (stmt, None))
    return found


def notebook_assignments(slicer: Slicer, limit: int) -> dict[str, tuple[Statement, ast.expr | None]]:
    """The notebook's variables before the ``%%train`` cell, in first-assignment order, with their latest value."""
    order: dict[str, None] = {}
    for index in range(limit):
        node = slicer.statements[index].node
        if not slicer.is_import(index) and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            order.update(dict.fromkeys(sorted(slicer.facts[index].binds)))
    found: dict[str, tuple[Statement, ast.expr | None]] = {}
    for name in order:
        index = slicer.definition(name, limit)
        if index is not None:
            entry = assignments([slicer.statements[index]]).get(name)
            if entry is not None:
                found[name] = entry
    return found


class Kinds:
    """Whether a value is a model, a datamodule or a DataLoader, judged from the code that makes it."""

    def __init__(self, slicer: Slicer, limit: int) -> None:
        self.slicer, self.limit = slicer, limit

    def of_value(self, value: ast.expr | None, name: str = "") -> str | None:
        kind = None
        if isinstance(value, ast.Call):
            kind = self.of_callee(value.func, 0)
        if kind is None and (any(w in name.lower() for w in _LOADER_WORDS) or name.lower().endswith("dl")):
            kind = "loader"
        return kind

    def of_callee(self, func: ast.expr, depth: int) -> str | None:
        last = call_name(func).rpartition(".")[2]
        if last == "LabModule":
            return "model"
        if last == "LabDataModule":
            return "datamodule"
        if last == "DataLoader":
            return "loader"
        if depth < 8 and isinstance(func, ast.Name):
            index = self.slicer.definition(func.id, self.limit)
            node = self.slicer.statements[index].node if index is not None else None
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    kind = self.of_callee(base, depth + 1)
                    if kind is not None:
                        return kind
                return None
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lightning_lab") and not node.level:
                original = next((a.name for a in node.names if (a.asname or a.name) == func.id), func.id)
                return lab_kind(node.module or "", original)
        return "datamodule" if last.endswith("DataModule") else None


def lab_kind(module: str, name: str) -> str | None:
    """The kind of a class imported from lightning_lab itself (our own code, safe to import)."""
    try:
        import importlib

        from lightning_lab.engine.module import LabDataModule, LabModule

        value = getattr(importlib.import_module(module), name)
    except Exception:  # a missing module or name: the kind stays unknown
        return None
    if isinstance(value, type) and issubclass(value, LabModule):
        return "model"
    if isinstance(value, type) and issubclass(value, LabDataModule):
        return "datamodule"
    return None


def find_model(chosen: str | None, body: dict, notebook: dict, kinds: Kinds, slicer: Slicer, limit: int,
                cell: int) -> str:
    if chosen is not None:
        if chosen not in body and slicer.definition(chosen, limit) is None:
            raise ExportError(f"cell {cell}: --model {chosen}: no variable {chosen!r} is assigned in the %%train cell "
                              "or before it.")
        return chosen
    for scope in (body, notebook):
        models = [n for n, (_, v) in scope.items() if not n.startswith("_") and kinds.of_value(v) == "model"]
        if len(models) == 1:
            return models[0]
        if len(models) > 1:
            raise ExportError(f"cell {cell}: the %%train cell could train {', '.join(models)}. Say which with "
                              f"--model NAME (e.g. `%%train --model {models[0]}`).")
        if scope is body:
            unknown = [n for n, (_, v) in body.items() if isinstance(v, ast.Call) and kinds.of_value(v, n) is None]
            if len(unknown) == 1:
                return unknown[0]
    raise ExportError(f"cell {cell}: the export cannot tell which variable holds the model: the %%train cell assigns "
                      "no instance of a LabModule subclass it can see. Name it on the line: `%%train --model NAME`.")


def find_data(data: str | None, val: str | None, body: dict, notebook: dict, kinds: Kinds, slicer: Slicer,
               limit: int, cell: int) -> dict[str, str | None]:
    def value(name: str) -> ast.expr | None:
        return (body.get(name) or notebook.get(name) or (None, None))[1]

    if data is not None:
        for name, option in ((data, "--data"), (val, "--val")):
            if name is not None and name not in body and slicer.definition(name, limit) is None:
                raise ExportError(f"cell {cell}: {option} {name}: no variable {name!r} is assigned in the %%train "
                                  "cell or before it.")
        if kinds.of_value(value(data), data) == "datamodule":
            return {"datamodule": data}
        return {"train": data, "val": val}
    if val is not None:
        raise ExportError(f"cell {cell}: --val needs --data too: name the training data with --data NAME.")
    for scope in (body, notebook):
        names = [n for n in scope if not n.startswith("_")]
        modules = [n for n in names if kinds.of_value(value(n), n) == "datamodule"]
        if len(modules) == 1:
            return {"datamodule": modules[0]}
        if len(modules) > 1:
            raise ExportError(f"cell {cell}: the %%train cell could use the LabDataModules {', '.join(modules)}. "
                              "Choose one with --data NAME.")
        loaders = [n for n in names if kinds.of_value(value(n), n) == "loader"]
        if len(loaders) == 1:
            return {"train": loaders[0]}
        vals = [n for n in loaders if any(w in n.lower() for w in _VAL_WORDS)]
        if len(loaders) == 2 and len(vals) == 1:
            return {"train": next(n for n in loaders if n not in vals), "val": vals[0]}
        if loaders:
            raise ExportError(f"cell {cell}: the %%train cell could use the DataLoaders {', '.join(loaders)}, and the "
                              f"export cannot tell which trains. Say so with --data NAME [--val NAME].")
    raise ExportError(f"cell {cell}: the export finds no data for the %%train cell: assign a LabDataModule or a "
                      "DataLoader, or name it on the line with --data NAME.")
