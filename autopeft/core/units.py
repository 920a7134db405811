"""Quantities written as text, parsed and printed in one place.

- parameter budgets: ``0.5%`` of the base model, or an absolute count like ``120k`` / ``1.5M``;
- memory sizes: ``24GiB``, ``8GB``, ``512MiB`` (G/GB = 10^9, GiB = 2^30);
- durations: ``90s``, ``20m``, ``1.5h``.
"""

from __future__ import annotations

import re

from autopeft.core.errors import UserError

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


# --- memory sizes ----------------------------------------------------------------------------------

_MEMORY_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
                 "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_memory(text: str, flag: str = "--memory") -> int:
    """Bytes from ``"24GiB"``, ``"8GB"``, ``"512MiB"``, ``"1.5G"`` (G/GB = 10^9, GiB = 2^30)."""
    match = _MEMORY.match(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _MEMORY_UNITS or unit == "":
        raise UserError(f"{flag} {text!r} is not a memory size; write a number with a unit, e.g. 24GiB, 8GB or 512MiB")
    value = int(float(match.group(1)) * _MEMORY_UNITS[unit])
    if value <= 0:
        raise UserError(f"{flag} {text!r} must be positive")
    return value


def format_bytes(n: float | None, digits: int = 1) -> str:
    """``n`` bytes in binary units (``1.5 GiB``); ``-`` for an unknown size."""
    if n is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.{digits}f} {unit}"
    return f"{int(n)} B"


# --- durations -------------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")


def parse_duration(text: str, flag: str = "--time-budget") -> float:
    """Seconds from ``"90s"``, ``"20m"``, ``"1.5h"``, ``"2d"`` (a bare number is seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise UserError(f"{flag} {text!r} is not a duration; write e.g. 90s, 20m, 1.5h")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]
