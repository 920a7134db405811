"""Where a decision applies: layer selections, groups of layers, and site names.

A layer selection is written once and resolved against any depth::

    all            every layer
    3, -1          one layer (negative = from the top: -1 is the last layer)
    "0-5"          a range, inclusive ("-4..-1" for negative ends)
    "top 4"        the 4 layers nearest the output ("top 25%" = a quarter of them, at least one)
    "bottom 2"     the 2 layers nearest the input ("bottom 50%")
    "every 2"      layers 0, 2, 4, ... ("every 3 from 1" = 1, 4, 7, ...)
    [0, "top 2"]   a list: the union of its items

``top N`` and ``bottom N`` keep every layer of a shallower model; an explicit index or range outside the
model is an error. Groups split a decision's layers into contiguous blocks:

    groups: 3              3 groups of (nearly) equal size, the first ones one layer larger
    groups: {spindle: 4}   4 groups whose sizes grow then shrink, weights 1, 2, 2, 1 (PEFT Design Spaces,
                           Chen et al., ICLR 2023: "spindle" grouping, few layers at both ends)

A model with fewer layers than groups gets one group per layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from autopeft.core.arch import INPUT_SITE, LINEAR_SITES, NORM_SITES, SITE_ALIASES

#: block-level names of sites, for readability in space files
BLOCK_ALIASES = {"after_attn": "o", "after_mlp": "down", "prefix": "attn", "prompt": "input"}
ALIASES = {**SITE_ALIASES, **BLOCK_ALIASES}
#: sites that are not a projection: the attention of a block, its layer norms, the model's input
OTHER_SITES = ("attn", *NORM_SITES, INPUT_SITE)
#: sites of the whole model rather than of a block: one unit per decision, whatever its layers and ``per``
MODEL_SITES = (INPUT_SITE,)
KNOWN_SITES = LINEAR_SITES + OTHER_SITES

_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_DOTS = re.compile(r"^(-?\d+)\s*\.\.\s*(-?\d+)$")
_INDEX = re.compile(r"^-?\d+$")
_TOPBOTTOM = re.compile(r"^(top|bottom)\s+(\d+)\s*(%?)$")
_EVERY = re.compile(r"^every\s+(\d+)(?:\s+from\s+(-?\d+))?$")

SELECTION_HELP = ("'all', a layer index (negative counts from the top), a range like '0-5' or '-4..-1', "
                  "'top N', 'bottom N' (N or N%), 'every K' or 'every K from J', or a list of these")


class SelectionError(ValueError):
    """A layer selection that is malformed, or does not fit the model (the parser adds the location)."""


@dataclass(frozen=True)
class LayerItem:
    kind: Literal["all", "index", "range", "top", "bottom", "every"]
    a: int = 0
    b: int = 0
    percent: bool = False

    def resolve(self, depth: int) -> list[int]:
        if self.kind == "all":
            return list(range(depth))
        if self.kind == "index":
            return [_index(self.a, depth)]
        if self.kind == "range":
            lo, hi = _index(self.a, depth), _index(self.b, depth)
            if lo > hi:
                raise SelectionError(f"range {self.a}..{self.b} is empty on a {depth}-layer model")
            return list(range(lo, hi + 1))
        if self.kind in ("top", "bottom"):
            n = max(1, round(depth * self.a / 100)) if self.percent else min(self.a, depth)
            return list(range(depth - n, depth)) if self.kind == "top" else list(range(n))
        start = _index(self.b, depth) if self.b else 0
        return list(range(start, depth, self.a))


@dataclass(frozen=True)
class LayerSelection:
    items: tuple[LayerItem, ...]
    text: str  # as written, for messages

    def resolve(self, depth: int) -> tuple[int, ...]:
        layers = sorted({i for item in self.items for i in item.resolve(depth)})
        if not layers:
            raise SelectionError(f"layers {self.text} select no layer of a {depth}-layer model")
        return tuple(layers)


ALL = LayerSelection((LayerItem("all"),), "all")


def _index(i: int, depth: int) -> int:
    j = i + depth if i < 0 else i
    if not 0 <= j < depth:
        raise SelectionError(f"layer {i} is out of range for a model with {depth} layers (0..{depth - 1})")
    return j


def parse_selection(value: Any) -> LayerSelection:
    """Parse the syntax only; ranges are checked against a model's depth by :meth:`LayerSelection.resolve`."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise SelectionError(f"an empty list selects no layer; write {SELECTION_HELP}")
    return LayerSelection(tuple(_parse_item(item) for item in items), _show(value))


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, list) else "[" + ", ".join(map(str, value)) + "]"


def _parse_item(item: Any) -> LayerItem:
    if isinstance(item, int) and not isinstance(item, bool):
        return LayerItem("index", item)
    if not isinstance(item, str):
        raise SelectionError(f"{item!r} is not a layer selection; write {SELECTION_HELP}")
    text = " ".join(item.strip().lower().split())
    if text == "all":
        return LayerItem("all")
    if _INDEX.match(text):
        return LayerItem("index", int(text))
    if m := _RANGE.match(text) or _DOTS.match(text):
        return LayerItem("range", int(m.group(1)), int(m.group(2)))
    if m := _TOPBOTTOM.match(text):
        n, percent = int(m.group(2)), bool(m.group(3))
        if n < 1 or (percent and n > 100):
            raise SelectionError(f"'{item}': N must be >= 1 (and at most 100%)")
        return LayerItem(m.group(1), n, percent=percent)  # type: ignore[arg-type]
    if m := _EVERY.match(text):
        k = int(m.group(1))
        if k < 1:
            raise SelectionError(f"'{item}': the stride must be >= 1")
        return LayerItem("every", k, int(m.group(2) or 0))
    raise SelectionError(f"{item!r} is not a layer selection; write {SELECTION_HELP}")


# --- groups -----------------------------------------------------------------------------------

GroupPattern = Literal["uniform", "spindle"]


@dataclass(frozen=True)
class Groups:
    count: int
    pattern: GroupPattern = "uniform"

    def split(self, layers: tuple[int, ...]) -> list[tuple[int, ...]]:
        n = min(self.count, len(layers))
        weights = [1] * n if self.pattern == "uniform" else [min(i + 1, n - i) for i in range(n)]
        sizes = _apportion(len(layers), weights)
        out, start = [], 0
        for size in sizes:
            out.append(layers[start:start + size])
            start += size
        return out


def _apportion(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` items in proportion to ``weights`` (largest remainder), at least one each."""
    base = [1] * len(weights)
    rest = total - len(weights)
    shares = [rest * w / sum(weights) for w in weights]
    sizes = [b + int(s) for b, s in zip(base, shares, strict=True)]
    order = sorted(range(len(weights)), key=lambda i: (-(shares[i] - int(shares[i])), i))
    for i in order[: total - sum(sizes)]:
        sizes[i] += 1
    return sizes


def canonical_site(name: str) -> str:
    return ALIASES.get(name, name)
