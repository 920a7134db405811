"""What a one-shot supernet holds: every unit's methods at every size the space offers, as nested slices.

A unit of the space (``<decision>.<unit>``, e.g. ``lora.q``: LoRA on q of all layers) chooses one method
or nothing, and a method with a size option (LoRA's ``r``, an adapter's ``size``, a prefix's ``length``)
chooses one of the sizes the space lists. The supernet holds each method once at its largest size and
cuts its inner dimension into nested slices (DyLoRA / LoNAS): for sizes ``s_1 < s_2 < ... < s_m``, slice
``j`` is dimensions ``[s_{j-1}, s_j)`` (``s_0 = 0``). Keeping slices ``1..j`` is the method at size ``s_j``;
a slice is kept only with its parent (slice ``j - 1``). A method without a size option is one slice.

The cost of slice ``j`` is exact: ``params(method at s_j) - params(method at s_{j-1})`` on the unit's
layers and sites, from the same count the space and the plans use, so a readout's slices add up to its
plan's ``num_params`` (the method's fixed parameters, e.g. an adapter's output bias, ride on slice 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopeft.core.arch import ModelArch
from autopeft.core.errors import UserError
from autopeft.space.model import NONE, Decision, Sample, Unit, UnitChoice
from autopeft.space.nodes import is_parameter, ordered_values
from autopeft.space.search_space import SearchSpace

#: the option each method's inner dimension is named by: the dimension the supernet slices
SIZE_OPTION: dict[str, str] = {"lora": "r", "dora": "r", "lora_fa": "r", "adalora": "r", "adapter": "size",
                               "parallel_adapter": "size", "prefix": "length", "ptuning_v2": "length",
                               "prompt": "length", "ptuning": "length"}


@dataclass(frozen=True)
class Slice:
    """Dimensions ``[start, size)`` of one method at one unit; ``parent`` is the index of the slice below."""

    index: int
    unit: str  # "<decision>.<unit>": one method per unit at most
    decision: Decision
    layers: tuple[int, ...]
    sites: tuple[str, ...]
    method: str
    values: dict[str, Any]  # the method's options with the size option at ``size``
    start: int
    size: int
    cost: int
    parent: int | None

    def choice(self) -> UnitChoice:
        """The unit's choice when this slice is the largest kept one."""
        return UnitChoice(self.unit, self.decision, self.layers, self.sites, self.method, dict(self.values))


def _fixed_options(decision: Decision, method: str, size_key: str | None, unit: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, node in decision.methods[method].items():
        if key == size_key:
            continue
        if is_parameter(node):
            raise UserError(f"--strategy oneshot: {unit}: option '{key}' of {method} is searched; the supernet "
                            f"slices only the size ({size_key or 'none'}); fix '{key}' in the space to one value")
        values[key] = node.values()[0]
    return values


def _sizes(decision: Decision, method: str, size_key: str, unit: str) -> list[int]:
    node = decision.methods[method][size_key]
    values = ordered_values(node)
    if values is None or not all(isinstance(v, int) and v > 0 for v in values):
        raise UserError(f"--strategy oneshot: {unit}: {method}'s {size_key} must list positive integer sizes "
                        f"(a choice or a short int range), not {node}")
    return values


def candidates(space: SearchSpace, arch: ModelArch) -> list[Slice]:
    """Every slice of every method of every unit of ``space`` on ``arch``, parents before children."""
    if space.masks:
        raise UserError(f"--strategy oneshot: space '{space.name}' has masks (one flag shared by several "
                        "decisions); the supernet gates units, not shared masks: use a space without masks")
    slices: list[Slice] = []
    for decision, unit in space.units(arch):
        slices.extend(_unit_slices(decision, unit, arch, len(slices)))
    return slices


def _unit_slices(decision: Decision, unit: Unit, arch: ModelArch, first: int) -> list[Slice]:
    name = f"{decision.name}.{unit.name}"
    out: list[Slice] = []
    for method in decision.methods:
        if method == NONE:
            continue
        size_key = SIZE_OPTION.get(method) if SIZE_OPTION.get(method) in decision.methods[method] else None
        fixed = _fixed_options(decision, method, size_key, name)
        sizes = _sizes(decision, method, size_key, name) if size_key else [0]
        previous_cost, previous_size, parent = 0, 0, None
        for size in sizes:
            values = {**fixed, size_key: size} if size_key else fixed
            total = UnitChoice(name, decision, unit.layers, unit.sites, method, values).num_params(arch)
            index = first + len(out)
            out.append(Slice(index, name, decision, unit.layers, unit.sites, method, values, previous_size,
                             size, total - previous_cost, parent))
            previous_cost, previous_size, parent = total, size, index
    return out


def sample_of(space: SearchSpace, arch: ModelArch, slices: list[Slice], kept: list[int]) -> Sample:
    """The point of ``space`` that keeps ``kept`` (a readout): per unit, its method at the largest kept
    slice's size, or nothing. Training values are left to the sampler (as for the warm start)."""
    largest = largest_kept(slices, kept)
    choices = []
    for decision, unit in space.units(arch):
        name = f"{decision.name}.{unit.name}"
        choices.append(largest[name].choice() if name in largest
                       else UnitChoice(name, decision, unit.layers, unit.sites, NONE, {}))
    return Sample(tuple(choices), {}, {})


def largest_kept(slices: list[Slice], kept: list[int] | tuple[int, ...]) -> dict[str, Slice]:
    """Per unit, the largest of its kept slices (which names its method and size); one method per unit."""
    largest: dict[str, Slice] = {}
    for i in kept:
        s = slices[i]
        if s.unit in largest and largest[s.unit].method != s.method:
            raise ValueError(f"{s.unit}: two methods kept ({largest[s.unit].method}, {s.method})")
        if s.unit not in largest or s.size > largest[s.unit].size:
            largest[s.unit] = s
    return largest


def kept_units(slices: list[Slice], kept: list[int] | tuple[int, ...]) -> dict[str, str]:
    """What a readout keeps, unit by unit: ``{"lora.q": "lora 4", ...}`` (units it leaves out are absent)."""
    return {unit: f"{s.method} {s.size}" if s.size else s.method for unit, s in largest_kept(slices, kept).items()}
