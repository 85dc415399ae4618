"""Writing the script: a header, the kept statements in notebook order, then ``main()`` and its argparse CLI.

The output is deterministic for a given notebook and date: statements keep the user's own text
(comments included), imports are pruned to the names the script uses, cells are separated by one
blank line (two around ``def``/``class``), and ``main`` rebuilds what ``%%train`` does.
"""

from __future__ import annotations

import ast
import io
import textwrap
import tokenize
from dataclasses import dataclass

from lightning_lab.export.parse import Statement
from lightning_lab.export.slicing import Slice, Slicer
from lightning_lab.export.train_cell import Option, TrainPlan

_LAB_MODULES = ("lightning_lab", "lightning_lab.engine", "lightning_lab.engine.trainer", "lightning_lab.engine.seed")
#: Names main() uses, with the name used instead when the notebook's code binds them to something else.
HELPERS = {"argparse": "cli_argparse", "Trainer": "LabTrainer", "seed_everything": "lab_seed_everything"}

_INTERVAL = '''def {name}(text):
    """--val-check-interval: 0.5 is a fraction of an epoch, 50 a number of batches."""
    return float(text) if any(c in text for c in ".eE") else int(text)'''


def provides_helper(node: ast.stmt, name: str) -> bool:
    """Whether ``node`` binds ``name`` to what main() means by it (``import argparse``, lightning_lab's Trainer)."""
    if name == "argparse":
        return isinstance(node, ast.Import) and any(a.name == "argparse" and a.asname is None for a in node.names)
    return (isinstance(node, ast.ImportFrom) and not node.level and node.module in _LAB_MODULES
            and any(a.name == name and a.asname in (None, name) for a in node.names))


@dataclass
class _Names:
    """The names the generated code uses, chosen not to clash with the notebook's."""

    argparse: str = "argparse"
    Trainer: str = "Trainer"
    seed_everything: str = "seed_everything"
    main: str = "main"
    interval: str = "_interval"
    parser: str = "parser"
    trainer: str = "trainer"


def render_script(header: list[str], slicer: Slicer, chosen: Slice, plan: TrainPlan | None, limit: int,
                  description: str = "") -> str:
    """The whole script text (ends with one newline)."""
    kept_binds: set[str] = set()
    for index in chosen.kept:
        kept_binds |= chosen.aliases.get(index, set()) if slicer.is_import(index) else slicer.facts[index].binds
    names = _Names()
    own_imports: list[str] = []
    merge: list[str] = []
    if plan is not None:
        taken = kept_binds | plan.body_binds | set(plan.needs)
        _choose_names(names, taken)
        lab: list[str] = []
        for helper, alias in HELPERS.items():
            j = slicer.definition(helper, limit)
            if j is not None and j in chosen.kept and helper in chosen.aliases.get(j, set()) \
                    and provides_helper(slicer.statements[j].node, helper):
                continue  # the notebook already imports it: use that import
            if helper in taken:
                setattr(names, helper, alias)
            if helper == "argparse":
                own_imports.append("import argparse" if names.argparse == "argparse" else f"import argparse as {alias}")
            else:
                lab.append(helper if getattr(names, helper) == helper else f"{helper} as {alias}")
        if lab and any(_is_lab_import(slicer.statements[i].node) for i in chosen.kept) \
                and all(" as " not in n for n in lab):
            merge = lab
        elif lab:
            own_imports.append(f"from lightning_lab import {', '.join(lab)}")
    own_imports += chosen.extra_imports

    if any(slicer.facts[i].star for i in chosen.kept):
        header = [*header, "# ruff: noqa: F405  (names from the star import above cannot be checked)"]
    out = "\n".join(header).rstrip() + "\n"
    if own_imports:
        out += "\n" + "\n".join(own_imports) + "\n"
    out += _body_code(slicer, chosen, merge)
    if plan is not None:
        if any(o.type == "_interval" for o in plan.options):
            out += "\n\n" + _INTERVAL.format(name=names.interval) + "\n"
        out += "\n\n" + _main(plan, names, description) + "\n"
        out += f'\n\nif __name__ == "__main__":\n    {names.main}()\n'
    return out


def _choose_names(names: _Names, taken: set[str]) -> None:
    for field_name, alternative in (("main", "train_main"), ("interval", "_val_check_interval"),
                                    ("parser", "cli_parser"), ("trainer", "lab_trainer")):
        if getattr(names, field_name) in taken:
            setattr(names, field_name, alternative)


def _is_lab_import(node: ast.stmt) -> bool:
    return isinstance(node, ast.ImportFrom) and node.module == "lightning_lab" and not node.level \
        and all(a.name != "*" for a in node.names)


def _body_code(slicer: Slicer, chosen: Slice, merge: list[str]) -> str:
    """The kept statements, cell by cell, in notebook order."""
    out = ""
    previous: int | None = None
    merged = False
    for index in chosen.kept:
        statement = slicer.statements[index]
        text = statement.text
        if slicer.is_import(index):
            extra = merge if (merge and not merged and _is_lab_import(statement.node)) else []
            merged = merged or bool(extra)
            text = _import_text(statement, chosen.aliases.get(index, set()), extra)
        block = statement.comments + text.rstrip() + "\n"
        if previous is None:
            out += "\n" + block
        else:
            out += "\n" * _blank_lines(slicer, previous, index) + block
        previous = index
    return out


def _blank_lines(slicer: Slicer, a: int, b: int) -> int:
    first, second = slicer.statements[a], slicer.statements[b]
    defines = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    around_def = isinstance(first.node, defines) or isinstance(second.node, defines)
    blank = min(second.blank_before, 2) if first.cell == second.cell else 1
    return max(blank, 2) if around_def else blank


def _import_text(statement: Statement, keep: set[str], extra: list[str]) -> str:
    """The import with only the names the script uses (and main()'s lightning_lab names added)."""
    node = statement.node
    assert isinstance(node, (ast.Import, ast.ImportFrom))
    if any(a.name == "*" for a in node.names):  # kept whole; pyflakes cannot see through it (F403)
        return statement.text if "noqa" in statement.text else statement.text.rstrip() + "  # noqa: F403"
    names = [a for a in node.names if (a.asname or a.name.partition(".")[0]) in keep]
    if len(names) == len(node.names) and not extra:
        return statement.text
    names += [ast.alias(name=n) for n in extra if n not in {a.name for a in names}]
    if isinstance(node, ast.Import):
        text = ast.unparse(ast.Import(names=names))
    else:
        text = ast.unparse(ast.ImportFrom(module=node.module, names=names, level=node.level))
        if len(text) > 100:
            head = text.split(" import ")[0]
            text = head + " import (\n" + "".join(f"    {ast.unparse(a)},\n" for a in names) + ")"
    return text


def _main(plan: TrainPlan, names: _Names, description: str) -> str:
    args = plan.args_name
    lines = [f"def {names.main}(argv=None):",
             f'    """Train as the %%train cell (cell {plan.cell}) did; options override the notebook\'s values."""']
    if plan.global_names:
        lines.append(f"    global {', '.join(plan.global_names)}")
    lines.append(f"    {names.parser} = {names.argparse}.ArgumentParser(")
    lines.append(f"        description={_quote(description)},")
    lines.append(f"        formatter_class={names.argparse}.ArgumentDefaultsHelpFormatter,")
    lines.append("    )")
    lines += [_add_argument(o, names) for o in plan.options]
    lines.append(f"    {args} = {names.parser}.parse_args(argv)")
    lines.append("")
    lines.append(f"    if {args}.seed is not None:")
    lines.append(f"        {names.seed_everything}({args}.seed)  # before the model is built, as %%train --seed does")
    for statement in plan.body:
        block = statement.comments + statement.text.rstrip() + "\n"
        lines.append(_indent(block).rstrip("\n"))
    lines.append(f"    {names.trainer} = {names.Trainer}(")
    lines += [f"        {o.trainer_arg}={args}.{o.dest}," for o in plan.options if o.trainer_arg]
    lines.append("    )")
    data = [plan.train] if plan.train else []
    data += [plan.val] if plan.val else []
    data += [f"datamodule={plan.datamodule}"] if plan.datamodule else []
    call = ", ".join([plan.model, *data, f'ckpt_path="last" if {args}.resume else None'])
    lines.append(f"    {names.trainer}.fit({call})")
    lines.append(f"    return {names.trainer}")
    return "\n".join(lines)


def _add_argument(option: Option, names: _Names) -> str:
    """``parser.add_argument(...)``, with ``help=`` on its own line when one line would be long."""
    args = _option_args(option, names)
    line = f"    {names.parser}.add_argument({args})"
    if len(line) <= 110:
        return line
    head, _, help_ = args.rpartition(", help=")
    indent = " " * len(f"    {names.parser}.add_argument(")
    return f"    {names.parser}.add_argument({head},\n{indent}help={help_})"


def _option_args(option: Option, names: _Names) -> str:
    parts = [repr(option.flag).replace("'", '"')]
    if option.action == "store_true":
        parts.append('action="store_true"')
    elif option.action:
        parts.append(f"action={option.action.replace('argparse', names.argparse, 1)}")
    if option.type:
        parts.append(f"type={names.interval if option.type == '_interval' else option.type}")
    if option.nargs:
        parts.append(f'nargs="{option.nargs}"')
    if option.action != "store_true":
        parts.append(f"default={option.default}")
    parts.append(f"help={_quote(option.help.replace('%', '%%'))}")
    return ", ".join(parts)


def _quote(text: str) -> str:
    """A double-quoted Python string literal of ``text``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _indent(block: str) -> str:
    """``block`` indented one level, except lines inside a multi-line string (their text must not change)."""
    inside: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(block).readline):
            if token.type == tokenize.STRING and token.end[0] > token.start[0]:
                inside.update(range(token.start[0] + 1, token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        pass
    lines = block.splitlines(keepends=True)
    return "".join(line if (n in inside or not line.strip()) else textwrap.indent(line, "    ")
                   for n, line in enumerate(lines, start=1))
