"""Adapter directories: what ``best/``, ``autopeft train`` and ``autopeft eval`` read and write.

    plan.json               the plan (autopeft plan format)
    adapter.safetensors     adapter + task-head weights by stable names (layers.<i>.<site>.<method>.*, head.*)
    autopeft_config.json    everything needed to rebuild the model and data: base model, dataset and
                            columns, task, label names, split seed, max length, training config
    metrics.json            validation metrics (and test metrics for a final pick)

Weights are safetensors only (never pickle). A corrupted or truncated file is a clear error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from autopeft.core.errors import UserError
from autopeft.peft.plan import Plan

ADAPTER_FORMAT = 1
WEIGHTS = "adapter.safetensors"
CONFIG = "autopeft_config.json"


def write_json(path: Path, data: Any) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def save_adapter(directory: Path, plan: Plan, state: dict[str, torch.Tensor], config: dict[str, Any],
                 metrics: dict[str, Any] | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{WEIGHTS}.tmp"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
              metadata={"format": "autopeft", "autopeft_adapter": str(ADAPTER_FORMAT)})
    os.replace(tmp, directory / WEIGHTS)
    plan.save(directory / "plan.json")
    write_json(directory / CONFIG, {"autopeft_adapter": ADAPTER_FORMAT, **config})
    if metrics is not None:
        write_json(directory / "metrics.json", metrics)


def load_adapter(directory: str | Path) -> tuple[Plan, dict[str, torch.Tensor], dict[str, Any]]:
    directory = Path(directory)
    for name in ("plan.json", WEIGHTS, CONFIG):
        if not (directory / name).is_file():
            raise UserError(f"{directory} is not an adapter directory: {name} is missing")
    try:
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{directory / CONFIG}: not a text file") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{directory / CONFIG}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(config, dict):
        raise UserError(f"{directory / CONFIG}: not an autopeft adapter config (expected a JSON object)")
    version = config.get("autopeft_adapter")
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{directory / CONFIG}: missing or invalid 'autopeft_adapter' format number; "
                        "was this directory written by autopeft?")
    if version > ADAPTER_FORMAT:
        raise UserError(f"{directory}: adapter format {version!r} is newer than this autopeft "
                        f"understands ({ADAPTER_FORMAT}); upgrade autopeft")
    plan = Plan.load(directory / "plan.json")
    try:
        state = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{directory / WEIGHTS} is corrupted or truncated ({exc})") from None
    return plan, state, config
