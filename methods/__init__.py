"""PEFT methods: one module per method, each registered in :data:`REGISTRY` on import."""

from autopeft.methods import adapter, bitfit, dora, ia3, lora, prefix, vera  # noqa: F401  (registration)
from autopeft.methods.base import REGISTRY, Method, Placement, get_method, make_config

__all__ = ["REGISTRY", "Method", "Placement", "get_method", "make_config"]
