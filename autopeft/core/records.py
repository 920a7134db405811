"""Typed dataclasses from JSON records written by autopeft (and possibly edited or damaged by people).

``from_record(TrainConfig, data, source)`` checks every key and value type against the dataclass's
annotations before constructing it, so a hand-edited ``autopeft_config.json`` gives a one-line error
naming the file and the field, not a ``TypeError`` deep inside training.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from autopeft.core.errors import UserError

T = TypeVar("T")


def from_record(cls: type[T], data: Any, source: str) -> T:
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected an object of {cls.__name__} fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields, key=str)
    if unknown:
        raise UserError(f"{source}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(fields))}")
    for key, value in data.items():
        if not _matches(hints[key], value):
            raise UserError(f"{source}: field {key!r} = {value!r} is not a valid {_name(hints[key])}")
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: {exc}") from None


def _matches(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(arg, value) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # richer annotations are checked by the dataclass itself


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
