"""Grid points: ``--grid KEY=V1,V2`` / ``--param KEY=V`` parsed into values, expanded, and named."""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightning_lab.errors import ConfigurationError

_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
_MAX_ID = 96
_OPEN, _CLOSE = "([{", ")]}"


@dataclass(frozen=True)
class Point:
    """One grid point: the values injected into the notebook and the id its files are named by.

    Attributes:
        id: A file-name-safe, human-readable name made from the values (``lr=0.001_hidden=32``);
            the same values always give the same id, so a re-run finds its earlier result.
        params: Every injected value, grid keys first (in ``--grid`` order), then fixed ``--param``s.
        grid_keys: The keys that vary across the grid (the table and plot label points by these).
    """

    id: str
    params: dict[str, Any]
    grid_keys: tuple[str, ...]

    @property
    def label(self) -> str:
        """``lr=0.001 hidden=32``: the grid values, for progress lines and plot ticks."""
        keys = self.grid_keys or tuple(self.params)
        return " ".join(f"{k}={format_value(self.params[k])}" for k in keys) or "(notebook defaults)"


def parse_value(text: str) -> Any:
    """A command-line value as Python would read it, else the text itself.

    ``"1e-3"`` → ``0.001``, ``"64"`` → ``64``, ``"True"`` → ``True``, ``"[32, 32]"`` → ``[32, 32]``,
    ``"'a b'"`` → ``"a b"``, ``"adam"`` → ``"adam"``. Only JSON-like values (what papermill can
    inject) are taken as literals; a tuple becomes a list.
    """
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    try:
        return _json_like(value)
    except TypeError:
        return text


def _json_like(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_like(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_like(v) for k, v in value.items()}
    raise TypeError(type(value).__name__)


def format_value(value: Any) -> str:
    """The text a value is shown and written (results.csv) as: strings bare, the rest as Python reprs."""
    return value if isinstance(value, str) else repr(value)


def split_values(text: str) -> list[str]:
    """Split ``V1,V2`` at the commas that are not inside brackets or quotes (``[32,32],[64]`` is two values)."""
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for i, char in enumerate(text):
        if quote:
            if char == quote and text[i - 1] != "\\":
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _split_option(option: str, spec: str, example: str) -> tuple[str, str]:
    key, sep, values = spec.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise ConfigurationError(
            f"{option} {spec!r}: expected KEY=VALUE with KEY a Python name (e.g. {option} {example})."
        )
    return key, values


def parse_grid_options(grid: Sequence[str] = (), params: Sequence[str] = ()) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """Parse repeated ``--grid KEY=V1,V2`` and ``--param KEY=V`` options.

    Returns:
        ``(grid, params)``: the grid as ``{key: [values]}`` and the fixed values as ``{key: value}``.

    Raises:
        ConfigurationError: An option is not ``KEY=VALUE``, lists no value, or names a key twice.
    """
    parsed_grid: dict[str, list[Any]] = {}
    for spec in grid:
        key, text = _split_option("--grid", spec, "lr=1e-3,3e-3")
        values = split_values(text)
        if any(v == "" for v in values):
            raise ConfigurationError(
                f"--grid {spec!r}: empty value; list the values separated by commas (e.g. --grid {key}=1e-3,3e-3)."
            )
        if key in parsed_grid:
            raise ConfigurationError(f"--grid {key}= is given twice; list all its values in one --grid {key}=V1,V2.")
        parsed_grid[key] = [parse_value(v) for v in values]
    parsed_params: dict[str, Any] = {}
    for spec in params:
        key, text = _split_option("--param", spec, "max_epochs=1")
        if key in parsed_params or key in parsed_grid:
            raise ConfigurationError(f"--param {key}= is given twice or also in --grid; give each key once.")
        parsed_params[key] = parse_value(text)
    return parsed_grid, parsed_params


def expand(grid: Mapping[str, Sequence[Any]], params: Mapping[str, Any] | None = None) -> list[Point]:
    """Every combination of the grid's values (the last key varies fastest), with the fixed params added.

    Args:
        grid: ``{key: [values]}``; an empty grid is one point (the fixed params alone).
        params: Values injected into every point.

    Raises:
        ConfigurationError: A key is not a Python name, has no values, lists a value twice, or is
            both in the grid and in params; a value cannot be injected by papermill.
    """
    params = dict(params or {})
    for key, values in grid.items():
        if not str(key).isidentifier():
            raise ConfigurationError(f"grid key {key!r} is not a Python name; papermill assigns it as a variable.")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigurationError(
                f"grid[{key!r}] must be a non-empty list of values, got {values!r} (e.g. grid={{{key!r}: [1, 2]}})."
            )
        seen = [_canonical(v) for v in values]
        if len(set(seen)) != len(seen):
            raise ConfigurationError(f"grid {key!r} lists a value twice: {list(values)!r}.")
        if key in params:
            raise ConfigurationError(f"{key!r} is both a grid key and a fixed parameter; give it once.")
    for key in params:
        if not str(key).isidentifier():
            raise ConfigurationError(f"parameter {key!r} is not a Python name; papermill assigns it as a variable.")
    keys = tuple(grid)
    points = []
    for combination in itertools.product(*(grid[k] for k in keys)):
        values = {**dict(zip(keys, combination, strict=True)), **params}
        points.append(Point(id=point_id(values), params=values, grid_keys=keys))
    return points


def _canonical(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"value {value!r} cannot be injected by papermill: use numbers, strings, booleans, None, lists or dicts."
        ) from exc


def point_id(params: Mapping[str, Any]) -> str:
    """``lr=0.001_hidden=32``: readable, safe as a file name, and the same for the same values.

    Values whose text had to be changed to be file-name safe, and very long ids, get a short hash
    of the exact values appended, so two different points never share an id.
    """
    raw = "_".join(f"{k}={format_value(v)}" for k, v in params.items()) or "defaults"
    safe = _SAFE.sub("-", raw).strip("-") or "point"
    if safe != raw or len(safe) > _MAX_ID:
        digest = hashlib.sha1(_canonical(dict(params)).encode()).hexdigest()[:8]
        safe = f"{safe[:_MAX_ID]}-{digest}"
    return safe
