"""Plans: which method goes where, with which hyperparameters.

A plan is a list of entries ``{method, layers, sites, options}``; it is JSON-serialisable and
independent of any built model. Resolved against a :class:`~autopeft.core.arch.ModelArch`, it expands into
:class:`Placement` s, one per (layer, site, method), from which the exact number of trainable parameters
follows without building anything.

JSON form (``plan.json``)::

    {"autopeft_plan": 1,
     "entries": [{"method": "lora", "layers": [0, 1, 2], "sites": ["q", "v"], "options": {"r": 8}},
                 {"method": "prefix", "layers": [4, 5], "sites": ["attn"], "options": {"length": 8}}]}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.core.arch import SITE_ALIASES, LinearSite, ModelArch, NormSite
from autopeft.core.errors import UserError
from autopeft.methods import REGISTRY, get_method, make_config
from autopeft.methods import Placement as MethodPlacement

PLAN_FORMAT = 1


@dataclass(frozen=True)
class PlanEntry:
    method: str
    layers: tuple[int, ...]
    sites: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "layers": list(self.layers), "sites": list(self.sites),
                "options": dict(self.options)}


@dataclass(frozen=True)
class Placement:
    """One method instance at one (layer, site); model-level sites (``input``) have no layer."""

    layer: int | None
    site: str  # canonical linear site name, "attn", a norm site (ln_attn, ln_mlp) or "input"
    method: str
    config: Any
    linear: LinearSite | None
    norm: NormSite | None = None

    @property
    def key(self) -> str:
        """Stable name used for saving: ``layers.<i>.<site>.<method>``, or ``<site>.<method>`` without a layer."""
        if self.layer is None:
            return f"{self.site}.{self.method}"
        return f"layers.{self.layer}.{self.site}.{self.method}"

    @property
    def target(self) -> LinearSite | NormSite | None:
        """What the method's ``num_params``/``build`` receive as ``site``."""
        return self.linear if self.linear is not None else self.norm


@dataclass(frozen=True)
class Plan:
    entries: tuple[PlanEntry, ...] = ()

    # --- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"autopeft_plan": PLAN_FORMAT, "entries": [e.to_dict() for e in self.entries]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, source: str = "plan") -> Plan:
        if not isinstance(data, dict) or "entries" not in data:
            raise UserError(f"{source}: not an autopeft plan (expected an object with 'entries')")
        version = data.get("autopeft_plan", PLAN_FORMAT)
        if not isinstance(version, int) or version > PLAN_FORMAT:
            raise UserError(
                f"{source}: plan format {version!r} is newer than this autopeft understands "
                f"(format {PLAN_FORMAT}); upgrade autopeft"
            )
        unknown = sorted(set(data) - {"autopeft_plan", "entries"})
        if unknown:
            raise UserError(f"{source}: unknown key(s) {unknown}; allowed: autopeft_plan, entries")
        if not isinstance(data["entries"], list):
            raise UserError(f"{source}: 'entries' must be a list")
        return cls(tuple(_entry_from_dict(e, f"{source}: entries[{i}]") for i, e in enumerate(data["entries"])))

    @classmethod
    def from_json(cls, text: str, source: str = "plan") -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        if path.is_dir():
            path = path / "plan.json"
        if not path.is_file():
            raise UserError(f"plan file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a text file (a plan is UTF-8 JSON)") from None
        return cls.from_json(text, str(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    # --- resolution -----------------------------------------------------------------------
    def placements(self, arch: ModelArch) -> list[Placement]:
        out: dict[tuple[int | None, str, str], Placement] = {}
        prefixes: dict[int | None, str] = {}  # a layer's attention takes one prefix-type method
        for entry in self.entries:
            method = get_method(entry.method)
            config = make_config(method, entry.options)
            # a model-level method (input embeddings) is placed once; the entry's layers do not apply
            layers = (None,) if method.placement is MethodPlacement.INPUT else arch.resolve_layers(entry.layers)
            for layer in layers:
                for site_name in entry.sites:
                    site_name = SITE_ALIASES.get(site_name, site_name)
                    if method.sites is not None and site_name not in method.sites:
                        raise UserError(
                            f"method '{entry.method}' goes on site(s) {list(method.sites)}, not '{site_name}'"
                        )
                    linear = arch.site(site_name) if method.placement is MethodPlacement.LINEAR else None
                    norm = arch.norm(site_name) if method.placement is MethodPlacement.NORM else None
                    key = (layer, site_name, entry.method)
                    if key in out:
                        where = f"layer {layer} site" if layer is not None else "site"
                        raise UserError(f"plan puts '{entry.method}' twice on {where} '{site_name}'")
                    if method.placement is MethodPlacement.ATTENTION:
                        other = prefixes.setdefault(layer, entry.method)
                        if other != entry.method:
                            raise UserError(f"plan puts two prefix-type methods ('{other}' and '{entry.method}') "
                                            f"on layer {layer}; a layer's attention takes one")
                    out[key] = Placement(layer, site_name, entry.method, config, linear, norm)
        return list(out.values())

    def num_params(self, arch: ModelArch) -> int:
        """Exact count of trainable parameters this plan adds (task head excluded)."""
        return sum(params_by_method(self, arch).values())

    def describe(self, arch: ModelArch | None = None) -> str:
        """Compact summary, e.g. ``L0-2:lora(q,v r8) L4-5:prefix(8)``."""
        if not self.entries:
            return "(head only)"
        parts = []
        for entry in self.entries:
            opts = " ".join(_short(k, v) for k, v in sorted(entry.options.items()))
            spec = REGISTRY.get(entry.method)
            fixed_site = spec is not None and spec.placement in (MethodPlacement.ATTENTION, MethodPlacement.INPUT)
            inner = "" if fixed_site else ",".join(entry.sites)
            inner = " ".join(x for x in (inner, opts) if x)
            if spec is not None and spec.placement is MethodPlacement.INPUT:  # model-level: no layers
                parts.append(f"{entry.method}({inner})")
                continue
            layers = _ranges(arch.resolve_layers(entry.layers) if arch else entry.layers)
            parts.append(f"L{layers}:{entry.method}({inner})")
        return " ".join(parts)


def params_by_method(plan: Plan, arch: ModelArch) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in plan.placements(arch):
        n = get_method(p.method).num_params(p.config, arch, p.target)
        counts[p.method] = counts.get(p.method, 0) + n
    return counts


def _entry_from_dict(data: Any, where: str) -> PlanEntry:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected an object")
    unknown = sorted(set(data) - {"method", "layers", "sites", "options"})
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; allowed: method, layers, sites, options")
    method, layers, sites = data.get("method"), data.get("layers"), data.get("sites")
    options = data.get("options", {})
    if not isinstance(method, str):
        raise UserError(f"{where}: 'method' must be a method name")
    if not isinstance(layers, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
        raise UserError(f"{where}: 'layers' must be a list of layer indices")
    if not isinstance(sites, list) or not sites or not all(isinstance(x, str) for x in sites):
        raise UserError(f"{where}: 'sites' must be a non-empty list of site names")
    if not isinstance(options, dict):
        raise UserError(f"{where}: 'options' must be an object")
    return PlanEntry(method, tuple(layers), tuple(sites), dict(options))


def _ranges(layers: Iterable[int]) -> str:
    layers = sorted(layers)
    if not layers:
        return "-"
    out, start, prev = [], layers[0], layers[0]
    for x in layers[1:] + [None]:  # type: ignore[operator]
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ",".join(out)


_ABBREV = {"r": "r", "alpha": "a", "size": "", "length": "", "dropout": "drop"}


def _short(key: str, value: Any) -> str:
    if value is True:  # a flag: "gated" rather than "gated=True"
        return key
    prefix = _ABBREV.get(key, f"{key}=")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{prefix}{value}"
