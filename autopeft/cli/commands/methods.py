"""``autopeft methods``: the method catalogue (options, defaults, sites, behaviour)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from typing import Any


def register(sub) -> None:
    m = sub.add_parser("methods", help="list the PEFT methods, their options, sites and behaviour")
    m.add_argument("--json", action="store_true")
    m.set_defaults(handler=run)


def method_catalogue() -> list[dict[str, Any]]:
    from autopeft.methods import REGISTRY
    from autopeft.methods.base import merges

    rows = []
    for name in sorted(REGISTRY):
        method = REGISTRY[name]
        hints = typing.get_type_hints(method.config_cls)
        options = []
        for f in dataclasses.fields(method.config_cls):
            hint = hints[f.name]
            allowed = list(typing.get_args(hint)) if typing.get_origin(hint) is typing.Literal else None
            options.append({"name": f.name, "type": "choice" if allowed else getattr(hint, "__name__", str(hint)),
                            "default": f.default, **({"choices": allowed} if allowed else {})})
        rows.append({
            "name": name, "summary": method.summary, "placement": method.placement.value,
            "sites": list(method.sites) if method.sites else "any linear site (q k v o up gate down)",
            "families": ["bert", "distilbert", "gpt2", "llama"],
            "identity_at_init": method.identity_at_init, "merges": merges(method), "options": options,
        })
    return rows


def run(args: argparse.Namespace) -> int:
    rows = method_catalogue()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="autopeft methods")
    for column in ("method", "sites", "options (default)", "identity at init", "merges", "what it does"):
        table.add_column(column, overflow="fold")
    for r in rows:
        options = ", ".join(f"{o['name']}={o['default']}" for o in r["options"]) or "-"
        sites = r["sites"] if isinstance(r["sites"], str) else ",".join(r["sites"])
        table.add_row(r["name"], sites, options, "yes" if r["identity_at_init"] else "no",
                      "yes" if r["merges"] else "no", r["summary"])
    Console().print(table)
    return 0


