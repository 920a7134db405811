"""Optional parts of autopeft, and the ``pip install 'autopeft[extra]'`` that brings each one.

The core (search, train, eval, the methods) needs only the required dependencies. A feature that needs
an optional package asks :func:`require` before it starts, so a missing package is one line naming the
extra to install, not a traceback from deep inside the feature. Checking uses
``importlib.util.find_spec`` (nothing is imported).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from autopeft.core.errors import UserError


@dataclass(frozen=True)
class Extra:
    modules: tuple[str, ...]  # any one of them is enough
    feature: str  # what needs it, as the user asked for it


EXTRAS: dict[str, Extra] = {
    "ray": Extra(("ray",), "the Ray backend (--backend ray)"),
    "peft": Extra(("peft",), "the peft export (autopeft export --format peft)"),
    "quant": Extra(("bitsandbytes",), "a quantized base (--quantize nf4, fp4 or int8)"),
    "postgres": Extra(("psycopg2", "psycopg"), "a PostgreSQL storage (--storage postgresql://...)"),
    "kernels": Extra(("triton",), "the Triton kernels (AUTOPEFT_KERNELS=triton)"),
}


def installed(extra: str) -> bool:
    return any(found(module) for module in EXTRAS[extra].modules)


def require(extra: str) -> None:
    """A :class:`UserError` naming the extra to install when none of its packages is importable."""
    spec = EXTRAS[extra]
    if not installed(extra):
        raise UserError(f"{spec.feature} needs the optional package {spec.modules[0]}, which is not "
                        f"installed; install it with: pip install 'autopeft[{extra}]'")


def found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None in sys.modules
        return False
