"""The contract every PEFT method implements, and the one registry of methods.

A method is a typed config (a frozen dataclass), an exact parameter count computed from shapes, and a
``build`` that returns the module to inject. Where the module goes is the method's ``placement``:

- ``Placement.LINEAR``: the module is an *output transform* of a linear site,
  ``y_site <- module(x, y_site)``, where ``x`` is the projection's input and ``y_site`` its output
  columns for that site. LoRA adds ``s * B A x``; a serial bottleneck adapter adds ``up(act(down(y)))``.
  Transforms on one site run in increasing ``stage`` (additive deltas, then adapters on their sum).
- ``Placement.ATTENTION``: the module is attached to a block's attention module and consulted by
  autopeft's attention function (prefix key/values).

Everything else (freezing, counting, saving, removal) is derived by the injector from these.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, get_args, get_origin, get_type_hints

import torch.nn as nn

from autopeft.arch import LinearSite, ModelArch
from autopeft.errors import UserError


class Placement(enum.Enum):
    LINEAR = "linear"
    ATTENTION = "attention"


class Method(Protocol):
    name: ClassVar[str]
    summary: ClassVar[str]
    placement: ClassVar[Placement]
    stage: ClassVar[int]
    config_cls: ClassVar[type]
    #: sites a plan may name for this method; ``None`` = every linear site of the family
    sites: ClassVar[tuple[str, ...] | None]
    #: whether a freshly injected instance leaves the model's outputs unchanged (checked by the suite)
    identity_at_init: ClassVar[bool]

    def num_params(self, config: Any, arch: ModelArch, site: LinearSite | None) -> int: ...

    def build(self, config: Any, arch: ModelArch, site: LinearSite | None) -> nn.Module: ...


REGISTRY: dict[str, Method] = {}


def register(method_cls: type) -> type:
    """Class decorator: instantiate the method and add it to :data:`REGISTRY` under its ``name``."""
    instance = method_cls()
    if instance.name in REGISTRY:
        raise ValueError(f"method '{instance.name}' registered twice")
    REGISTRY[instance.name] = instance
    return method_cls


def get_method(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown method '{name}'; available: {', '.join(sorted(REGISTRY))}") from None


def make_config(method: Method, values: dict[str, Any]) -> Any:
    """Build a method's typed config from plain values, with a clear error for unknown/ill-typed keys."""
    cls = method.config_cls
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(
            f"method '{method.name}' has no option {', '.join(map(repr, unknown))}; "
            f"options: {', '.join(fields) or '(none)'}"
        )
    hints = get_type_hints(cls)
    coerced = {}
    for key, value in values.items():
        coerced[key] = _coerce(method.name, key, hints[key], value)
    try:
        return cls(**coerced)
    except (TypeError, ValueError) as exc:
        raise UserError(f"method '{method.name}': {exc}") from None


def _coerce(method: str, key: str, hint: Any, value: Any) -> Any:
    origin = get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif origin is Literal:
        if value in get_args(hint):
            return value
        raise UserError(
            f"method '{method}': {key}={value!r} is not allowed; choose one of {list(get_args(hint))}"
        )
    else:
        return value
    raise UserError(f"method '{method}': {key}={value!r} must be of type {getattr(hint, '__name__', hint)}")


def positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class NoConfig:
    """For methods without options."""
