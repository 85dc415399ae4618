"""Reading a notebook into top-level statements, each cell read by IPython's own input transformer.

A code cell goes through ``TransformerManager().transform_cell`` (so ``%``, ``%%``, ``!`` and
``x = !cmd`` mean exactly what they mean in IPython), then through :mod:`ast`. Magic and shell
lines become :class:`DroppedLine` records (the script's header lists them); ``%time``/``%%time`` and
``%%capture`` are unwrapped (their statements stay); a ``%%train`` cell becomes a
:class:`TrainMagic` with its option line and body. Nothing is executed.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_lab.export.errors import ExportError

#: Magics whose argument (line) or body (cell) is ordinary code that runs in the namespace.
UNWRAPPED_LINE_MAGICS = frozenset({"time"})
UNWRAPPED_CELL_MAGICS = frozenset({"time", "capture"})
_IPYTHON_CALLS = frozenset({"run_line_magic", "run_cell_magic", "system", "getoutput"})


@dataclass
class DroppedLine:
    """A ``%``/``!`` line (or a ``%%`` cell) that the script leaves out.

    ``unwrapped`` is true for ``%time``-like magics: only the magic goes, the statement stays.
    """

    cell: int
    line: int
    text: str
    unwrapped: bool = False

    def describe(self) -> str:
        """``cell 4, line 2: !pip install x`` — how the header and the CLI list it."""
        note = "  (magic removed, statement kept)" if self.unwrapped else ""
        return f"cell {self.cell}, line {self.line}: {self.text}{note}"


@dataclass
class Statement:
    """One top-level statement of a cell, as the script would contain it.

    Attributes:
        cell: The cell number (from 1, markdown cells included).
        line: The line in the cell where the statement (or its first decorator) starts.
        end_line: The line in the cell where it ends.
        text: Its source with magics unwrapped or removed; begins at column 0.
        node: ``text`` parsed; positions in it are relative to ``text``.
        comments: Comment lines directly above it in the cell (kept with it).
        blank_before: Blank lines between it and what precedes it in the cell.
        problem: Why it cannot run in a plain script (raised only if the slice needs it).
    """

    cell: int
    line: int
    end_line: int
    text: str
    node: ast.stmt
    comments: str = ""
    blank_before: int = 0
    problem: str | None = None

    def replaced(self, edits: list[tuple[ast.AST, str]]) -> Statement:
        """This statement with the source of some of its nodes (nodes of ``self.node``) replaced."""
        src = _Source(self.text)
        spans = [(src.offset(n.lineno, n.col_offset), src.offset(n.end_lineno or n.lineno, n.end_col_offset or 0), new)
                 for n, new in edits]
        text = self.text
        for a, b, new in sorted(spans, key=lambda span: span[0], reverse=True):
            text = text[:a] + new + text[b:]
        return Statement(self.cell, self.line, self.end_line, text, ast.parse(text).body[0], self.comments,
                         self.blank_before, self.problem)


@dataclass
class TrainMagic:
    """A ``%%train`` cell: its option line and its body."""

    cell: int
    line: str
    body: list[Statement]


@dataclass
class Cell:
    """A notebook cell after parsing; ``statements`` is empty for markdown and magic-only cells."""

    number: int
    kind: str
    source: str
    statements: list[Statement] = field(default_factory=list)
    magics: list[DroppedLine] = field(default_factory=list)
    train: TrainMagic | None = None

    @property
    def first_line(self) -> str:
        """The first non-blank line of the cell (how the header names a cell it leaves out)."""
        for line in self.source.splitlines():
            if line.strip():
                return line.strip()
        return ""


def load_notebook(notebook: str | Path | Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], str]:
    """The cells of a notebook file (any nbformat version) or of an already loaded notebook dict.

    Returns:
        ``(cells, label)``: the raw cells and how messages name the notebook.

    Raises:
        ExportError: the file is missing, is not a notebook, or is not a Python notebook.
    """
    if isinstance(notebook, Mapping):
        nb, label = notebook, "notebook"
    else:
        import nbformat

        path = Path(notebook)
        label = path.name
        if not path.is_file():
            raise ExportError(f"{path}: no such notebook. Give the path of an .ipynb file.")
        try:
            nb = nbformat.read(str(path), as_version=4)
        except Exception as err:  # nbformat raises many types for a damaged file
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ExportError(f"{path} is not a notebook Jupyter can read: {first}") from err
    metadata = nb.get("metadata") or {}
    language = (metadata.get("kernelspec") or {}).get("language") or (metadata.get("language_info") or {}).get("name")
    if language and str(language).lower() not in ("python", "python3"):
        raise ExportError(f"{label} is a {language} notebook; only Python notebooks export to a training script.")
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise ExportError(f"{label} has no list of cells; is it a Jupyter notebook (nbformat 4)?")
    return cells, label


def parse_cells(raw_cells: list[Mapping[str, Any]]) -> list[Cell]:
    """Every cell, numbered from 1 (markdown included); code cells split into statements and magics.

    Raises:
        ExportError: a code cell does not parse (the message gives the cell, the line and its text).
    """
    cells = []
    for number, raw in enumerate(raw_cells, start=1):
        if not isinstance(raw, Mapping):
            raise ExportError(f"cell {number}: not a notebook cell ({type(raw).__name__}); is the file a notebook?")
        source = raw.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source or "")
        cell = Cell(number, str(raw.get("cell_type", "code")), source)
        if cell.kind == "code" and source.strip():
            cell.statements, cell.magics, cell.train = parse_code(source, number)
        cells.append(cell)
    return cells


def parse_code(source: str, cell: int, first_line: int = 1,
               cell_magics: bool = True) -> tuple[list[Statement], list[DroppedLine], TrainMagic | None]:
    """A cell's (or a magic body's) statements, magic lines and ``%%train`` part.

    Args:
        source: The code as the user wrote it.
        cell: The cell number, for messages.
        first_line: The cell line that ``source`` starts on.
        cell_magics: Whether a leading ``%%magic`` is recognised (not inside a magic's body).
    """
    text = _normalize(_transform(source, cell))
    tree = _parse(text, cell, first_line)
    if cell_magics and len(tree.body) == 1:
        call = magic_call(tree.body[0])
        if call is not None and call[0] == "run_cell_magic":
            return _cell_magic(call[1], call[2], call[3], cell, first_line)
    src = _Source(text)
    statements: list[Statement] = []
    magics: list[DroppedLine] = []
    previous_end = 0
    for stmt in tree.body:
        start = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
        comments, blank = src.comments_above(start, previous_end)
        previous_end = stmt.end_lineno or stmt.lineno
        line = first_line + start - 1
        call = magic_call(stmt)
        if call is not None:
            kind, name, arg, _ = call
            if kind == "run_line_magic" and name in UNWRAPPED_LINE_MAGICS:
                magics.append(DroppedLine(cell, line, f"%{name} {arg.strip()}", unwrapped=True))
                inner, more, _ = parse_code(textwrap.dedent(arg).strip() + "\n", cell, line, cell_magics=False)
                if inner:
                    inner[0].comments, inner[0].blank_before = comments, blank
                statements.extend(inner)
                magics.extend(more)
            else:
                magics.append(DroppedLine(cell, line, magic_text(kind, name, arg)))
            continue
        statements.append(_statement(src, stmt, start, cell, first_line, comments, blank, magics))
    return statements, magics, None


def magic_call(node: ast.AST) -> tuple[str, str, str, str] | None:
    """``(method, name, arg, body)`` if ``node`` is (an expression statement of) a call IPython wrote.

    ``get_ipython().run_line_magic('time', 'x = 1')`` gives ``("run_line_magic", "time", "x = 1", "")``;
    ``get_ipython().system('ls')`` gives ``("system", "", "ls", "")``.
    """
    if isinstance(node, ast.Expr):
        node = node.value
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in _IPYTHON_CALLS and isinstance(node.func.value, ast.Call)
            and isinstance(node.func.value.func, ast.Name) and node.func.value.func.id == "get_ipython"):
        return None
    args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else "" for a in node.args]
    method = node.func.attr
    if method in ("system", "getoutput"):
        return method, "", args[0] if args else "", ""
    args += ["", "", ""]
    return method, args[0], args[1], args[2] if method == "run_cell_magic" else ""


def magic_text(method: str, name: str, arg: str) -> str:
    """The line as the user typed it: ``!ls``, ``%matplotlib inline``, ``%%bash``, ``obj?``."""
    if method in ("system", "getoutput"):
        return f"!{arg}"
    if method == "run_cell_magic":
        return f"%%{name} {arg}".rstrip()
    if name in ("pinfo", "pinfo2"):
        return f"{arg}{'?' if name == 'pinfo' else '??'}"
    return f"%{name} {arg}".rstrip()


def _cell_magic(name: str, line: str, body: str, cell: int,
                first_line: int) -> tuple[list[Statement], list[DroppedLine], TrainMagic | None]:
    if name == "train":
        statements, magics, _ = parse_code(body, cell, first_line + 1, cell_magics=False)
        return [], magics, TrainMagic(cell, line, statements)
    if name in UNWRAPPED_CELL_MAGICS:
        statements, magics, _ = parse_code(body, cell, first_line + 1, cell_magics=False)
        magic = DroppedLine(cell, first_line, magic_text("run_cell_magic", name, line), unwrapped=True)
        return statements, [magic, *magics], None
    return [], [DroppedLine(cell, first_line, magic_text("run_cell_magic", name, line))], None


def _statement(src: _Source, stmt: ast.stmt, start: int, cell: int, first_line: int, comments: str,
               blank: int, magics: list[DroppedLine]) -> Statement:
    """The statement's text (trailing comment kept), with magics nested in its blocks handled."""
    begin = src.offset(start, 0 if start != stmt.lineno else stmt.col_offset)
    end = src.offset(stmt.end_lineno or stmt.lineno, stmt.end_col_offset or 0)
    end += len(src.trailing_comment(stmt.end_lineno or stmt.lineno, end))
    edits: list[tuple[int, int, str]] = []
    problem = None
    handled: set[int] = set()
    for node in ast.walk(stmt):
        if id(node) in handled or node is stmt:
            continue
        call = magic_call(node) if isinstance(node, (ast.Expr, ast.Call)) else None
        if call is None:
            continue
        kind, name, arg, _ = call
        line = first_line + node.lineno - 1
        text = magic_text(kind, name, arg)
        unwrap = kind == "run_line_magic" and name in UNWRAPPED_LINE_MAGICS
        magics.append(DroppedLine(cell, line, text, unwrapped=unwrap))
        a = src.offset(node.lineno, node.col_offset)
        b = src.offset(node.end_lineno or node.lineno, node.end_col_offset or 0)
        if isinstance(node, ast.Expr):  # a statement inside a block: keep the block valid
            handled.add(id(node.value))
            edits.append((a, b, textwrap.dedent(arg).strip() if unwrap else f"pass  # {text}"))
        elif unwrap:
            edits.append((a, b, f"({arg.strip()})"))
        elif problem is None:
            what = "a shell command" if kind in ("system", "getoutput") else f"the IPython magic %{name}"
            problem = (f"cell {cell}, line {line}: `{text}` runs {what} inside code the script needs; a plain-Python "
                       "script cannot. Replace it with Python (for example subprocess.run) or give it its own line.")
    text = src.text[begin:end]
    for a, b, new in sorted(edits, reverse=True):
        text = text[: a - begin] + new + text[b - begin:]
    try:
        node = ast.parse(text).body[0]
    except SyntaxError:  # an unwrapped %time argument that is not an expression
        node, problem = stmt, problem or f"cell {cell}, line {first_line + stmt.lineno - 1}: a %time inside this " \
                                         "statement wraps code that is not an expression; give it its own line."
    return Statement(cell, first_line + start - 1, first_line + (stmt.end_lineno or stmt.lineno) - 1, text, node,
                     comments, blank, problem)


_TRANSFORMER: Any = None


def _transform(source: str, cell: int) -> str:
    global _TRANSFORMER
    if _TRANSFORMER is None:
        from IPython.core.inputtransformer2 import TransformerManager

        _TRANSFORMER = TransformerManager()
    try:
        return _TRANSFORMER.transform_cell(source)
    except Exception as err:  # IPython's transformer can fail on broken tokens
        raise ExportError(f"cell {cell}: IPython cannot read this cell ({type(err).__name__}: {err}). "
                          "Fix the cell (or clear it) and export again.") from err


def _parse(text: str, cell: int, first_line: int) -> ast.Module:
    try:
        return ast.parse(text)
    except SyntaxError as err:
        lines = text.splitlines()
        number = err.lineno or 1
        bad = lines[number - 1].strip() if 0 < number <= len(lines) else ""
        shown = f": `{bad}`" if bad else ""
        raise ExportError(f"cell {cell}, line {first_line + number - 1}: {err.msg}{shown}. "
                          "Fix the cell (or clear it) and export again.") from None
    except (ValueError, RecursionError, MemoryError) as err:
        raise ExportError(f"cell {cell}: Python cannot parse this cell ({err}).") from None


def _normalize(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _Source:
    """Offsets into a cell's text; ``ast`` columns are UTF-8 byte offsets, strings index characters."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = re.findall(r"[^\n]*\n|[^\n]+$", text)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1] if lineno <= len(self.lines) else ""
        return self.starts[lineno - 1] + len(line.encode()[:col].decode(errors="ignore"))

    def trailing_comment(self, lineno: int, end: int) -> str:
        rest = self.text[end:self.starts[lineno]].rstrip("\n")
        return rest.rstrip() if rest.strip().startswith("#") else ""

    def comments_above(self, start: int, previous_end: int) -> tuple[str, int]:
        """The comment block directly above line ``start`` (after ``previous_end``) and the blank lines above it."""
        first = start
        while first - 1 > previous_end and self.lines[first - 2].strip().startswith("#"):
            first -= 1
        blank = 0
        while first - 1 - blank > previous_end and not self.lines[first - 2 - blank].strip():
            blank += 1
        comments = "".join(self.lines[first - 1:start - 1])
        return textwrap.dedent(comments), blank
