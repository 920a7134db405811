"""Options shared by several subcommands: the model/data and training option tables, added to a parser."""

from __future__ import annotations

import argparse

from autopeft.training.options import DATA_OPTIONS, DataOptions, data_options, train_options


def add_data_options(p: argparse.ArgumentParser) -> None:
    DATA_OPTIONS.add_to(p)


def add_train_options(p: argparse.ArgumentParser, steps: int) -> None:
    train_options(steps).add_to(p)


def data_options_of(args: argparse.Namespace) -> DataOptions:
    return data_options(DATA_OPTIONS.values_of(args))
