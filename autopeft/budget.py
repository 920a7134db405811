"""Parameter budgets: ``0.5%`` of the base model, or an absolute count like ``120k`` / ``1.5M``."""

from __future__ import annotations

import re

from autopeft.errors import UserError

_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(%|[kKmMbB]?)\s*$")


def parse_budget(text: str, base_params: int) -> int:
    """Maximum number of trainable (non-head) parameters; raises :class:`UserError` if malformed."""
    match = _PATTERN.match(str(text))
    if not match:
        raise UserError(
            f"--budget {text!r} is not a budget; write a percentage of the base model like 0.5% "
            "or a parameter count like 120k, 1.5M or 250000"
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "%":
        if not 0 < number <= 100:
            raise UserError(f"--budget {text!r}: a percentage must be in (0, 100]")
        return int(base_params * number / 100)
    if "." in match.group(1) and unit == "":
        raise UserError(f"--budget {text!r} is ambiguous: write {number}% for a percentage, "
                        "or a whole parameter count")
    value = int(round(number * _SUFFIX[unit]))
    if value <= 0:
        raise UserError(f"--budget {text!r} must be positive")
    return value


def format_count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)
