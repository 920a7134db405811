"""Typed search-space nodes: a fixed value, an integer or float range, a choice, a conditional.

Every range has explicit inclusive bounds, like Optuna's distributions:

- ``Int(low, high, log, step)``: the integers ``low, low + step, ..., high`` (``high - low`` is a multiple
  of ``step``); with ``log`` they are drawn log-uniformly (``step`` must then be 1);
- ``Float(low, high, log, step)``: the reals in ``[low, high]``, or the grid ``low + k * step`` with a step;
- ``Choice(options)``: one of a finite list of scalars;
- ``Fixed(value)``: not a parameter at all (a known method is a single point of the space);
- ``Conditional(branches)``: a choice of a *branch* (a method, or ``none``) whose own nodes are only
  sampled when that branch is chosen;
- ``Tie(source, factor)``: an option that is not a node of its own but ``factor`` times another option
  of the same method (``alpha: 2r``: LoRA's scale alpha/r is then 2 at every rank). A branch keeps its
  ties apart from its nodes (``Conditional.ties``): sampling, sizes, repair and the Optuna/Ray parameters
  see only the free options, and :meth:`Conditional.completed` adds the tied values where a plan is built.

Besides sampling, the search needs to reason about values without an Optuna trial: how many values a node
has (size of the space), which values are smaller (budget repair shrinks sizes and ranks), and whether a
value belongs to the node (a Ray sample or an enqueued trial must map back into the space).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Scalar = bool | int | float | str | None
MAX_ENUMERATION = 100_000  # above this many values, a node is treated as "too many to list"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Fixed:
    value: Any

    def count(self) -> int | None:
        return 1

    def values(self) -> tuple[Any, ...]:
        return (self.value,)

    def contains(self, value: Any) -> bool:
        return value == self.value and type(value) is type(self.value)


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    log: bool = False
    step: int = 1

    def count(self) -> int | None:
        return (self.high - self.low) // self.step + 1

    def values(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1, self.step))

    def contains(self, value: Any) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high
                and (value - self.low) % self.step == 0)


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def count(self) -> int | None:
        """``None`` for a continuous range (uncountable)."""
        return None if self.step is None else int(round((self.high - self.low) / self.step)) + 1

    def values(self) -> tuple[float, ...]:
        if self.step is None:
            raise ValueError("a continuous range has no list of values")
        return tuple(self.low + k * self.step for k in range(self.count() or 0))

    def contains(self, value: Any) -> bool:
        if not is_number(value) or not self.low - 1e-12 <= value <= self.high + 1e-12:
            return False
        if self.step is None:
            return True
        k = (value - self.low) / self.step
        return abs(k - round(k)) < 1e-6


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]

    def count(self) -> int | None:
        return len(self.options)

    def values(self) -> tuple[Any, ...]:
        return self.options

    def contains(self, value: Any) -> bool:
        return any(value == o and type(value) is type(o) for o in self.options)


Node = Fixed | Int | Float | Choice


#: a tied option: a factor, then the name of another option of the same method (``2r``, ``0.5 * size``)
TIE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*\*?\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")


@dataclass(frozen=True)
class Tie:
    """``factor`` times the option ``source`` of the same method (``alpha: 2r``)."""

    source: str
    factor: int | float

    def value(self, values: Mapping[str, Any]) -> Any:
        return self.factor * values[self.source]


def parse_tie(written: Any, key: str, options: Mapping[str, Any], kind: str | None) -> Tie | None:
    """``key: 2r`` among a method's written ``options`` (``kind``: the option's type, "int" or "float" for a
    number); None when ``written`` is no tie of a numeric option, ``ValueError`` with the reason when it is
    but cannot hold."""
    match = TIE.match(written) if isinstance(written, str) and kind in ("int", "float") else None
    if match is None:
        return None
    text, integer = written, kind == "int"
    factor_text, source = match.groups()
    factor: int | float = float(factor_text) if "." in factor_text else int(factor_text)
    if source == key or source not in options:
        raise ValueError(f"{text!r} ties {key} to option {source!r}, which this method's options do not set "
                         f"({'itself' if source == key else 'not given'}); write e.g. {key}: 2r with r set")
    source_written = options[source]
    if isinstance(source_written, str) and TIE.match(source_written):
        raise ValueError(f"{text!r} ties {key} to {source}, which is tied itself; tie both to one free option")
    values = (source_written.get("choice", ()) if isinstance(source_written, dict)  # int/float ranges: numbers
              else (source_written,))
    if not isinstance(values, (list, tuple)) or not all(is_number(v) for v in values):
        raise ValueError(f"{key} is tied to {source}, which is not a number")
    if integer and not isinstance(factor, int):
        raise ValueError(f"{key} is an integer: its factor must be a whole number, got {factor_text}")
    if factor <= 0:
        raise ValueError(f"{text!r}: the factor must be positive")
    return Tie(source, factor)


@dataclass(frozen=True)
class Conditional:
    """A choice among branches (method names or ``none``), each with its own option nodes.

    Sampling is conditional: only the chosen branch's nodes are sampled, so a parameter such as
    ``lora.L0.q.lora.r`` exists in a trial exactly when LoRA was chosen for that unit.
    """

    branches: dict[str, dict[str, Node]]
    ties: dict[str, dict[str, Tie]] = field(default_factory=dict)  # branch -> option -> tie (not nodes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.branches)

    def completed(self, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """A branch's option values with its tied options added (what a plan entry holds)."""
        ties = self.ties.get(name, {})
        return {**values, **{key: tie.value(values) for key, tie in ties.items()}}

    def count(self, name: str) -> int | None:
        """Number of distinct points of one branch (``None`` if one of its options is continuous)."""
        total = 1
        for node in self.branches[name].values():
            n = node.count()
            if n is None:
                return None
            total *= n
        return total

    def contains(self, name: str, values: dict[str, Any]) -> bool:
        nodes = self.branches.get(name)
        return (nodes is not None and set(values) == set(nodes)
                and all(node.contains(values[k]) for k, node in nodes.items()))


def is_parameter(node: Node) -> bool:
    """Whether a node is sampled (a fixed value, or a one-value range, is not a choice)."""
    return not isinstance(node, Fixed)


def ordered_values(node: Node) -> list[Any] | None:
    """The node's values from the smallest to the largest, if they can be listed and ordered."""
    if isinstance(node, Float) and node.step is None:
        return None
    count = node.count()
    if count is None or count > MAX_ENUMERATION:
        return None
    values = list(node.values())
    if all(isinstance(v, bool) for v in values):
        return sorted(values)  # False < True: "off" is the cheaper setting of a bool option
    if all(is_number(v) for v in values):
        return sorted(values)
    return values  # strings: no natural order


def step_down(node: Node, value: Any, floor: Any) -> Any:
    """The next value on the way from ``value`` down to ``floor`` (the cheapest value of the node).

    Numeric ranges are roughly halved (``16 -> 8``, ``8 -> 4``; on a choice ``[2, 4, 8]`` the next lower
    option), so repair needs few steps yet keeps as much of a sampled size as the budget allows.
    Non-numeric options jump straight to the floor.
    """
    if isinstance(node, (Int, Float)) and node.step in (None, 1):
        if not is_number(value) or not is_number(floor) or value <= floor:
            return floor
        half = value / 2
        if isinstance(node, Int):
            target = max(int(floor), int(math.floor(half)))
            return target if target < value else floor
        return max(float(floor), half)
    values = ordered_values(node)
    if values is None or not all(is_number(v) for v in values):
        return floor
    if not is_number(floor) or not is_number(value):
        return floor
    lower = [v for v in values if floor <= v < value]
    if not lower:
        return floor
    halves = [v for v in lower if v <= value / 2]
    return max(halves) if halves else max(lower)
