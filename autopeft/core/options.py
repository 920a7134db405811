"""Options defined once, for the command line and the Python API alike.

An :class:`Option` is a typed record of one ``--flag``: its Python name, default, how a string becomes a
value, its choices and help. The CLI adds a table of them to an ``argparse`` parser
(:meth:`OptionTable.add_to`); the Python API checks keyword arguments against the same table
(:meth:`OptionTable.resolve`), converting strings the way argparse would and refusing the same values with
the same message. So ``autopeft search --time-budget 20m`` and ``autopeft.search(time_budget="20m")``
cannot drift apart: both read one definition.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from autopeft.core.errors import UserError


@dataclass(frozen=True)
class Option:
    name: str  # the Python name, and the argparse dest: "time_budget" for --time-budget
    default: Any = None
    type: Callable[[str], Any] | None = None  # how a command-line string becomes the value (None: str)
    choices: tuple[str, ...] | None = None
    help: str | None = None
    switch: bool = False  # a store_true flag
    flags: tuple[str, ...] = ()  # default: ("--" + name with dashes,)
    hidden_default: bool = False  # the flag leaves the value alone when absent (an alias of another option)

    @property
    def cli_flags(self) -> tuple[str, ...]:
        return self.flags or ("--" + self.name.replace("_", "-"),)

    @property
    def aliases(self) -> tuple[str, ...]:
        """Python names the API also accepts: each flag's name with underscores (``max_steps`` for --max-steps)."""
        return tuple(f.lstrip("-").replace("-", "_") for f in self.cli_flags)

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        kwargs: dict[str, Any] = {"dest": self.name, "help": self.help}
        if self.switch:
            kwargs["action"] = "store_true"
        else:
            if self.type is not None:
                kwargs["type"] = self.type
            if self.choices is not None:
                kwargs["choices"] = list(self.choices)
        kwargs["default"] = argparse.SUPPRESS if self.hidden_default else self.default
        parser.add_argument(*self.cli_flags, **kwargs)

    def convert(self, value: Any) -> Any:
        """``value`` as the command line makes it from ``str(value)``, refused with argparse's message."""
        if self.switch:
            return bool(value)
        text = value if isinstance(value, str) else str(value)
        flag = self.cli_flags[0]
        if self.type is None:
            value = text
        else:
            try:
                value = self.type(text)
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                name = getattr(self.type, "__name__", repr(self.type))
                raise UserError(f"argument {flag}: invalid {name} value: {text!r}") from None
        if self.choices is not None and value not in self.choices:
            raise UserError(f"argument {flag}: invalid choice: {value!r} (choose from "
                            f"{', '.join(repr(c) for c in self.choices)})")
        return value


@dataclass(frozen=True)
class OptionGroup:
    title: str | None
    options: tuple[Option, ...]


@dataclass(frozen=True)
class OptionTable:
    groups: tuple[OptionGroup, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, *parts: OptionTable | OptionGroup | Iterable[Option]) -> OptionTable:
        groups: list[OptionGroup] = []
        for part in parts:
            if isinstance(part, OptionTable):
                groups += part.groups
            elif isinstance(part, OptionGroup):
                groups.append(part)
            else:
                groups.append(OptionGroup(None, tuple(part)))
        return cls(tuple(groups))

    @property
    def options(self) -> tuple[Option, ...]:
        return tuple(o for g in self.groups for o in g.options)

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def replace_defaults(self, **defaults: Any) -> OptionTable:
        """The same table with other defaults (``autopeft train`` trains 300 steps by default, search 150)."""
        unknown = set(defaults) - {o.name for o in self.options}
        if unknown:
            raise KeyError(sorted(unknown))
        return OptionTable(tuple(OptionGroup(g.title, tuple(replace(o, default=defaults.get(o.name, o.default))
                                                            for o in g.options)) for g in self.groups))

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        for group in self.groups:
            target = parser.add_argument_group(group.title) if group.title else parser
            for option in group.options:
                option.add_to(target)

    def resolve(self, given: Mapping[str, Any], what: str) -> dict[str, Any]:
        """Every option's value: ``given`` (by name or alias, converted and checked), else its default."""
        by_alias = {alias: o for o in self.options for alias in (o.name, *o.aliases)}
        unknown = sorted(set(given) - set(by_alias))
        if unknown:
            raise TypeError(f"{what} got unknown option(s) {unknown}; options: "
                            f"{', '.join(sorted(o.name for o in self.options))}")
        values = self.defaults()
        for key, value in given.items():
            option = by_alias[key]
            values[option.name] = option.convert(value) if value is not None else option.default
        return values

    def values_of(self, args: argparse.Namespace) -> dict[str, Any]:
        """This table's values from parsed command-line arguments."""
        return {o.name: getattr(args, o.name, o.default) for o in self.options}
