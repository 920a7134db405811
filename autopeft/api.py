"""The Python API: apply a plan, save and load adapters, and search, from Python.

Example (runs as a test: ``tests/test_api.py`` executes every example of this module)::

    import autopeft
    from autopeft.testing import tiny_batch, tiny_model

    model = tiny_model("bert")                                   # any supported transformers model
    plan = autopeft.Plan.from_dict({"entries": [
        {"method": "lora", "layers": [0, 1, 2], "sites": ["q", "v"], "options": {"r": 4}}]})
    handle = autopeft.apply(model, plan)     # base frozen; LoRA + task head trainable; a normal nn.Module
    ...                                      # train with any loop or HF Trainer
    autopeft.save_adapter(model, "adapter_dir")                  # plan + weights + base-model record

    fresh = tiny_model("bert")
    handle = autopeft.load_adapter(fresh, "adapter_dir")         # checks it is the same base model
    handle.remove()                                              # the base model, bitwise

``autopeft.search(**options)`` runs a search with keyword arguments named like ``autopeft search``'s
options (``--time-budget 20m`` -> ``time_budget="20m"``). Both read one table of options
(:data:`autopeft.searching.options.SEARCH_OPTIONS`), so every option the CLI has, this has, with the same
defaults and checks. It returns the study.

Base-model check (:mod:`autopeft.peft.adapters`): an adapter records its base model's name, source, family, parameter count and a
fingerprint (a hash of the shape-defining config fields, plus 16 probe values of the input embedding
matrix). ``load_adapter`` refuses a model whose family, parameter count or fingerprint differ, naming
both models. Probe values are compared with a tolerance (1e-2 relative), so loading the base in bf16
still passes; adapters written before fingerprints existed are checked on family and parameter count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autopeft.core.logs import quiet_libraries
from autopeft.peft.adapters import apply, base_fingerprint, check_base, load_adapter, save_adapter
from autopeft.searching.options import SEARCH_OPTIONS, settings_from_options
from autopeft.searching.progress import Reporter
from autopeft.searching.run import run_search
from autopeft.study.view import StudyView, load_study_view

__all__ = ["apply", "base_fingerprint", "check_base", "load_adapter", "save_adapter", "search", "search_options"]


def search_options() -> dict[str, Any]:
    """Keyword arguments :func:`search` accepts, with their defaults (those of ``autopeft search``)."""
    return SEARCH_OPTIONS.defaults()


def search(**options: Any) -> StudyView:
    """Run a search with these options (named like ``autopeft search``'s); return the finished study.

    Example: ``autopeft.search(model="minilm", dataset="rotten_tomatoes", budget="0.5%", trials=12,
    out="runs/rt")``; ``study.best()``, ``study.front`` and ``study.summary`` hold the results. Values are
    checked and converted like the command line's (``trials="3"`` is 3); an unknown name is a TypeError.
    """
    values = SEARCH_OPTIONS.resolve(options, "autopeft.search()")
    settings = settings_from_options(values)
    quiet_libraries()  # as the CLI does: no transformers/datasets progress bars, Optuna warnings only
    run_search(settings, Reporter(quiet=values["quiet"]))
    return load_study_view(Path(settings.out))
