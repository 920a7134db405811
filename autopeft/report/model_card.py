"""README.md model cards for exported adapters (autopeft and peft formats)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from autopeft.core.units import format_count
from autopeft.peft.plan import Plan

Format = Literal["autopeft", "peft"]


def _metrics_lines(metrics: dict[str, Any]) -> list[str]:
    lines = []
    for split in ("validation", "test"):
        values = metrics.get(split)
        if isinstance(values, dict) and values:
            text = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
            lines.append(f"- {split}: {text}")
    return lines or ["- (no metrics recorded)"]


def plan_json(plan: Plan) -> str:
    """plan.json with one entry per line (readable in a card, still valid JSON)."""
    entries = ",\n  ".join(json.dumps(e.to_dict(), sort_keys=True) for e in plan.entries)
    return '{"autopeft_plan": 1, "entries": [\n  ' + entries + "\n]}" if plan.entries else json.dumps(plan.to_dict())


def _loader(base: str, source: str) -> tuple[str, str]:
    """(import line, expression) that give the base model's folder or hub id."""
    from autopeft.training.models import BUILTIN_MODELS

    if base in BUILTIN_MODELS:  # built-in offline alias: a folder inside an installed package
        return "from autopeft.training.models import resolve_model\n", f'resolve_model("{base}")'
    return "", f'"{source}"'


def model_card(fmt: Format, plan: Plan, config: dict[str, Any], metrics: dict[str, Any],
               peft_method: str | None = None) -> str:
    base = config.get("base_model", "?")
    source = config.get("base_model_source", base)
    data = config.get("data", {}) if isinstance(config.get("data"), dict) else {}
    task = config.get("task", "classification")
    labels = config.get("label_names") or []
    params = metrics.get("adapter_params")
    pct = metrics.get("params_pct")
    train = config.get("train", {}) if isinstance(config.get("train"), dict) else {}
    if config.get("precision_ran") and train.get("precision") != config["precision_ran"]:
        train = {**train, "precision": f"{train.get('precision', '?')} (ran {config['precision_ran']})"}
    auto_cls = "AutoModelForSequenceClassification" if task == "classification" else "AutoModelForCausalLM"
    num_labels = f", num_labels={len(labels)}" if task == "classification" else ""
    imports, where = _loader(base, source)
    # the hub's base_model field only for hub ids (not local folders or built-in aliases)
    hub_id = base.count("/") == 1 and not base.startswith((".", "/", "~")) and not Path(base).exists()
    header = ["---", *([f"base_model: {base}"] if hub_id else []), "library_name: peft" if fmt == "peft" else "library_name: autopeft",
              "tags: [autopeft, peft]" if fmt == "peft" else "tags: [autopeft]", "---", ""]
    lines = header + [
        f"# autopeft adapter: {plan.describe() if plan.entries else 'task head only'}",
        "",
        "Found by autopeft, a search over hybrid parameter-efficient fine-tuning plans."
        if fmt == "autopeft" else f"Exported from autopeft as a peft {peft_method} adapter; loading it with peft "
        "reproduces autopeft's logits (checked at export on a probe batch).",
        "",
        "| | |", "|---|---|",
        f"| base model | `{base}` ({config.get('family', '?')} family; source `{source}`) |",
        f"| dataset | `{data.get('dataset', '?')}` (task {task}"
        + (f", labels {', '.join(map(str, labels))}" if labels else "") + f", split seed {config.get('split_seed', '?')}) |",
        f"| trainable params | {format_count(int(params)) if isinstance(params, (int, float)) else '?'}"
        + (f" ({pct:.3f}% of the base model)" if isinstance(pct, (int, float)) else "")
        + (f" + {format_count(int(metrics['head_params']))} in the task head" if metrics.get("head_params") else "")
        + " |",
        f"| training | {', '.join(f'{k} {v}' for k, v in train.items() if k in ('steps', 'batch_size', 'lr', 'precision', 'seed')) or '?'} |",
        f"| max length | {data.get('max_length', '?')} tokens |",
        "",
        "## Metrics",
        *_metrics_lines(metrics),
        "",
        "## Plan",
        "```json", plan_json(plan), "```",
        "",
        "## How to load",
    ]
    if fmt == "autopeft":
        lines += [
            "```python",
            "import autopeft",
            f"from transformers import {auto_cls}",
            f"{imports}model = {auto_cls}.from_pretrained({where}{num_labels})",
            'handle = autopeft.load_adapter(model, "THIS_DIR")  # checks the base model, loads plan + weights',
            "```",
            "or from the command line: `autopeft eval THIS_DIR --split test`.",
        ]
    else:
        lines += [
            "```python",
            "from peft import PeftModel",
            f"from transformers import {auto_cls}",
            f"{imports}base = {auto_cls}.from_pretrained({where}{num_labels})",
            'model = PeftModel.from_pretrained(base, "THIS_DIR")',
            "```",
        ]
    return "\n".join(lines) + "\n"


def write_card(out: Path, fmt: Format, plan: Plan, config: dict[str, Any], metrics: dict[str, Any],
               peft_method: str | None = None) -> Path:
    path = out / "README.md"
    path.write_text(model_card(fmt, plan, config, metrics, peft_method))
    return path
