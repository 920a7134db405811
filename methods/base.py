"""The contract every PEFT method implements, and the one registry of methods.

A method is a typed config (a frozen dataclass), an exact parameter count computed from shapes, and a
``build`` that returns the module to inject. Where the module goes is the method's ``placement``:

- ``Placement.LINEAR``: the module is an *output transform* of a linear site,
  ``y_site <- module(x, y_site)``, where ``x`` is the projection's input and ``y_site`` its output
  columns for that site. LoRA adds ``s * B A x``; a serial bottleneck adapter adds ``up(act(down(y)))``.
  Transforms on one site run in increasing ``stage`` (additive deltas, then adapters on their sum).
- ``Placement.ATTENTION``: the module is attached to a block's attention module and consulted by
  autopeft's attention function: ``module.key_value(attention_mask)`` gives the prefix key/values.
- ``Placement.INPUT``: a model-level module (site ``input``; the entry's layers are ignored) whose
  ``forward()`` gives (P, d) virtual-token embeddings prepended to the input embeddings
  (``autopeft.peft.prompting``); nothing else in the model or the trainer knows about them.
- ``Placement.NORM``: an output transform, as for LINEAR, of a block's norm (sites ``ln_attn``, ``ln_mlp``).

Optional module members the injector honours: ``bind(base, site)`` (receives the frozen module it acts
on: the projection, the norm, or the input embeddings), ``captures = "attention" | "mlp"`` with
``capture(x)`` (receives the input of the block's attention / MLP sublayer on every forward, e.g. for a
parallel adapter or a gate), and ``folded_tensors()`` / ``fold()`` (what the adapter file stores instead of
the training-time parameters, e.g. a prefix reparameterisation MLP folded into plain key/values).

Everything else (freezing, counting, saving, removal) is derived by the injector from these.

Where a method's code lives: two modules, so that what only needs configs and counts starts without torch.

- ``methods/<name>.py`` is *the method*: its typed config, its exact parameter count, its catalogue entry
  (summary, placement, stage, sites, identity at init) and the class registered here. It imports no torch:
  ``autopeft methods``, the search-space DSL (``autopeft spaces``, ``autopeft space check``) and plan
  counting read only this half.
- ``methods/modules/<name>.py`` (``autopeft.methods.modules``) holds its ``nn.Module`` s: plain torch
  modules built from shapes and numbers. The method's ``build`` (and ``merge``, ``link``) import it on first
  use, with an ordinary ``import`` statement inside the function.

The dependency runs one way, method -> module: a module file never imports its method file (its modules
take plain values; AdaLoRA's, which share a schedule, read the config object by attribute), so the lazy
import hides no cycle (``tests/test_architecture.py`` counts imports inside functions too).
``tests/test_startup.py`` checks that ``autopeft methods`` and the space commands import no torch.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, get_args, get_origin, get_type_hints

from autopeft.core.errors import UserError

if TYPE_CHECKING:
    import torch.nn as nn
    from torch import Tensor

    from autopeft.core.arch import LinearSite, ModelArch


class Placement(enum.Enum):
    LINEAR = "linear"
    ATTENTION = "attention"
    INPUT = "input"
    NORM = "norm"


class Method(Protocol):
    name: ClassVar[str]
    summary: ClassVar[str]
    placement: ClassVar[Placement]
    stage: ClassVar[int]
    config_cls: ClassVar[type]
    #: sites a plan may name for this method; ``None`` = every linear site of the family (LINEAR only)
    sites: ClassVar[tuple[str, ...] | None]
    #: whether a freshly injected instance leaves the model's outputs unchanged (checked by the suite)
    identity_at_init: ClassVar[bool]

    def num_params(self, config: Any, arch: ModelArch, site: LinearSite | None) -> int: ...

    def build(self, config: Any, arch: ModelArch, site: LinearSite | None) -> nn.Module: ...

    # Optional members (looked up with getattr; absent = the default answer):
    # - ``merge(module, weight, bias) -> (weight, bias) | None``: fold a built module into its site's
    #   fp32 (d_out, d_in) weight and (d_out,) bias (see :func:`merge_into`); default: not mergeable.
    # - ``link(modules)``: called once after injection with all of the plan's modules of this method,
    #   for state shared across sites (AdaLoRA's global rank budget); default: nothing to share.


def merges(method: Method) -> bool:
    """Whether the method can fold its modules into the base weights (``autopeft methods``: merges)."""
    return callable(getattr(method, "merge", None))


def merge_into(method: Method, module: nn.Module, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(W', b')`` such that ``W' x + b'`` equals ``module`` applied to ``W x + b``; None = not mergeable.

    Input transforms (``transform_input``, e.g. (IA)^3 on ``down``) are folded on the full weight before
    any output transform of the projection; output transforms get their site's columns, in stage order.
    """
    merge = getattr(method, "merge", None)
    return None if merge is None else merge(module, weight, bias)


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
