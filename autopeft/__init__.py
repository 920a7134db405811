"""autopeft: search hybrid parameter-efficient fine-tuning architectures under budgets.

Python API (the CLI is built on the same pieces; see :mod:`autopeft.api` and the README's "Python API")::

    import autopeft
    plan = autopeft.Plan.load("runs/demo/best/plan.json")
    handle = autopeft.apply(model, plan)   # model stays a normal nn.Module; only the plan's weights train
    ...
    autopeft.save_adapter(model, "my-adapter")          # plan + weights + base-model record
    handle.remove()                        # the base model is bitwise what it was
    handle = autopeft.load_adapter(model, "my-adapter")  # refuses an adapter made for another base model
    study = autopeft.search(budget="0.5%", trials=12, out="runs/rt")   # = autopeft search ...

The names are resolved on first use (PEP 562), so ``import autopeft`` -- and with it ``autopeft --help``
-- does not import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "apply": "autopeft.peft.adapters", "load_adapter": "autopeft.peft.adapters",
    "save_adapter": "autopeft.peft.adapters",
    "search": "autopeft.api", "UserError": "autopeft.core.errors", "InjectionHandle": "autopeft.peft.inject",
    "Plan": "autopeft.peft.plan", "PlanEntry": "autopeft.peft.plan",
}

if TYPE_CHECKING:
    from autopeft.api import search
    from autopeft.core.errors import UserError
    from autopeft.peft.adapters import apply, load_adapter, save_adapter
    from autopeft.peft.inject import InjectionHandle
    from autopeft.peft.plan import Plan, PlanEntry


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'autopeft' has no attribute {name!r}")


__all__ = ["InjectionHandle", "Plan", "PlanEntry", "UserError", "__version__", "apply", "load_adapter",
           "save_adapter", "search"]
