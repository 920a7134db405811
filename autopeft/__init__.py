"""autopeft: search hybrid parameter-efficient fine-tuning architectures under budgets.

Python API (the CLI is built on the same pieces)::

    from autopeft import Plan, apply
    plan = Plan.load("runs/demo/best/plan.json")
    handle = apply(model, plan)        # model stays a normal nn.Module; only the plan's weights train
    ...
    handle.remove()                    # the base model is bitwise what it was
"""

from autopeft.errors import UserError
from autopeft.inject import InjectionHandle
from autopeft.inject import inject as apply
from autopeft.plan import Plan, PlanEntry

__version__ = "0.1.0"
__all__ = ["InjectionHandle", "Plan", "PlanEntry", "UserError", "apply", "__version__"]
