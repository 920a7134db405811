"""``autopeft spaces``: the search-space presets shipped in ``search_spaces/``, with their descriptions."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub) -> None:
    p = sub.add_parser("spaces", help="list the search-space presets (use with search --space NAME)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def preset_rows() -> list[dict[str, Any]]:
    from autopeft.space import list_presets, load_space, preset_path

    rows = []
    for name in list_presets():
        space = load_space(name)
        rows.append({"name": name, "description": space.description, "budget": space.budget,
                     "decisions": [d.name for d in space.decisions], "file": preset_path(name)})
    return rows


def run(args: argparse.Namespace) -> int:
    rows = preset_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        budget = f" (default budget {r['budget']})" if r["budget"] else ""
        print(f"{r['name']:<{width}}  {r['description']}{budget}")
    print("\ncheck one on a model: autopeft space check NAME --model minilm --budget 0.5%")
    return 0
