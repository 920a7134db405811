"""Parse a space file into a :class:`~autopeft.space.search_space.SearchSpace`, with located errors.

Every key is checked: an unknown key, a wrong type or a value out of range is a ``UserError`` naming the
file, line and column, the key, and what is allowed there. The grammar is documented in README.md
("Search spaces") and in :mod:`autopeft.space`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Literal, get_args, get_origin, get_type_hints

from autopeft.core.arch import LINEAR_SITES
from autopeft.core.errors import UserError
from autopeft.core.units import parse_budget
from autopeft.methods import REGISTRY, Placement, get_method, make_config

from .layers import ALL, KNOWN_SITES, MODEL_SITES, Groups, SelectionError, canonical_site, parse_selection
from .model import NONE, Decision, Forbid, Mask
from .nodes import Choice, Conditional, Fixed, Float, Int, Node, Tie, is_number, parse_tie
from .search_space import SearchSpace
from .source import Located, Path, load_located, show_path

TOP_KEYS = ("description", "budget", "training", "masks", "decisions", "forbid")
DECISION_KEYS = ("name", "layers", "sites", "per", "groups", "mask", "methods")
PER = ("layer-site", "layer", "site", "group", "group-site", "global")
SCOPES = ("layer", "site", "model")
RANGE_KEYS = {"int": ("int", "log", "step"), "float": ("float", "log", "step"), "choice": ("choice",)}
#: training settings a space may search: (type, lowest allowed, highest allowed, low bound exclusive)
TRAINING = {"lr": (float, 0.0, None, True), "head_lr_scale": (float, 0.0, None, True),
            "weight_decay": (float, 0.0, None, False), "warmup_ratio": (float, 0.0, 1.0, False),
            "max_grad_norm": (float, 0.0, None, True), "batch_size": (int, 1, None, False)}
RESERVED = ("training", "mask", "none")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
MAX_OPTIONS = 10_000


def parse_space(text: str, source: str, name: str) -> SearchSpace:
    """Parse the text of a space file (``source`` names it in errors)."""
    return _Parser(load_located(text, source)).space(name)


def _allowed(keys: Any) -> str:
    return ", ".join(map(str, keys)) or "(none)"


class _Parser:
    def __init__(self, doc: Located) -> None:
        self.doc = doc

    def error(self, path: Path, message: str) -> UserError:
        return self.doc.error(path, message)

    def where(self, path: Path) -> str:
        line, column = self.doc.marks.get(path, (0, 0))
        return f"{self.doc.source}:{line}:{column}: {show_path(path)}"

    def mapping(self, value: Any, path: Path, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error(path, f"{what} must be a mapping with keys {_allowed(allowed)}; got {_kind(value)}")
        for key in value:
            if key not in allowed:
                raise self.error(path + (key,), f"unknown key {key!r}; allowed: {_allowed(allowed)}")
        return value

    # --- top level ------------------------------------------------------------------------------
    def space(self, name: str) -> SearchSpace:
        doc = self.doc.data
        if not isinstance(doc, dict):
            raise self.error((), f"a search space is a mapping with {_allowed(TOP_KEYS)}; got {_kind(doc)}")
        self.mapping(doc, (), TOP_KEYS, "a search space")
        description = doc.get("description") or ""
        if not isinstance(description, str):
            raise self.error(("description",), "must be text")
        budget = self.budget(doc["budget"]) if "budget" in doc else None
        masks = self.masks(doc.get("masks"))
        decisions = doc.get("decisions")
        if not isinstance(decisions, list) or not decisions:
            raise self.error(("decisions",) if "decisions" in doc else (),
                             "'decisions' must be a non-empty list of decisions (mappings with "
                             f"{_allowed(DECISION_KEYS)})")
        parsed: list[Decision] = []
        for i, d in enumerate(decisions):
            decision = self.decision(d, ("decisions", i), i, masks)
            if any(p.name == decision.name for p in parsed):
                raise self.error(("decisions", i, "name"), f"decision name {decision.name!r} is used twice; "
                                                           "names must be unique")
            parsed.append(decision)
        for mask in masks.values():
            if not any(d.mask == mask.name for d in parsed):
                raise self.error(("masks", mask.name), f"mask {mask.name!r} is not used by any decision "
                                                       f"(add 'mask: {mask.name}' to the decisions it gates)")
        forbid = self.forbid(doc.get("forbid"), parsed) + _one_attention_method_per_layer(parsed)
        training = self.training(doc.get("training"))
        return SearchSpace(name, description.strip(), tuple(parsed), training, budget, masks, forbid,
                           self.doc.source)

    def budget(self, value: Any) -> str:
        text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
        try:
            if text is None:
                raise UserError("not text")
            parse_budget(text, base_params=10**12)
        except UserError:
            raise self.error(("budget",), f"{value!r} is not a budget; write a percentage of the model such "
                                          "as 0.5% or a parameter count such as 120k, 1.5M or 250000") from None
        return text

    def masks(self, value: Any) -> dict[str, Mask]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(("masks",), "masks map a mask name to the layers that get an on/off flag, "
                                         "e.g. {active: all}")
        out = {}
        for name, selection in value.items():
            self.name_ok(name, ("masks", name), "mask")
            out[name] = Mask(name, self.selection(selection, ("masks", name)), self.where(("masks", name)))
        return out

    def name_ok(self, name: Any, path: Path, what: str) -> str:
        if not isinstance(name, str) or not NAME.match(name) or name in RESERVED:
            raise self.error(path, f"{what} name {name!r} must start with a letter or _, continue with letters, "
                                   f"digits, _ or -, and not be one of {_allowed(RESERVED)}")
        return name

    def selection(self, value: Any, path: Path):
        try:
            return parse_selection(value)
        except SelectionError as exc:
            raise self.error(path, str(exc)) from None

    # --- decisions ------------------------------------------------------------------------------
    def decision(self, value: Any, path: Path, index: int, masks: dict[str, Mask]) -> Decision:
        if value is None:
            raise self.error(path, f"a decision needs at least sites and methods; keys: {_allowed(DECISION_KEYS)}")
        doc = self.mapping(value, path, DECISION_KEYS, "a decision")
        name = self.name_ok(doc.get("name", f"d{index}"), path + ("name",), "decision")
        sites = self.sites(doc.get("sites"), path + ("sites",), "sites" in doc)
        layers = self.selection(doc["layers"], path + ("layers",)) if "layers" in doc else ALL
        groups = self.groups(doc["groups"], path + ("groups",)) if "groups" in doc else None
        per = doc.get("per", "group" if groups else "layer-site")
        if per not in PER:
            raise self.error(path + ("per",), f"per={per!r}; allowed: {_allowed(PER)}")
        if per.startswith("group") and groups is None:
            raise self.error(path + ("per",), f"per: {per} needs 'groups: N' or 'groups: {{spindle: N}}'")
        if groups is not None and not per.startswith("group"):
            raise self.error(path + ("groups",), f"groups only apply with per: group or group-site, not per: {per}")
        mask = doc.get("mask")
        if mask is not None and mask not in masks:
            raise self.error(path + ("mask",), f"unknown mask {mask!r}; masks declared under 'masks:': "
                                               f"{_allowed(masks) or '(none)'}")
        model_level = [s for s in sites if s in MODEL_SITES]
        if model_level and (len(sites) > 1 or any(k in doc for k in ("layers", "per", "groups", "mask"))):
            raise self.error(path + ("sites",), f"{model_level[0]} is a site of the whole model: give it a decision "
                                                "of its own, without layers, per, groups or mask")
        if "methods" not in doc:
            raise self.error(path, "a decision needs 'methods': a mapping from method names (or none) to options")
        choice = self.methods(doc["methods"], path + ("methods",), sites)
        return Decision(name, layers, sites, per, choice, groups, mask, self.where(path))

    def sites(self, value: Any, path: Path, given: bool) -> tuple[str, ...]:
        if not given:
            raise self.error(path[:-1], "a decision needs 'sites', e.g. sites: [q, v]")
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise self.error(path, "sites must be a site name or a non-empty list of them")
        out: list[str] = []
        for i, item in enumerate(items):
            where = path + (i,) if isinstance(value, list) else path
            site = canonical_site(item) if isinstance(item, str) else None
            if site not in KNOWN_SITES:
                raise self.error(where, f"unknown site {item!r}; sites: {_allowed(KNOWN_SITES)} "
                                        "(aliases: in, after_attn, after_mlp, prefix, prompt)")
            if site in out:
                raise self.error(where, f"site {item!r} is listed twice (aliases count: after_attn is o)")
            out.append(site)
        return tuple(out)

    def groups(self, value: Any, path: Path) -> Groups:
        pattern, count = "uniform", value
        if isinstance(value, dict) and len(value) == 1:
            (pattern, count), = value.items()
        if pattern not in ("uniform", "spindle") or not isinstance(count, int) or isinstance(count, bool) \
                or count < 1:
            raise self.error(path, f"groups must be a number of groups (>= 1), {{uniform: N}} or {{spindle: N}}; "
                                   f"got {value!r}")
        return Groups(count, pattern)  # type: ignore[arg-type]

    def methods(self, value: Any, path: Path, sites: tuple[str, ...]) -> Conditional:
        if not isinstance(value, dict) or not value:
            raise self.error(path, "methods must map method names (or none) to their options, "
                                   "e.g. {none: {}, lora: {r: 8}}")
        branches: dict[str, dict[str, Node]] = {}
        ties: dict[str, dict[str, Tie]] = {}
        for method, options in value.items():
            where = path + (method,)
            if method == NONE:
                if options not in (None, {}):
                    raise self.error(where, "none takes no options; write none: {}")
                branches[NONE] = {}
                continue
            if not isinstance(method, str) or method not in REGISTRY:
                raise self.error(where, f"unknown method {method!r}; available: "
                                        f"{_allowed(sorted(REGISTRY))}, or none")
            allowed_sites = tuple(REGISTRY[method].sites or LINEAR_SITES)
            for site in sites:
                if site not in allowed_sites:
                    raise self.error(where, f"method '{method}' does not go on site '{site}'; it goes on: "
                                            f"{_allowed(allowed_sites)}")
            branches[method], ties[method] = self.options(method, options, where)
        return Conditional(branches, ties)

    def options(self, method: str, value: Any, path: Path) -> tuple[dict[str, Node], dict[str, Tie]]:
        config_cls = get_method(method).config_cls
        hints = get_type_hints(config_cls)
        doc = self.mapping(value, path, tuple(f.name for f in dataclasses.fields(config_cls)),
                           f"the options of {method}")
        nodes: dict[str, Node] = {}
        ties: dict[str, Tie] = {}
        for key, raw in doc.items():
            where = path + (key,)
            kind = _numeric_kind(hints[key])
            try:
                tie = parse_tie(raw, key, doc, kind)
            except ValueError as exc:
                raise self.error(where, str(exc)) from None
            if tie is not None:
                ties[key] = tie
                continue
            node = self.node(raw, where, kind)
            for candidate in _probe_values(node):
                try:
                    make_config(get_method(method), {key: candidate})
                except UserError as exc:
                    raise self.error(where, str(exc)) from None
            nodes[key] = node
        for extreme in (0, -1):  # options may constrain each other: the lowest and highest settings must build
            values = {k: _probe_values(n)[extreme] for k, n in nodes.items()}
            values.update({k: tie.value(values) for k, tie in ties.items()})
            try:
                make_config(get_method(method), values)
            except UserError as exc:
                raise self.error(path, str(exc)) from None
        return nodes, ties

    # --- nodes ------------------------------------------------------------------------------------
    def node(self, value: Any, path: Path, kind: str | None) -> Node:
        """A fixed scalar, or one of {int: [lo, hi], log?, step?}, {float: [...], ...}, {choice: [...]}."""
        if isinstance(value, list):
            raise self.error(path, f"a list is ambiguous here; write {{choice: {value}}} for a choice")
        if not isinstance(value, dict):
            if not _is_scalar(value):
                raise self.error(path, f"{value!r} is not a plain value (number, text, true/false)")
            return Fixed(value)
        kinds = [k for k in RANGE_KEYS if k in value]
        if len(kinds) != 1:
            raise self.error(path, "a range needs exactly one of int, float, choice: {int: [lo, hi]}, "
                                   "{float: [lo, hi], log: true}, {choice: [a, b]}")
        (range_kind,) = kinds
        self.mapping(value, path, RANGE_KEYS[range_kind], f"a {range_kind} range")
        if range_kind == "choice":
            return self.choice(value["choice"], path + ("choice",))
        if kind == "int" and range_kind == "float":
            raise self.error(path, "this option is an integer: write {int: [lo, hi]} or a choice")
        if kind in ("bool", "text"):
            raise self.error(path, f"this option is {'true/false' if kind == 'bool' else 'one of fixed names'}: "
                                   "write a value or {choice: [...]}")
        return self.range(value, path, range_kind)

    def choice(self, options: Any, path: Path) -> Choice:
        if not isinstance(options, list) or not options:
            raise self.error(path, "choice needs a non-empty list of options, e.g. {choice: [2, 4, 8]}")
        if len(options) > MAX_OPTIONS:
            raise self.error(path, f"a choice of more than {MAX_OPTIONS} options; use an int or float range")
        seen: list[Any] = []
        for i, option in enumerate(options):
            if not _is_scalar(option):
                raise self.error(path + (i,), f"option {option!r} must be a plain value (number, text, true/false)")
            if any(option == s and type(option) is type(s) for s in seen):
                raise self.error(path + (i,), f"option {option!r} is listed twice")
            seen.append(option)
        return Choice(tuple(options))

    def range(self, value: dict[str, Any], path: Path, kind: Literal["int", "float"]) -> Node:
        bounds = value[kind]
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(is_number(b) and math.isfinite(b)
                                                                       for b in bounds)):
            raise self.error(path + (kind,), f"{kind} needs [low, high] (two finite numbers, both included)")
        low, high = bounds
        if low > high:
            raise self.error(path + (kind,), f"inverted range [{low}, {high}]; write [{high}, {low}]")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise self.error(path + ("log",), f"log must be true or false, got {log!r}")
        if log and low <= 0:
            raise self.error(path + ("log",), f"a log range needs low > 0, got {low}")
        step = value.get("step")
        if step is not None and (not is_number(step) or step <= 0 or (kind == "int" and not float(step).is_integer())):
            raise self.error(path + ("step",), f"step must be a positive {'whole ' if kind == 'int' else ''}number, "
                                               f"got {step!r}")
        if log and step not in (None, 1):
            raise self.error(path + ("step",), "log and step cannot be combined (Optuna samples a log range "
                                               "continuously)")
        if kind == "int":
            if not all(float(b).is_integer() for b in bounds):
                raise self.error(path + ("int",), f"int bounds must be whole numbers, got {bounds}")
            lo, hi, st = int(low), int(high), int(step or 1)
            if (hi - lo) % st:
                raise self.error(path + ("step",), f"high - low = {hi - lo} must be a multiple of step {st}")
            return Int(lo, hi, log, st)
        if step is not None:
            count = (high - low) / step
            if abs(count - round(count)) > 1e-9 * max(1.0, count) or count > 1_000_000:
                raise self.error(path + ("step",), f"high - low = {high - low} must be a multiple of step {step} "
                                                   "(and at most a million steps)")
        return Float(float(low), float(high), log, None if step is None else float(step))

    # --- forbid and training ---------------------------------------------------------------------
    def forbid(self, value: Any, decisions: list[Decision]) -> tuple[Forbid, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(("forbid",), "forbid is a list of rules like {together: [prefix, adapter], in: layer}")
        offered = {m for d in decisions for m in d.methods if m != NONE}
        rules = []
        for i, item in enumerate(value):
            path = ("forbid", i)
            doc = self.mapping(item, path, ("together", "in"), "a forbid rule")
            methods = doc.get("together")
            if not isinstance(methods, list) or len(methods) < 2 or len(set(map(str, methods))) != len(methods):
                raise self.error(path + ("together",), "together needs a list of at least two different methods")
            for j, method in enumerate(methods):
                if method not in offered:
                    raise self.error(path + ("together", j), f"{method!r} is not offered by any decision; "
                                                             f"offered: {_allowed(sorted(offered))}")
            scope = doc.get("in", "layer")
            if scope not in SCOPES:
                raise self.error(path + ("in",), f"in={scope!r}; allowed: {_allowed(SCOPES)}")
            rules.append(Forbid(tuple(methods), scope))
        return tuple(rules)

    def training(self, value: Any) -> dict[str, Node]:
        doc = self.mapping(value, ("training",), tuple(TRAINING), "training")
        out: dict[str, Node] = {}
        for key, raw in doc.items():
            path = ("training", key)
            kind, low, high, exclusive = TRAINING[key]
            node = self.node(raw, path, "int" if kind is int else "float")
            for v in _probe_values(node):
                ok = is_number(v) and (kind is float or float(v).is_integer())
                ok = ok and (v > low if exclusive else v >= low) and (high is None or v <= high)
                if not ok:
                    bound = f"> {low}" if exclusive else f">= {low}"
                    limit = f" and <= {high}" if high is not None else ""
                    raise self.error(path, f"{v!r} is not allowed; {key} must be a{'n integer' if kind is int else ' number'}"
                                           f" {bound}{limit}")
            out[key] = node
        return out


def _one_attention_method_per_layer(decisions: list[Decision]) -> tuple[Forbid, ...]:
    """Implicit rules: a layer's attention takes one prefix-like method (prefix, ptuning_v2), so two
    different ones offered by the space must not meet in a layer (injection would refuse the plan)."""
    offered = sorted({m for d in decisions for m in d.methods
                      if m != NONE and REGISTRY[m].placement is Placement.ATTENTION})
    return tuple(Forbid((a, b), "layer", implicit=True) for i, a in enumerate(offered) for b in offered[i + 1:])


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", type(None): "nothing"}.get(type(value), repr(value))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value))


def _numeric_kind(hint: Any) -> str | None:
    if hint is bool:
        return "bool"
    if hint is int:
        return "int"
    if hint is float:
        return "float"
    if get_origin(hint) is Literal or hint is str:
        return "text"
    if get_origin(hint) is not None and int in get_args(hint):
        return "int"
    return None


def _probe_values(node: Node) -> list[Any]:
    """Values that stand for a node when checking it against a method's config: all of a choice, the bounds."""
    if isinstance(node, (Int, Float)):
        return [node.low, node.high]
    return list(node.values())
