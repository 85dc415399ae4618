"""The ``%%train`` cell read statically: its options, its model and data, its hyperparameters.

The option line is read like ``%%train`` reads it; ``$name``/``{expr}`` references (papermill
parameters) become Python expressions over the notebook's variables. The model and the data come
from :mod:`lightning_lab.export.discover`. Every literal keyword argument of the model/data
constructors becomes a CLI option, and the body reads it from the parsed arguments.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from lightning_lab.export.discover import Kinds, assignments, find_data, find_model, notebook_assignments
from lightning_lab.export.errors import ExportError
from lightning_lab.export.names import analyze, call_name
from lightning_lab.export.parse import Statement, TrainMagic
from lightning_lab.export.slicing import Slicer


@dataclass
class Option:
    """One ``argparse`` option of the script's ``main``.

    Attributes:
        flag: ``--max-epochs``.
        dest: ``max_epochs`` (the attribute of the parsed arguments).
        default: Python source of the default: ``5``, ``max_epochs`` (a notebook variable), ``'q'``.
        type: Python source of the type converter (``int``, ``float``, ``_interval``), or ``None``.
        help: The ``--help`` text.
        hyper: Whether it comes from a constructor keyword (a hyperparameter) rather than the Trainer.
        action: ``store_true`` or ``argparse.BooleanOptionalAction`` for flags.
        nargs: ``+`` for a list or tuple literal.
        trainer_arg: The ``Trainer`` keyword it feeds.
    """

    flag: str
    dest: str
    default: str
    type: str | None
    help: str
    hyper: bool = False
    action: str | None = None
    nargs: str | None = None
    trainer_arg: str | None = None


@dataclass
class TrainPlan:
    """What ``main()`` does: the options, the body, and which variables are the model and the data."""

    cell: int
    line: str
    options: list[Option]
    body: list[Statement]
    model: str
    model_class: str = ""
    datamodule: str | None = None
    train: str | None = None
    val: str | None = None
    needs: list[str] = field(default_factory=list)
    body_binds: set[str] = field(default_factory=set)
    global_names: list[str] = field(default_factory=list)
    dropped_body: list[Statement] = field(default_factory=list)
    args_name: str = "args"


# (flag, dest, type, default, help, Trainer keyword): %%train's options, with %%train's defaults.
TRAINER_OPTIONS: list[tuple[str, str, str | None, str, str, str]] = [
    ("--max-epochs", "max_epochs", "int", "None", "epochs to train; None: until --max-steps", "max_epochs"),
    ("--max-steps", "max_steps", "int", "-1", "optimizer steps to train; -1: no limit", "max_steps"),
    ("--devices", "devices", None, '"auto"', "devices (processes) to train on", "devices"),
    ("--accelerator", "accelerator", None, '"auto"', "auto, cpu or cuda", "accelerator"),
    ("--precision", "precision", None, '"32-true"', "32-true, bf16-mixed or 16-mixed", "precision"),
    ("--val-check-interval", "val_check_interval", "_interval", "1.0",
     "validate every fraction of an epoch (0.5) or every N batches (50)", "val_check_interval"),
    ("--accumulate", "accumulate", "int", "1", "batches per optimizer step", "accumulate_grad_batches"),
    ("--clip", "clip", "float", "None", "clip gradients to this total norm", "gradient_clip_val"),
    ("--seed", "seed", "int", "None", "seed every RNG before the model is built", "seed"),
    ("--name", "name", None, "None", "run name; None: the model's class name", "name"),
    ("--root", "root", None, "None", "run root; None: $LIGHTNING_LAB_ROOT or ./lab_runs", "root_dir"),
]
_MAGIC_ONLY = ("--backend", "--nodes", "--partition", "--time", "--model", "--data", "--val")


class _LineParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit; the exporter reports it instead
        raise ExportError(message)


def plan_train(train: TrainMagic, slicer: Slicer, limit: int) -> TrainPlan:
    """Read a ``%%train`` cell against the notebook's statements before position ``limit``.

    Raises:
        ExportError: an unreadable option line, or a model/data that cannot be told from the code.
    """
    values = _parse_line(train)
    for statement in train.body:
        if statement.problem:
            raise ExportError(statement.problem)
    options: list[Option] = []
    needs: list[str] = []
    for flag, dest, type_, default, help_, trainer_arg in TRAINER_OPTIONS:
        raw = values.get(dest)
        if raw is not None:
            default, names = _option_default(raw, type_, flag, train.cell)
            needs += names
        options.append(Option(flag, dest, default, type_, help_, trainer_arg=trainer_arg))
    options.append(Option("--resume", "resume", "False", None, "continue the last run of this name from its last.ckpt",
                          action="store_true"))
    body = list(train.body)
    assigned = assignments(body)
    notebook = notebook_assignments(slicer, limit)
    kinds = Kinds(slicer, limit)
    model = find_model(values.get("model"), assigned, notebook, kinds, slicer, limit, train.cell)
    data = find_data(values.get("data"), values.get("val"), assigned, notebook, kinds, slicer, limit, train.cell)
    plan = TrainPlan(train.cell, train.line, options, body, model, **data)
    made = (assigned.get(model) or notebook.get(model) or (None, None))[1]
    plan.model_class = call_name(made.func) if isinstance(made, ast.Call) else ""
    body_names = {n.id for s in body for n in ast.walk(s.node) if isinstance(n, ast.Name)}
    plan.args_name = "cli_args" if "args" in body_names else "args"
    needs += _hyperparameters(plan, assigned, slicer, limit)
    _body_names(plan, needs)
    return plan


def _parse_line(train: TrainMagic) -> dict[str, str]:
    parser = _LineParser(prog="%%train", add_help=False)
    for flag, dest, *_ in TRAINER_OPTIONS:
        parser.add_argument(flag, dest=dest)
    for flag in _MAGIC_ONLY:
        parser.add_argument(flag)
    for flag in ("--resume", "--no-widget", "--background", "--profile", "--find-lr"):
        parser.add_argument(flag, action="store_true")
    try:
        words = _split_line(train.line)
        return {k: v for k, v in vars(parser.parse_args(words)).items() if isinstance(v, str)}
    except (ExportError, ValueError) as err:
        raise ExportError(f"cell {train.cell}: the %%train line `{train.line.strip()}` cannot be read: {err}. "
                          "Options are those of %%train (`%%train --help` lists them).") from None


def _split_line(line: str) -> list[str]:
    """The line's words, as IPython sees them after expanding ``{expr}`` (which may hold spaces)."""
    groups: list[str] = []
    protected, i = "", 0
    while i < len(line):
        if line[i] == "{" and not line.startswith("{{", i):
            j = _closing_brace(line, i)
            groups.append(line[i:j + 1])
            protected += f"\x00{len(groups) - 1}\x00"
            i = j + 1
        else:
            protected += line[i]
            i += 1
    restore = lambda word: re.sub(r"\x00(\d+)\x00", lambda m: groups[int(m.group(1))], word)  # noqa: E731
    return [restore(word) for word in shlex.split(protected)]


def _closing_brace(text: str, start: int) -> int:
    """The index of the ``}`` that closes the ``{`` at ``start`` (``len(text)`` when none does)."""
    depth = 0
    for j in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return j
    return len(text)


def _option_default(raw: str, type_: str | None, flag: str, cell: int) -> tuple[str, list[str]]:
    """Python source of an option's default and the notebook names it reads.

    ``5`` → ``5``; ``$max_epochs`` or ``{max_epochs}`` → ``max_epochs``; ``run-{lr}`` → ``f'run-{lr}'``.
    """
    pieces = _expand(raw, cell, flag)
    exprs = [p for kind, p in pieces if kind == "expr"]
    if not exprs:
        text = "".join(p for _, p in pieces)
        if type_ in ("int", "float"):
            try:
                value = int(text) if type_ == "int" else float(text)
            except ValueError:
                raise ExportError(f"cell {cell}: %%train {flag} {raw}: not a number.") from None
            return repr(value), []
        if type_ == "_interval":
            try:
                float(text)
            except ValueError:
                raise ExportError(f"cell {cell}: %%train {flag} {raw}: not a number.") from None
            return text, []
        return _py_str(text), []
    names = [n.id for e in exprs for n in ast.walk(ast.parse(e, mode="eval")) if isinstance(n, ast.Name)]
    if len(pieces) == 1:
        return exprs[0], names
    inner = "".join("{" + p + "}" if kind == "expr" else p.replace("{", "{{").replace("}", "}}") for kind, p in pieces)
    return "f" + _py_str(inner), names


def _py_str(text: str) -> str:
    """A double-quoted Python string literal (JSON's escapes are Python's too)."""
    return json.dumps(text, ensure_ascii=False)


def _expand(raw: str, cell: int, flag: str) -> list[tuple[str, str]]:
    """IPython's ``$name`` / ``{expr}`` expansion as ``[("text" | "expr", piece), ...]``."""
    pieces: list[tuple[str, str]] = []
    i = 0
    while i < len(raw):
        if raw.startswith("$$", i):
            pieces.append(("text", "$"))
            i += 2
        elif raw[i] == "$" and (match := re.match(r"[A-Za-z_][\w.]*", raw[i + 1:])):
            pieces.append(("expr", match.group(0).rstrip(".")))
            i += 1 + len(match.group(0).rstrip("."))
        elif raw.startswith("{{", i) or raw.startswith("}}", i):
            pieces.append(("text", raw[i]))
            i += 2
        elif raw[i] == "{":
            j = _closing_brace(raw, i)
            expr = raw[i + 1:j].strip()
            try:
                ast.parse(expr, mode="eval")
            except SyntaxError:
                raise ExportError(
                    f"cell {cell}: %%train {flag} {raw}: `{{{expr}}}` is not a Python expression.") from None
            pieces.append(("expr", expr))
            i = j + 1
        else:
            pieces.append(("text", raw[i]))
            i += 1
    merged: list[tuple[str, str]] = []
    for kind, piece in pieces:
        if merged and kind == "text" and merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + piece)
        else:
            merged.append((kind, piece))
    return merged


def _hyperparameters(plan: TrainPlan, assigned: dict, slicer: Slicer, limit: int) -> list[str]:
    """Literal keyword arguments of the model/data constructors become options; the body reads ``args.<dest>``.

    Returns the notebook variables the new defaults read (``hidden`` for ``Net(hidden=hidden)``).
    """
    by_dest = {o.dest: o for o in plan.options}
    edits: dict[int, dict[int, tuple[ast.AST, str]]] = {}
    needs: list[str] = []
    for var in (plan.model, plan.datamodule, plan.train, plan.val):
        if var is None or var not in assigned or not isinstance(assigned[var][1], ast.Call):
            continue
        stmt, call = assigned[var]
        for keyword in call.keywords:
            if keyword.arg is None:
                continue
            found = _literal_source(keyword.value, stmt, assigned, slicer, limit)
            if found is None:
                continue
            default, value, body_stmt = found
            option = _hyper_option(var, keyword.arg, default, value, by_dest, call_name(call.func) or var)
            if option.dest not in by_dest:
                by_dest[option.dest] = option
                plan.options.append(option)
                if default.isidentifier() and default not in ("True", "False", "None"):
                    needs.append(default)
            replacement = f"{plan.args_name}.{option.dest}"
            replacement = f"tuple({replacement})" if isinstance(value, tuple) else replacement
            if body_stmt is not None:  # `lr = 1e-3` in the body, then `Net(lr=lr)`: the body reads args.lr
                target = body_stmt.node.value  # type: ignore[attr-defined]
                edits.setdefault(id(body_stmt), {})[id(target)] = (target, replacement)
            else:
                edits.setdefault(id(stmt), {})[id(keyword.value)] = (keyword.value, replacement)
    plan.body = [s.replaced(list(edits[id(s)].values())) if id(s) in edits else s for s in plan.body]
    return needs


def _literal_source(node: ast.expr, stmt: Statement, assigned: dict, slicer: Slicer,
                    limit: int) -> tuple[str, Any, Statement | None] | None:
    """``(default source, value, body statement)`` when ``node`` is a literal, or names one."""
    value = _literal(node)
    if value is not _NOT_LITERAL:
        return ast.get_source_segment(stmt.text, node) or repr(value), value, None
    if not isinstance(node, ast.Name):
        return None
    if node.id in assigned:
        body_stmt, body_value = assigned[node.id]
        if body_value is None or body_stmt is stmt or not isinstance(body_stmt.node, ast.Assign):
            return None
        value = _literal(body_value)
        if value is _NOT_LITERAL:
            return None
        return ast.get_source_segment(body_stmt.text, body_value) or repr(value), value, body_stmt
    index = slicer.definition(node.id, limit)
    if index is None:
        return None
    definition = slicer.statements[index].node
    if (isinstance(definition, ast.Assign) and len(definition.targets) == 1
            and isinstance(definition.targets[0], ast.Name) and definition.targets[0].id == node.id):
        value = _literal(definition.value)
        if value is not _NOT_LITERAL:
            return node.id, value, None  # the default is the notebook's variable (a papermill parameter)
    return None


_NOT_LITERAL = object()


def _literal(node: ast.expr) -> Any:
    """The value of an int/float/str/bool literal, or a list/tuple of one such type; else ``_NOT_LITERAL``."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and value and len({type(v) for v in value}) == 1 \
            and isinstance(value[0], (int, float, str)) and not isinstance(value[0], bool):
        return value
    return _NOT_LITERAL


def _hyper_option(var: str, keyword: str, default: str, value: Any, by_dest: dict[str, Option],
                  callee: str) -> Option:
    element = value[0] if isinstance(value, (list, tuple)) else value
    type_ = None if isinstance(element, (bool, str)) else type(element).__name__
    option = Option(f"--{keyword.replace('_', '-')}", keyword, default, type_, f"{keyword} of {callee}()", hyper=True,
                    action="argparse.BooleanOptionalAction" if isinstance(value, bool) else None,
                    nargs="+" if isinstance(value, (list, tuple)) else None)
    existing = by_dest.get(keyword)
    if keyword in ("help", "h") or (existing is not None and (existing.default, existing.type, existing.nargs)
                                    != (option.default, option.type, option.nargs)):
        dest = f"{var}_{keyword}".lstrip("_")
        option.flag, option.dest = f"--{dest.replace('_', '-')}", dest
    elif existing is not None:
        return existing
    return option


def _body_names(plan: TrainPlan, needs: list[str]) -> None:
    """The module-level names ``main`` reads; body names it must declare ``global``; unused body assignments.

    A body that assigns a name it also reads from the notebook (``hidden = hidden * 2``) would raise
    UnboundLocalError inside a function, so that name is declared ``global``. An assignment to a
    name nothing reads afterwards would be an unused local (pyflakes F841): a call is kept as a bare
    call, anything else is left out.
    """
    bound: set[str] = {plan.args_name}
    facts = [analyze(s.node) for s in plan.body]
    all_binds = set().union(*(f.binds for f in facts)) if facts else set()
    for f in facts:
        needs.extend(r for r in f.reads if r not in bound)
        needs.extend(r for r in f.deferred if r not in all_binds | bound)
        bound |= f.binds
    fit_vars = [v for v in (plan.model, plan.datamodule, plan.train, plan.val) if v is not None]
    needs.extend(v for v in fit_vars if v not in all_binds)
    plan.global_names = sorted(all_binds & set(needs))
    kept: list[Statement] = []
    for i, stmt in enumerate(plan.body):
        later = set(fit_vars) | set(plan.global_names)
        for g in facts[i + 1:]:
            later |= set(g.reads) | g.deferred
        node = stmt.node
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id not in later and not node.targets[0].id.startswith("_")):
            if any(isinstance(n, ast.Call) for n in ast.walk(node.value)):
                src = ast.get_source_segment(stmt.text, node.value) or ast.unparse(node.value)
                kept.append(Statement(stmt.cell, stmt.line, stmt.end_line, src, ast.parse(src).body[0],
                                      stmt.comments, stmt.blank_before))
            else:
                plan.dropped_body.append(stmt)
            continue
        kept.append(stmt)
    plan.body = kept
    plan.body_binds = all_binds
    plan.needs = list(dict.fromkeys(needs))
