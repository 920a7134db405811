"""Which units a one-shot supernet kept at each readout budget (``--strategy oneshot``): a readouts x
units grid read from ``oneshot/readouts.json``, drawn by the report (HTML) and ``autopeft show --readouts``
(terminal). Since every readout cuts one ranking, a unit kept at a small budget stays kept at the larger
ones (possibly at a larger size), so the grid reads as the order in which the supernet adds candidates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autopeft.core.units import format_count


def load_readouts(oneshot_dir: Path) -> dict[str, Any] | None:
    path = Path(oneshot_dir) / "readouts.json"
    return json.loads(path.read_text()) if path.is_file() else None


def readout_grid(record: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header (readout, budget, params, then every unit any readout keeps) and one row per readout:
    the method and size it keeps on each unit, ``""`` where it keeps nothing."""
    readouts = record.get("readouts", [])
    order = record.get("units") or []
    used = {unit for r in readouts for unit in r.get("kept", {})}
    units = [u for u in order if u in used] + sorted(used - set(order))
    rows = [[str(i), format_count(r["budget"]), format_count(r["params"]), *(r.get("kept", {}).get(u, "") for u in units)]
            for i, r in enumerate(readouts)]
    return ["readout", "budget", "params", *units], rows
