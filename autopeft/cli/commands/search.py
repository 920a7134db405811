"""``autopeft search``: search the Pareto front of PEFT plans."""

from __future__ import annotations

import argparse

from autopeft.searching.options import SEARCH_OPTIONS


def register(sub) -> None:
    s = sub.add_parser("search", help="search the Pareto front of PEFT plans")
    SEARCH_OPTIONS.add_to(s)
    s.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autopeft.searching.options import settings_from_options
    from autopeft.searching.progress import Reporter
    from autopeft.searching.run import run_search

    values = SEARCH_OPTIONS.values_of(args)
    settings = settings_from_options(values)
    reporter = Reporter(quiet=values["quiet"])
    reporter.info(f"study directory: {settings.out}")
    run_search(settings, reporter)
    return 0
