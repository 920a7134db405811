"""PEFT methods: one module per method, each registered in :data:`REGISTRY` on import.

A method file holds its config, count and catalogue entry and imports no torch; its ``nn.Module`` s are in
:mod:`autopeft.methods.modules`, imported when a module is built (see :mod:`autopeft.methods.base`).
"""

from autopeft.methods import (  # noqa: F401  (registration)
    adalora,
    adapter,
    bitfit,
    dora,
    ia3,
    ln_tuning,
    lora,
    parallel_adapter,
    prefix,
    prompt,
    ptuning,
    ptuning_v2,
    vera,
)
from autopeft.methods.base import REGISTRY, Method, Placement, get_method, make_config

__all__ = ["REGISTRY", "Method", "Placement", "get_method", "make_config"]
