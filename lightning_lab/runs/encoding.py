"""``metrics.jsonl`` lines: one compact JSON object per record, written in bulk.

Every training step queues a record, so encoding is on the hot path of every run (the flusher
thread holds the GIL while it encodes). The common case — consecutive records with the same
string keys and plain finite ``int``/``float`` values — is formatted for a whole run of such
records with one ``%`` on a repeated template; anything else (strings, ``None``, tensors,
non-finite floats, nested values) goes through :mod:`json`. Both produce the same JSON: floats
as Python's shortest round-tripping ``repr``, except ``time``, written with millisecond
resolution (``%.3f``: with up to 14 digits, ``%`` takes a fast exact path; 16 digits cost twice
as much per record), and ``NaN``/``Infinity`` as the tokens Python's :mod:`json` reads back.
"""

from __future__ import annotations

import json
import math
import os
from itertools import chain
from typing import Any

_PLAIN_TYPES = (str, int, float, bool, type(None))
_NUMBERS = frozenset((int, float))  # exact types: bool and numpy scalars take the json path
_INT_KEYS = frozenset(("step", "epoch"))
_TEMPLATES: dict[tuple[Any, ...], str | None] = {}
_MAX_TEMPLATES = 256  # distinct key sets remembered; more are encoded one by one


def encode_records(records: list[dict[str, Any]]) -> str:
    """The ``metrics.jsonl`` lines of ``records``, in order, each ending in a newline."""
    out = []
    start, count = 0, len(records)
    while start < count:
        keys = tuple(records[start])
        end = start + 1
        while end < count and tuple(records[end]) == keys:
            end += 1
        out.append(_encode_same_keys(records[start:end], keys))
        start = end
    return "".join(out)


def encode_record(record: dict[str, Any]) -> str:
    """One record as a JSON line through :mod:`json` (any value type; tensors become numbers)."""
    for value in record.values():
        if type(value) not in _PLAIN_TYPES:
            record = {str(k): v if type(v) in _PLAIN_TYPES else _to_plain(k, v) for k, v in record.items()}
            break
    if _C_ENCODE is not None:  # json's own C encoder, built once (JSONEncoder.encode rebuilds it per call)
        return "".join(_C_ENCODE(record, 0)) + "\n"
    return _ENCODER.encode(record) + "\n"


def _encode_same_keys(records: list[dict[str, Any]], keys: tuple[Any, ...]) -> str:
    template = _template(keys)
    if template is not None:
        values = tuple(chain.from_iterable(r.values() for r in records))
        if set(map(type, values)) <= _NUMBERS:
            try:
                finite = math.isfinite(math.fsum(values))
            except OverflowError:  # an int too large for a float
                finite = False
            if finite:
                return (template * len(records)) % values
    return "".join(map(encode_record, records))


def _template(keys: tuple[Any, ...]) -> str | None:
    template = _TEMPLATES.get(keys, "")
    if template != "":
        return template
    template = None
    if all(type(k) is str for k in keys):
        fields = (json.dumps(k).replace("%", "%%") + (":%.3f" if k == "time" else ":%r") for k in keys)
        template = "{" + ",".join(fields) + "}\n"
    if len(_TEMPLATES) < _MAX_TEMPLATES:
        _TEMPLATES[keys] = template
    return template


def _to_plain(key: str, value: Any) -> Any:
    if hasattr(value, "item"):  # 0-dim tensors, numpy scalars
        try:
            return int(value) if key in _INT_KEYS else float(value)
        except (TypeError, ValueError, RuntimeError):
            pass  # e.g. a tensor with several elements: let the fallback write a list
    return value


def _json_fallback(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_json_fallback)
# The same encoding as _ENCODER (compact separators, NaN/Infinity tokens, ASCII, the same fallback),
# without the per-call set-up. No circular-reference check: records are flat.
_C_ENCODE = (None if json.encoder.c_make_encoder is None else json.encoder.c_make_encoder(
    None, _json_fallback, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True))
