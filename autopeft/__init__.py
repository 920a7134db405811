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
"""

from autopeft.api import apply, load_adapter, save_adapter
from autopeft.errors import UserError
from autopeft.inject import InjectionHandle
from autopeft.plan import Plan, PlanEntry

__version__ = "0.1.0"


def __getattr__(name: str):
    # `autopeft.search` is the submodule, made callable as autopeft.api.search (see api.make_callable):
    # importing the submodule anywhere would replace a plain function attribute of that name
    if name == "search":
        import importlib

        return importlib.import_module("autopeft.search")
    raise AttributeError(f"module 'autopeft' has no attribute {name!r}")

__all__ = ["InjectionHandle", "Plan", "PlanEntry", "UserError", "__version__", "apply", "load_adapter",
           "save_adapter", "search"]
