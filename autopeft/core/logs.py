"""Quiet third-party libraries: no progress bars from transformers/datasets, Optuna warnings only.

The CLI and the Python API call :func:`quiet_libraries` before a command runs. A library that is already
imported is configured at once; one that is not is configured right after its first import (a one-shot
import hook), so a command that never uses transformers, datasets or Optuna (``autopeft methods``,
``autopeft spaces``, ``autopeft space check``) does not import them just to quiet them.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec


def _quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _quiet_datasets() -> None:
    import datasets

    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


QUIETERS: dict[str, Callable[[], None]] = {
    "transformers": _quiet_transformers, "datasets": _quiet_datasets, "optuna": _quiet_optuna,
}


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    for name, quiet in QUIETERS.items():
        if name in sys.modules:
            quiet()
        elif not any(isinstance(f, AfterImport) and f.name == name for f in sys.meta_path):
            sys.meta_path.insert(0, AfterImport(name, quiet))


class AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``hook`` once, right after the top-level package ``name`` is first imported, then steps aside."""

    def __init__(self, name: str, hook: Callable[[], None]) -> None:
        self.name, self.hook = name, hook

    def find_spec(self, fullname: str, path=None, target=None) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # found by the other finders, as without us
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_quiet(module) -> None:
            exec_module(module)
            self.hook()

        loader.exec_module = exec_then_quiet  # type: ignore[method-assign]
        return spec
