"""Dependency slicing: from the names a target needs, back to the minimal top-level statements.

Statements are numbered in notebook order. A name needed at position ``p`` resolves to the latest
statement before ``p`` that binds it (notebook order, whatever order the cells last ran in). A
kept statement needs what it reads at its own position; what its functions read is needed where
the function is needed (that is when it runs). Then, until nothing changes: statements that may
mutate a kept object before its last use (``model.load_state_dict(...)``, ``x[0] = ...``, an
in-place call, a call of a notebook function that mutates its argument) and every seed call are
kept too, with what they read.
"""

from __future__ import annotations

import ast
import bisect
from dataclasses import dataclass, field

from lightning_lab.export.errors import ExportError
from lightning_lab.export.names import BUILTIN_NAMES, Facts, analyze
from lightning_lab.export.parse import Statement

#: Calls on an imported module that change global state (kept when the module is kept).
_CONFIG_PREFIXES = ("set_", "use_", "manual_seed", "seed", "filterwarnings", "simplefilter", "enable", "disable")

#: Names IPython provides that a script can import (the slice adds the import).
IPYTHON_IMPORTS = {"display": "from IPython.display import display"}

_IPYTHON_ONLY = {"get_ipython", "In", "Out", "_ih", "_oh", "_dh", "exit", "quit"}
_TRAIN_NAMES = {"_run", "_trainer", "_training_thread"}


@dataclass
class Slice:
    """The statements a script keeps.

    Attributes:
        kept: Indices of kept statements, in notebook order.
        aliases: For each kept import statement, the names it must still bind.
        extra_imports: Import lines the script adds for IPython names it uses (``display``).
    """

    kept: list[int] = field(default_factory=list)
    aliases: dict[int, set[str]] = field(default_factory=dict)
    extra_imports: list[str] = field(default_factory=list)


class Slicer:
    """Resolves needs against a notebook's statements; call :meth:`need`/:meth:`keep_root`, then :meth:`finish`."""

    def __init__(self, statements: list[Statement], later: dict[str, int] | None = None) -> None:
        """``later`` maps names bound only below the slice's statements to their first cell (for hints)."""
        self.statements = statements
        self._later = later or {}
        self.facts: list[Facts] = [_analyze(s) for s in statements]
        self._defs: dict[str, list[int]] = {}
        self._stars: list[int] = []
        for index, facts in enumerate(self.facts):
            for name, _ in facts.calls:  # f() binds what f assigns through `global`
                j = self.definition(name, index)
                if j is not None:
                    facts.binds |= self.facts[j].global_writes
            for name in facts.binds | facts.deletes:
                self._defs.setdefault(name, []).append(index)
            if facts.star:
                self._stars.append(index)
        self._kept: set[int] = set()
        self._aliases: dict[int, set[str]] = {}
        self._served: dict[tuple[int, str], int] = {}
        self._deferred_at: dict[int, int] = {}
        self._todo: list[tuple[str, int, int]] = []
        self._extra: list[str] = []

    def definition(self, name: str, before: int) -> int | None:
        """The index of the latest statement before position ``before`` that binds (or deletes) ``name``."""
        indices = self._defs.get(name)
        if not indices:
            return None
        at = bisect.bisect_left(indices, before)
        return indices[at - 1] if at else None

    def is_import(self, index: int) -> bool:
        """Whether statement ``index`` is an ``import``/``from ... import``."""
        return isinstance(self.statements[index].node, (ast.Import, ast.ImportFrom))

    def need(self, name: str, at: int, cell: int) -> None:
        """``name`` must be defined at position ``at`` (read by code of ``cell``)."""
        self._todo.append((name, at, cell))
        self._drain()

    def keep_root(self, index: int, deferred_at: int | None = None) -> None:
        """Keep statement ``index`` for its own sake (a kept cell, a mutation, a seed call)."""
        self._keep(index, None, index if deferred_at is None else deferred_at)
        self._drain()

    def finish(self, limit: int) -> Slice:
        """Add seed calls and mutations of kept objects before position ``limit``; the final slice."""
        for index in range(limit):
            if self.facts[index].seeds and index not in self._kept:
                self.keep_root(index)
        changed = True
        while changed:
            changed = False
            for index in range(limit):
                if index not in self._kept and self._mutates_kept(index):
                    self.keep_root(index)
                    changed = True
        return Slice(sorted(self._kept), {i: set(a) for i, a in self._aliases.items()}, list(self._extra))

    def _mutates_kept(self, index: int) -> bool:
        facts = self.facts[index]
        for root, hows in facts.mutates.items():
            j = self._kept_definition(root, index)
            if j is None:
                continue
            if self.is_import(j) and not any(h == "=" or h.startswith(_CONFIG_PREFIXES) for h in hows):
                continue  # torch.save(...), np.random.rand(...): a module function, not a change of the module
            return True
        for function, roots in facts.calls:
            k = self.definition(function, index)
            if k is not None and self.facts[k].mutates_params and any(
                    self._kept_definition(r, index) is not None for r in roots):
                return True
        return False

    def _kept_definition(self, name: str, index: int) -> int | None:
        """The kept definition of ``name`` in force at ``index`` if the kept code uses it after ``index``."""
        j = self.definition(name, index)
        if j is None or j not in self._kept or self._served.get((j, name), -1) <= index:
            return None
        return j

    def _keep(self, index: int, name: str | None, at: int) -> None:
        statement, facts = self.statements[index], self.facts[index]
        if name is not None and self.is_import(index):
            self._aliases.setdefault(index, set()).add(name)
        if index not in self._kept:
            if statement.problem:
                raise ExportError(statement.problem)
            self._kept.add(index)
            self._todo.extend((read, index, statement.cell) for read in facts.reads)
        if facts.deferred and self._deferred_at.get(index, -1) < at:
            self._deferred_at[index] = at
            self._todo.extend((read, at, statement.cell) for read in facts.deferred)

    def _drain(self) -> None:
        while self._todo:
            name, at, cell = self._todo.pop()
            index = self.definition(name, at)
            if index is None:
                self._unresolved(name, at, cell)
                continue
            if name in self.facts[index].deletes and name not in self.facts[index].binds:
                raise ExportError(
                    f"cell {cell}: {name!r} is deleted (`del {name}`) in cell {self.statements[index].cell} before "
                    f"cell {cell} uses it, in notebook order. Remove the `del`, or define {name!r} again after it."
                )
            self._served[(index, name)] = max(self._served.get((index, name), -1), at)
            self._keep(index, name, at)

    def _unresolved(self, name: str, at: int, cell: int) -> None:
        if name in BUILTIN_NAMES:
            return
        stars = [i for i in self._stars if i < at]
        if stars:
            self._keep(stars[-1], None, at)
            return
        if name in IPYTHON_IMPORTS:
            if IPYTHON_IMPORTS[name] not in self._extra:
                self._extra.append(IPYTHON_IMPORTS[name])
            return
        later = [self.statements[i].cell for i in self._defs.get(name, [])] + (
            [self._later[name]] if name in self._later else [])
        if name in _TRAIN_NAMES:
            hint = f"{name} is set by %%train in the notebook; a script has no such variable. Use the value directly."
        elif name in _IPYTHON_ONLY:
            hint = f"{name} exists only inside IPython; a plain-Python script cannot use it."
        elif later:
            hint = (f"It is defined later, in cell {later[0]}; the script follows notebook "
                    "order (top to bottom), so move that cell above.")
        else:
            hint = "Define or import it in an earlier cell."
        raise ExportError(f"cell {cell}: name {name!r} is used but never defined or imported before it. {hint}")


def _analyze(statement: Statement) -> Facts:
    try:
        return analyze(statement.node)
    except RecursionError:
        raise ExportError(f"cell {statement.cell}, line {statement.line}: this statement is nested too deeply to "
                          "analyse; split it into smaller statements.") from None
