"""The exporter's front door: notebook in, script out — used by the CLI, ``%export`` and remote ``%%train``.

The pipeline reads top to bottom: load the notebook, parse every cell, choose the ``%%train``
cell, slice what it needs, render the script, check it compiles, write it. Nothing is executed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from lightning_lab.errors import LabError
from lightning_lab.export.errors import ExportError
from lightning_lab.export.names import analyze
from lightning_lab.export.parse import Cell, DroppedLine, Statement, load_notebook, parse_cells
from lightning_lab.export.render import HELPERS, provides_helper, render_script
from lightning_lab.export.slicing import Slice, Slicer
from lightning_lab.export.train_cell import Option, TrainPlan, plan_train


@dataclass
class ExportResult:
    """What an export produced.

    Attributes:
        script: The script's text.
        output: Where it was written (``None`` when not written).
        notebook: The notebook's name, as messages give it.
        train_cell: The ``%%train`` cell the script's ``main()`` comes from (``None``: the notebook has none).
        kept_cells: Cells that contribute code (numbered from 1, markdown cells included).
        dropped_cells: Code cells left out entirely.
        dropped_lines: Every ``%``/``!`` line left out (``%time``-like magics are only unwrapped).
        options: The options of ``main()``: the trainer's, then the hyperparameters.
        left_out: The header's list of what the script leaves out, one line per magic line or cell.
    """

    script: str
    output: Path | None
    notebook: str
    train_cell: int | None
    kept_cells: list[int] = field(default_factory=list)
    dropped_cells: list[int] = field(default_factory=list)
    dropped_lines: list[DroppedLine] = field(default_factory=list)
    options: list[Option] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    @property
    def hyperparameters(self) -> list[Option]:
        """The options that come from literal constructor arguments (``--lr``, ``--hidden``)."""
        return [o for o in self.options if o.hyper]

    def summary(self) -> str:
        """What the CLI and ``%export`` print: where the script went, its options, what was left out."""
        done = f"wrote {self.output}" if self.output is not None else "exported (not written)"
        source = f"%%train in cell {self.train_cell}" if self.train_cell else "no %%train cell: all code cells"
        lines = [f"{done} from {self.notebook} ({source}; kept cells {_numbers(self.kept_cells)})"]
        if self.hyperparameters:
            lines.append("hyperparameters: " + " ".join(f"{o.flag} {o.default}" for o in self.hyperparameters))
        if self.left_out:
            lines.append("left out:")
            lines += [f"  {entry}" for entry in self.left_out]
        return "\n".join(lines)


def export_notebook(notebook_path: str | os.PathLike[str] | Mapping[str, Any],
                    output: str | os.PathLike[str] | None = None, cell: int | None = None, *,
                    write: bool = True, today: date | None = None) -> ExportResult:
    """Turn a notebook into a training script, without running it.

    Args:
        notebook_path: The ``.ipynb`` file (or a notebook already loaded as a dict).
        output: Where to write the script (default: the notebook's path with ``.py``).
        cell: The ``%%train`` cell to export, numbered from 1 counting every cell (markdown too);
            default the last one.
        write: ``False`` only renders (``output`` is then ``None`` in the result).
        today: The date the header gives (default: today).

    Returns:
        The :class:`ExportResult`; the script is written atomically to ``output``.

    Raises:
        ExportError: a name the script would need is never defined (the message names it and the
            cell), a cell does not parse (cell and line), ``cell`` is not a ``%%train`` cell, or the
            model/data of the ``%%train`` cell cannot be told. Nothing is written then.

    Example::

        result = export_notebook("notebooks/01_quickstart.ipynb", "train.py")
        print(result.summary())   # then: python train.py --max-epochs 3
    """
    raw_cells, label = load_notebook(notebook_path)
    cells = parse_cells(raw_cells)
    target = _choose_train_cell(cells, cell, label)
    statements, earlier_training = _statements_before(cells, target)
    slicer = Slicer(statements, _bound_below(cells, target))
    plan, chosen = _slice(slicer, target)
    kept = [statements[i] for i in chosen.kept] + (plan.body if plan else [])
    kept_cells = sorted({s.cell for s in kept} | ({target.number} if target else set()))
    dropped_lines = _dropped_lines(cells, target, earlier_training, kept)
    dropped_cells, left_out = _left_out(cells, target, kept_cells, dropped_lines, plan)
    out_path = _output_path(notebook_path, output) if write else None
    header = _header(label, target, left_out, out_path, today or date.today())
    script = render_script(header, slicer, chosen, plan, len(statements), _description(plan, label))
    _check_compiles(script, label)
    if out_path is not None:
        _write_atomic(out_path, script, notebook_path)
    return ExportResult(script, out_path, label, target.number if target else None, kept_cells, dropped_cells,
                        dropped_lines, plan.options if plan else [], left_out)


def main_export(argv: Sequence[str] | None = None) -> int:
    """``lightning-lab export NOTEBOOK [-o SCRIPT] [--cell N]``; returns the exit code.

    Prints where the script went and what was left out. A user mistake: one line on stderr, exit 2,
    no script written.
    """
    parser = argparse.ArgumentParser(
        prog="lightning-lab export",
        description="Turn a notebook into a clean training script: what its %%train cell needs, in notebook "
                    "order, with an argparse main() whose options are the trainer options and the cell's "
                    "literal hyperparameters. The notebook is not executed.")
    parser.add_argument("notebook", help="the .ipynb file")
    parser.add_argument("-o", "--output", default=None, help="the script to write (default: NOTEBOOK with .py)")
    parser.add_argument("--cell", type=int, default=None,
                        help="the %%%%train cell to export, counting every cell from 1 (default: the last)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        result = export_notebook(args.notebook, args.output, args.cell)
    except LabError as err:
        print(f"lightning-lab export: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"lightning-lab export: cannot write the script: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


def kernel_notebook_path() -> Path:
    """The notebook this kernel runs, as Jupyter Server tells it (``JPY_SESSION_NAME``).

    Raises:
        ExportError: the kernel was not started by Jupyter Server 2 for a notebook.
    """
    name = os.environ.get("JPY_SESSION_NAME")
    if not name or not name.endswith(".ipynb"):
        raise ExportError("%export cannot tell which notebook this kernel runs (Jupyter Server sets "
                          "JPY_SESSION_NAME; it is not set here). Run `lightning-lab export NOTEBOOK` in a terminal.")
    return Path(name)


def magic_export(line: str) -> ExportResult | None:
    """``%export [SCRIPT] [--cell N]`` in a kernel: export the notebook as last saved, print the summary.

    Errors are printed as one line (no traceback); returns ``None`` then.
    """
    import shlex

    try:
        words = shlex.split(line)
        cell = None
        if "--cell" in words:
            at = words.index("--cell")
            cell = int(words[at + 1])
            del words[at:at + 2]
        output = words[0] if words else None
        result = export_notebook(kernel_notebook_path(), output, cell)
    except (LabError, OSError) as err:
        print(f"%export: {err}", file=sys.stderr)
        return None
    except (ValueError, IndexError):
        print("%export: usage: %export [SCRIPT] [--cell N]", file=sys.stderr)
        return None
    print(result.summary() + "\n(the notebook as last saved: save it first to export your latest edits)")
    return result


def _choose_train_cell(cells: list[Cell], number: int | None, label: str) -> Cell | None:
    trains = [c for c in cells if c.train is not None]
    if number is None:
        return trains[-1] if trains else None
    chosen = next((c for c in trains if c.number == number), None)
    if chosen is None:
        which = f"the %%train cells are {_numbers([c.number for c in trains])}" if trains else "it has no %%train cell"
        raise ExportError(f"cell {number}: not a %%train cell of {label}; {which} (cells count from 1, markdown "
                          "cells included).")
    return chosen


def _statements_before(cells: list[Cell], target: Cell | None) -> tuple[list[Statement], list[DroppedLine]]:
    """The statements the slice may use (everything above the target), and earlier trainings left out."""
    statements: list[Statement] = []
    earlier: list[DroppedLine] = []
    for c in cells:
        if target is not None and c.number >= target.number:
            break
        if c.train is not None:  # an earlier %%train: its body is ordinary code, its training is not repeated
            statements.extend(c.train.body)
            earlier.append(DroppedLine(c.number, 1, f"%%train {c.train.line}".rstrip()))
        statements.extend(c.statements)
    return statements, earlier


def _slice(slicer: Slicer, target: Cell | None) -> tuple[TrainPlan | None, Slice]:
    """What the script keeps: what the %%train cell's main() needs, or (no %%train cell) every code cell."""
    limit = len(slicer.statements)
    if target is None or target.train is None:
        for index in range(limit):
            if not slicer.is_import(index):  # imports stay only if something uses them
                slicer.keep_root(index, deferred_at=limit)
        return None, slicer.finish(limit)
    plan = plan_train(target.train, slicer, limit)
    for helper in HELPERS:  # main() reuses the notebook's own `from lightning_lab import Trainer`
        j = slicer.definition(helper, limit)
        if j is not None and provides_helper(slicer.statements[j].node, helper):
            slicer.need(helper, limit, target.number)
    for name in plan.needs:
        slicer.need(name, limit, target.number)
    return plan, slicer.finish(limit)


def _description(plan: TrainPlan | None, label: str) -> str:
    if plan is None:
        return ""
    return f"Train {plan.model_class or plan.model} as cell {plan.cell} (%%train) of {label} did."


def _dropped_lines(cells: list[Cell], target: Cell | None, earlier_training: list[DroppedLine],
                   kept: list[Statement]) -> list[DroppedLine]:
    """Every magic/shell line up to the target cell (and earlier trainings), in cell and line order."""
    lines = [line for c in cells if target is None or c.number <= target.number for line in c.magics]
    lines += earlier_training
    for line in lines:  # `%time x = f()` says "statement kept" only if the script keeps x = f()
        if line.unwrapped:
            line.unwrapped = any(s.cell == line.cell and (line.text.startswith("%%") or s.line <= line.line <= s.end_line)
                                 for s in kept)
    return sorted(lines, key=lambda d: (d.cell, d.line))


def _bound_below(cells: list[Cell], target: Cell | None) -> dict[str, int]:
    """Names first bound in the cells from the target on, with that cell (to say "defined later")."""
    found: dict[str, int] = {}
    for c in cells:
        if target is None or c.number < target.number:
            continue
        for statement in [*(c.train.body if c.train is not None else []), *c.statements]:
            try:
                binds = analyze(statement.node).binds
            except RecursionError:  # only a hint is lost
                continue
            for name in binds:
                found.setdefault(name, c.number)
    return found


def _left_out(cells: list[Cell], target: Cell | None, kept: list[int], dropped_lines: list[DroppedLine],
              plan: TrainPlan | None) -> tuple[list[int], list[str]]:
    """The code cells left out, and the header's list: each dropped line and each cell left out."""
    dropped_cells: list[int] = []
    entries = [(d.cell, d.line, d.describe()) for d in dropped_lines]
    entries += [(d.cell, d.line, f"cell {d.cell}, line {d.line}: {d.text.strip().splitlines()[0]}  (unused by main())")
                for d in (plan.dropped_body if plan else [])]
    for c in cells:
        if c.kind != "code" or not c.source.strip() or c.number in kept:
            continue
        dropped_cells.append(c.number)
        after = target is not None and c.number > target.number
        code = c.statements or (c.train.body if c.train is not None else [])
        if after or code:
            first = _source_line(c, code[0]) if code else c.first_line
            first = first if len(first) <= 60 else first[:57] + "..."
            why = "after the %%train cell" if after else "not needed to train"
            entries.append((c.number, 0, f"cell {c.number}: {first}  ({why})"))
    entries.sort()
    return dropped_cells, [text for *_, text in entries]


def _source_line(cell: Cell, statement: Statement) -> str:
    """The line a statement starts on, as the user wrote it (IPython's rewriting undone)."""
    lines = cell.source.splitlines()
    if 0 < statement.line <= len(lines) and lines[statement.line - 1].strip():
        return lines[statement.line - 1].strip()
    return statement.text.strip().splitlines()[0]


def _header(label: str, target: Cell | None, left_out: list[str], output: Path | None, today: date) -> list[str]:
    run = f"python {output.name}" if output is not None else "python SCRIPT.py"
    if target is not None:
        lines = [
            f"# Training script exported from {label} by lightning-lab on {today.isoformat()}.",
            "#",
            f"# It holds what the %%train cell (cell {target.number}) needs, in notebook order (top to bottom,",
            "# whatever order the cells last ran in), and main() below trains as that cell did; its options",
            f"# default to the notebook's values: `{run} --help` lists them.",
        ]
    else:
        lines = [
            f"# Script exported from {label} by lightning-lab on {today.isoformat()}.",
            "#",
            "# Every code cell, in notebook order (top to bottom, whatever order the cells last ran in),",
            "# without IPython magics and shell lines (the notebook has no %%train cell).",
        ]
    if left_out:
        lines += ["#", "# Left out:"] + [f"#   {entry}" for entry in left_out]
    return lines


def _check_compiles(script: str, label: str) -> None:
    """A last guard: the exporter never writes a script Python cannot compile."""
    try:
        compile(script, label, "exec", dont_inherit=True)
    except SyntaxError as err:
        lines = script.splitlines()
        bad = lines[err.lineno - 1].strip() if err.lineno and err.lineno <= len(lines) else ""
        raise ExportError(f"the script exported from {label} would not compile: {err.msg} at `{bad}` (code that "
                          "only IPython accepts, such as a top-level `await`?). Rewrite that line as plain "
                          "Python.") from None


def _output_path(notebook: Any, output: str | os.PathLike[str] | None) -> Path | None:
    if output is not None:
        return Path(output)
    if isinstance(notebook, Mapping):
        return None
    return Path(notebook).with_suffix(".py")


def _write_atomic(path: Path, text: str, notebook: Any) -> None:
    if not isinstance(notebook, Mapping) and path.resolve() == Path(notebook).resolve():
        raise ExportError(f"{path}: the script would overwrite the notebook; choose another output path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _numbers(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers) if numbers else "none"
