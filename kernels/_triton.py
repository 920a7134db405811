"""Where Triton can run, and lazy loading of the kernel modules.

Kernel modules (``kernel.py`` of each op, and ``_tl``) are imported on the first Triton call only, so
that importing autopeft never imports Triton's compiler. Each records whether it was decorated for the
interpreter as ``INTERPRET``.

``TRITON_INTERPRET=1`` runs kernels on CPU tensors, but only if it is set before Triton is first
imported: ``triton.jit`` reads it when it decorates, and Triton's own ``tl.zeros`` etc. are decorated
when Triton is imported (bitsandbytes and transformers import Triton early). The tests therefore run the
interpreter in a fresh process; :func:`check_interpreter` turns a late setting into a clear error.

The Triton 3.9 interpreter multiplies bf16 tiles wrongly in ``tl.dot`` (it treats their bits as
integers), so under the interpreter kernels upcast dot operands to fp32 first. The product of two
bf16/fp16 numbers is exact in fp32 and accumulation is fp32 either way, so the upcast computes what
the tensor-core MMA computes; everything else (loads, NF4 decoding, epilogues, masks) runs unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from functools import cache
from types import ModuleType

import torch

from autopeft.core.errors import UserError
from autopeft.core.extras import installed

_TRUE = {"1", "true", "yes", "on", "y"}


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` asks Triton to run kernels on the CPU (same parsing as Triton)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE


@cache
def triton_installed() -> bool:
    return installed("kernels")  # the one check of every optional extra (autopeft.core.extras)


def check_interpreter() -> None:
    """Raise if Triton was imported before ``TRITON_INTERPRET=1`` was set (its library is then compiled-only)."""
    language = sys.modules.get("triton.language")
    if language is not None and type(language.zeros).__name__ != "InterpretedFunction":
        raise UserError("TRITON_INTERPRET=1 was set after Triton was imported; set it in the environment "
                        "before starting Python (e.g. TRITON_INTERPRET=1 python ...)")


def load(module_name: str) -> ModuleType:
    """Import a kernel module on first use."""
    return sys.modules.get(module_name) or importlib.import_module(module_name)


def dot_precision() -> str:
    """Input precision of fp32 ``tl.dot``: TF32 only where torch allows it for its own matmuls."""
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def block_rank(rank: int) -> int:
    """Rank padded to a power of two >= 16 (the smallest tile ``tl.dot`` accepts)."""
    return max(16, 1 << (rank - 1).bit_length())
