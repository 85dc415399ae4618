"""Finding the model and the data a ``%%train`` cell means, in the user's namespace."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightning_lab.engine.module import LabDataModule, LabModule
from lightning_lab.errors import LabError


class DiscoveryError(LabError):
    """The cell's model or data could not be found, or could be several things."""


@dataclass
class Found:
    """What ``%%train`` trains: names in the namespace and their values."""

    model_name: str
    model: LabModule
    datamodule: LabDataModule | None = None
    train: Any = None
    val: Any = None
    data_names: tuple[str, ...] = ()


def assigned_names(source: str) -> list[str]:
    """Names bound at the top level of ``source`` (assignments, ``with ... as``, ``for`` targets), in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []

    def add(target: ast.AST) -> None:
        for node in ast.walk(target):
            if isinstance(node, ast.Name) and node.id not in names:
                names.append(node.id)

    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                add(target)
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign, ast.For)):
            add(stmt.target)
        elif isinstance(stmt, ast.With):
            for item in stmt.items:
                if item.optional_vars is not None:
                    add(item.optional_vars)
    return names


def _is_loader(value: Any) -> bool:
    from torch.utils.data import DataLoader

    return isinstance(value, DataLoader)


def _of_type(ns: Mapping[str, Any], names: list[str], check: Any) -> list[str]:
    return [n for n in names if n in ns and not n.startswith("_") and check(ns[n])]


def _user_names(ns: Mapping[str, Any]) -> list[str]:
    hidden = {"In", "Out", "exit", "quit", "get_ipython"}
    return [n for n in ns if not n.startswith("_") and n not in hidden]


def find_model(ns: Mapping[str, Any], body_names: list[str], chosen: str | None) -> tuple[str, LabModule]:
    """The model to train: ``--model NAME``, else the one LabModule the body assigns, else the only one there is.

    Raises:
        DiscoveryError: none, or several candidates; the message names them and the option to use.
    """
    is_model = lambda v: isinstance(v, LabModule)  # noqa: E731
    if chosen is not None:
        if chosen not in ns:
            raise DiscoveryError(f"--model {chosen}: there is no variable {chosen!r} in the notebook's namespace.")
        if not is_model(ns[chosen]):
            raise DiscoveryError(
                f"--model {chosen}: {chosen!r} is a {type(ns[chosen]).__name__}, not a LabModule instance. "
                "Subclass lightning_lab.LabModule and assign an instance, e.g. `model = Classifier()`."
            )
        return chosen, ns[chosen]
    in_body = _of_type(ns, body_names, is_model)
    if len(in_body) == 1:
        return in_body[0], ns[in_body[0]]
    everywhere = _of_type(ns, _user_names(ns), is_model)
    if not in_body and len(everywhere) == 1:
        return everywhere[0], ns[everywhere[0]]
    if not everywhere:
        classes = [n for n in _user_names(ns) if isinstance(ns[n], type) and issubclass(ns[n], LabModule)
                   and ns[n] is not LabModule]
        hint = (f" The namespace defines {', '.join(classes)}: create one in the cell, e.g. `model = {classes[0]}()`."
                if classes else " Define a subclass of lightning_lab.LabModule and create it in the cell.")
        raise DiscoveryError(f"%%train found no model: the cell assigns no LabModule instance.{hint}")
    candidates = in_body if len(in_body) > 1 else everywhere
    raise DiscoveryError(
        f"%%train found several models: {', '.join(candidates)}. Say which to train with --model NAME "
        f"(e.g. `%%train --model {candidates[0]}`), or assign only one LabModule in the cell."
    )


def find_data(ns: Mapping[str, Any], body_names: list[str], data: str | None, val: str | None) -> dict[str, Any]:
    """The data: ``--data``/``--val``, else a LabDataModule, else DataLoaders (the body's first).

    With two DataLoaders and no options, the one whose name mentions val/valid/eval/test is the
    validation loader. Returns ``{"datamodule" | "train": ..., "val": ..., "names": (...)}``.

    Raises:
        DiscoveryError: no data, or loaders that cannot be told apart.
    """
    if data is not None:
        if data not in ns:
            raise DiscoveryError(f"--data {data}: there is no variable {data!r} in the notebook's namespace.")
        value = ns[data]
        if isinstance(value, LabDataModule):
            return {"datamodule": value, "names": (data,)}
        result: dict[str, Any] = {"train": value, "names": (data,)}
        if val is not None:
            result["val"] = _named(ns, val, "--val")
            result["names"] = (data, val)
        return result
    if val is not None:
        raise DiscoveryError("--val needs --data too: name the training data with --data NAME.")
    for scope in (body_names, _user_names(ns)):
        modules = _of_type(ns, scope, lambda v: isinstance(v, LabDataModule))
        if len(modules) == 1:
            return {"datamodule": ns[modules[0]], "names": (modules[0],)}
        if len(modules) > 1:
            raise DiscoveryError(
                f"%%train found several LabDataModules: {', '.join(modules)}. Choose one with --data NAME."
            )
        loaders = _of_type(ns, scope, _is_loader)
        if loaders:
            return _split_loaders(ns, loaders)
    raise DiscoveryError(
        "%%train found no data: assign a LabDataModule or a torch DataLoader (for example "
        "`train_loader = DataLoader(dataset, batch_size=64, shuffle=True)`), or name it with --data NAME."
    )


def _named(ns: Mapping[str, Any], name: str, option: str) -> Any:
    if name not in ns:
        raise DiscoveryError(f"{option} {name}: there is no variable {name!r} in the notebook's namespace.")
    return ns[name]


_VAL_WORDS = ("val", "valid", "eval", "test", "dev")


def _split_loaders(ns: Mapping[str, Any], loaders: list[str]) -> dict[str, Any]:
    if len(loaders) == 1:
        return {"train": ns[loaders[0]], "names": (loaders[0],)}
    vals = [n for n in loaders if any(w in n.lower() for w in _VAL_WORDS)]
    trains = [n for n in loaders if n not in vals]
    if len(loaders) == 2 and len(vals) == 1:
        return {"train": ns[trains[0]], "val": ns[vals[0]], "names": (trains[0], vals[0])}
    raise DiscoveryError(
        f"%%train found several DataLoaders: {', '.join(loaders)}, and cannot tell which trains. Say so with "
        f"--data NAME [--val NAME] (e.g. `%%train --data {loaders[0]} --val {loaders[-1]}`)."
    )
