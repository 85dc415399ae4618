"""What one top-level statement binds, reads, deletes and may mutate: the facts the slicer walks.

Reads are split by *when* they happen. ``reads`` run with the statement (its expressions,
decorators, default arguments, class bodies, comprehensions); ``deferred`` run later, when a
function or lambda it defines is called, so the slicer resolves them where the function is used.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: Names that exist in a plain ``python script.py`` without being defined.
BUILTIN_NAMES = frozenset(dir(builtins)) | {
    "__name__", "__file__", "__doc__", "__builtins__", "__spec__", "__loader__", "__package__", "__annotations__",
}

#: The last part of a call that seeds a random generator (``torch.manual_seed``, ``np.random.seed``, ...).
SEED_CALLS = frozenset({"seed", "manual_seed", "manual_seed_all", "seed_everything", "set_seed"})

#: Methods that only look (display, plot, summarize): calling one is not a mutation of the receiver.
LOOKING_METHODS = frozenset({
    "show", "plot", "imshow", "hist", "scatter", "bar", "barh", "figure", "subplots", "subplot", "title",
    "set_title", "xlabel", "ylabel", "set_xlabel", "set_ylabel", "legend", "grid", "tight_layout", "savefig",
    "colorbar", "axis", "xlim", "ylim", "set_xlim", "set_ylim", "suptitle", "text", "annotate", "close",
    "head", "tail", "describe", "info", "display", "summary", "numel", "size", "item", "tolist", "numpy",
    "keys", "values", "items", "get", "count", "index", "copy", "clone", "state_dict", "parameters",
    "named_parameters", "children", "modules", "named_modules", "dim", "mean", "sum", "std", "var", "max",
    "min", "argmax", "argmin", "all", "any", "nunique", "value_counts", "format", "join", "split",
    "startswith", "endswith", "is_available", "device_count", "isnull", "isna", "unique", "shape",
})

_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


@dataclass
class Facts:
    """The names a top-level statement touches.

    Attributes:
        binds: Names it binds at module level (imports, assignments, ``def``/``class``, loop targets).
        deletes: Names it deletes (``del x``).
        reads: Module-level names it reads while it runs, in order, each once.
        deferred: Module-level names read when a function it defines runs.
        global_writes: For a ``def``: names the function assigns through ``global``.
        mutates: Module-level names whose object it may change, each with how: the methods called on it,
            or ``"="`` for an attribute/item assignment or an in-place function applied to it.
        calls: ``(function, argument roots)`` for each plain call ``f(x, ...)`` at top level.
        mutates_params: For a ``def``: whether the function may change an object passed to it.
        seeds: Whether it calls a seed function.
        star: Whether it is ``from module import *``.
    """

    binds: set[str] = field(default_factory=set)
    deletes: set[str] = field(default_factory=set)
    reads: list[str] = field(default_factory=list)
    deferred: set[str] = field(default_factory=set)
    global_writes: set[str] = field(default_factory=set)
    mutates: dict[str, set[str]] = field(default_factory=dict)
    calls: list[tuple[str, set[str]]] = field(default_factory=list)
    mutates_params: bool = False
    seeds: bool = False
    star: bool = False


def analyze(stmt: ast.stmt) -> Facts:
    """The :class:`Facts` of one top-level statement."""
    facts = Facts()
    _ModuleWalker(facts).visit(stmt)
    facts.mutates, facts.calls = mutation_roots([stmt])
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        params = {a.arg for a in _all_args(stmt.args)}
        roots, _ = mutation_roots(stmt.body)
        facts.mutates_params = bool(roots.keys() & params)
        facts.global_writes = _global_writes(stmt)
    facts.seeds = any(isinstance(n, ast.Call) and call_name(n.func).rpartition(".")[2] in SEED_CALLS
                      for n in _walk_same_scope(stmt))
    return facts


def call_name(func: ast.expr) -> str:
    """``np.random.seed`` for the callee ``np.random.seed``; ``""`` when it is not a dotted name."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return ""
    parts.append(func.id)
    return ".".join(reversed(parts))


def root_name(node: ast.expr) -> str | None:
    """The variable at the start of ``model.net[0].weight`` (``model``), or ``None``."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call, ast.Starred)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def mutation_roots(body: list[ast.stmt]) -> tuple[dict[str, set[str]], list[tuple[str, set[str]]]]:
    """The names whose objects ``body`` may change (with how), and its plain calls ``f(args)`` with the args' roots.

    A method call statement (``model.eval()``, unless the method only looks), an attribute or item
    assignment or deletion (``model.fc.bias = ...``, ``cfg["lr"] = ...``) and an in-place function
    (``nn.init.zeros_(model.fc.bias)``) mutate their root. A loop variable stands for what it iterates
    (``for p in model.parameters(): p.requires_grad = False`` mutates ``model``).
    """
    roots: dict[str, set[str]] = {}
    calls: list[tuple[str, set[str]]] = []

    def mark(names: set[str], how: str) -> None:
        for name in names:
            roots.setdefault(name, set()).add(how)
    aliases: dict[str, set[str]] = {}

    def expand(name: str | None) -> set[str]:
        if name is None:
            return set()
        return aliases.get(name, set()) | {name}

    for node in _walk_same_scope_all(body):
        if isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            sources = {n.id for n in ast.walk(node.iter) if isinstance(n, ast.Name)}
            for target in ast.walk(node.target):
                if isinstance(target, ast.Name):
                    aliases.setdefault(target.id, set()).update(*(expand(s) for s in sources))
        elif isinstance(node, ast.withitem) and isinstance(node.optional_vars, ast.Name):
            aliases.setdefault(node.optional_vars.id, set()).update(expand(root_name(node.context_expr)))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                for part in ast.walk(target):
                    if isinstance(part, (ast.Attribute, ast.Subscript)) and isinstance(part.ctx, (ast.Store, ast.Del)):
                        mark(expand(root_name(part)), "=")
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Attribute) and func.attr not in LOOKING_METHODS:
                mark(expand(root_name(func.value)), func.attr)
            elif isinstance(func, ast.Name):
                args = [*node.value.args, *(k.value for k in node.value.keywords)]
                calls.append((func.id, set().union(*(expand(root_name(a)) for a in args))))
        if isinstance(node, ast.Call):
            last = call_name(node.func).rpartition(".")[2]
            if last.endswith("_") and not last.startswith("_"):  # PyTorch's in-place convention
                for arg in node.args:
                    mark(expand(root_name(arg)), "=")
                if isinstance(node.func, ast.Attribute):  # w.data.normal_(): the receiver changes
                    mark(expand(root_name(node.func.value)), last)
    return roots, calls


class _ModuleWalker(ast.NodeVisitor):
    """Walks module-level code in evaluation order; class bodies and comprehensions have their own locals."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.bound: set[str] = set()
        self.scopes: list[set[str]] = []  # class-body and comprehension locals, innermost last

    def load(self, name: str) -> None:
        if any(name in scope for scope in self.scopes) or name in self.bound or name in self.facts.reads:
            return
        self.facts.reads.append(name)

    def store(self, name: str) -> None:
        if self.scopes:
            self.scopes[-1].add(name)
        else:
            self.bound.add(name)
            self.facts.binds.add(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.load(node.id)
        elif isinstance(node.ctx, ast.Store):
            self.store(node.id)
        elif not self.scopes:
            self.bound.discard(node.id)
            self.facts.deletes.add(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self.load(node.target.id)
        self.visit(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.annotation)
        if node.value is not None or not isinstance(node.target, ast.Name):
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        comprehension_scopes = self.scopes
        self.scopes = [s for s in self.scopes if not getattr(s, "comprehension", False)]
        self.visit(node.target)  # a walrus in a comprehension binds in the enclosing scope
        self.scopes = comprehension_scopes

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                self.facts.star = True
            else:
                self.store(alias.asname or alias.name.partition(".")[0])

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.store(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self.store(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.store(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self.store(node.rest)

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        return

    visit_Nonlocal = visit_Global

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        for decorator in getattr(node, "decorator_list", []):
            self.visit(decorator)
        for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
            self.visit(default)
        if not isinstance(node, ast.Lambda):
            for arg in _all_args(node.args):
                if arg.annotation is not None:
                    self.visit(arg.annotation)
            if node.returns is not None:
                self.visit(node.returns)
        enclosing = set().union(*self.scopes) if self.scopes and not self._in_class() else set()
        self.facts.deferred |= function_globals(node, frozenset(enclosing))
        if not isinstance(node, ast.Lambda):
            self.store(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(expr)
        self.scopes.append(set())
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()
        self.store(node.name)

    def visit_ListComp(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        scope = _ComprehensionScope()
        self.scopes.append(scope)
        for i, gen in enumerate(node.generators):
            if i:
                self.visit(gen.iter)
            self.visit(gen.target)
            for cond in gen.ifs:
                self.visit(cond)
        for part in ([node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]):
            self.visit(part)
        self.scopes.pop()

    visit_SetComp = visit_GeneratorExp = visit_DictComp = visit_ListComp

    def _in_class(self) -> bool:
        return bool(self.scopes) and not getattr(self.scopes[-1], "comprehension", False)


class _ComprehensionScope(set):
    """The locals of a comprehension (a walrus inside it binds in the enclosing scope)."""

    comprehension = True


def function_globals(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda,
                     enclosing: frozenset[str] = frozenset()) -> set[str]:
    """Module-level names a function (and the functions nested in it) reads when it runs."""
    local = {a.arg for a in _all_args(node.args)}
    declared_global: set[str] = set()
    loads: set[str] = set()
    nested: list[ast.AST] = []
    body = [node.body] if isinstance(node, ast.Lambda) else node.body
    for child in _walk_same_scope_all(body, nested):
        if isinstance(child, ast.Name):
            (loads if isinstance(child.ctx, ast.Load) else local).add(child.id)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            local.update(a.asname or a.name.partition(".")[0] for a in child.names if a.name != "*")
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            local.add(child.name)
        elif isinstance(child, ast.ExceptHandler) and child.name:
            local.add(child.name)
        elif isinstance(child, (ast.MatchAs, ast.MatchStar)) and child.name:
            local.add(child.name)
        elif isinstance(child, ast.Global):
            declared_global.update(child.names)
        elif isinstance(child, ast.Nonlocal):
            loads.update(n for n in child.names if n not in enclosing)
    local -= declared_global
    visible = enclosing | local
    found = {n for n in loads if n not in visible}
    for inner in nested:
        if isinstance(inner, _FUNCTIONS):
            found |= function_globals(inner, frozenset(visible))
        elif isinstance(inner, ast.ClassDef):  # a class inside a function: its methods see the function's names
            found |= _class_in_function_globals(inner, frozenset(visible))
    return found


def _class_in_function_globals(node: ast.ClassDef, visible: frozenset[str]) -> set[str]:
    found: set[str] = set()
    class_local: set[str] = set()
    nested: list[ast.AST] = []
    for child in _walk_same_scope_all(node.body, nested):
        if isinstance(child, ast.Name):
            if isinstance(child.ctx, ast.Load):
                if child.id not in visible and child.id not in class_local:
                    found.add(child.id)
            else:
                class_local.add(child.id)
    for inner in nested:
        found |= (function_globals(inner, visible) if isinstance(inner, _FUNCTIONS)
                  else _class_in_function_globals(inner, visible))
    return found


def _global_writes(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    declared = {n for child in _walk_same_scope_all(node.body) if isinstance(child, ast.Global) for n in child.names}
    stored = {c.id for c in _walk_same_scope_all(node.body)
              if isinstance(c, ast.Name) and isinstance(c.ctx, ast.Store)}
    return declared & stored


def _all_args(args: ast.arguments) -> list[ast.arg]:
    out = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    out += [a for a in (args.vararg, args.kwarg) if a is not None]
    return out


def _walk_same_scope(stmt: ast.stmt) -> list[ast.AST]:
    """Nodes of a top-level statement that run with it (function and lambda bodies excluded)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return list(_walk_same_scope_all(stmt.decorator_list))
    return list(_walk_same_scope_all([stmt]))


def _walk_same_scope_all(nodes: list[Any], nested: list[ast.AST] | None = None) -> Iterator[ast.AST]:
    """Every node under ``nodes`` except the insides of nested functions, lambdas and classes.

    A nested function's decorators, defaults and annotations run in this scope and are included;
    the nested scopes themselves are appended to ``nested`` for the caller to analyse.
    """
    stack = list(reversed(nodes))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
            if nested is not None:
                nested.append(node)
            if isinstance(node, ast.ClassDef):
                outer = [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]
            else:
                args = node.args
                outer = [*args.defaults, *(d for d in args.kw_defaults if d is not None),
                         *getattr(node, "decorator_list", [])]
                if not isinstance(node, ast.Lambda):
                    outer += [a.annotation for a in _all_args(args) if a.annotation is not None]
                    outer += [node.returns] if node.returns is not None else []
            stack.extend(reversed(outer))
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))
