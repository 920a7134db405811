"""PEFT methods: one module per method, each registered in :data:`REGISTRY` on import."""

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
