"""Apply a plan to a model, count its base, save and load adapter directories with a base-model check.

Base-model check: an adapter records its base model's name, source, family, parameter count and a
fingerprint (a hash of the shape-defining config fields, plus 16 probe values of the input embedding
matrix). ``load_adapter`` refuses a model whose family, parameter count or fingerprint differ, naming
both models. Probe values are compared with a tolerance (1e-2 relative), so loading the base in bf16
still passes; adapters written before fingerprints existed are checked on family and parameter count.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from autopeft.core.arch import ModelArch, arch_from_config
from autopeft.core.errors import UserError
from autopeft.peft.artifacts import load_adapter as read
from autopeft.peft.artifacts import save_adapter as write
from autopeft.peft.inject import InjectionHandle, head_parameters, inject
from autopeft.peft.plan import Plan

_HANDLES: weakref.WeakKeyDictionary[nn.Module, InjectionHandle] = weakref.WeakKeyDictionary()
CONFIG_KEYS = ("model_type", "hidden_size", "n_embd", "dim", "num_hidden_layers", "n_layer", "n_layers",
               "num_attention_heads", "n_head", "n_heads", "num_key_value_heads", "head_dim", "intermediate_size",
               "n_inner", "hidden_dim", "vocab_size", "max_position_embeddings", "n_positions")
PROBES = 16


def count_base_params(model: nn.Module) -> int:
    """Pretrained parameters: the backbone, plus an untied LM head; never a new classification head."""
    head = {id(p) for p in head_parameters(model).values()}
    is_classifier = "SequenceClassification" in type(model).__name__
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (is_classifier and id(p) in head):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def apply(model: nn.Module, plan: Plan | str | Path, arch: ModelArch | None = None,
          train_head: bool = True) -> InjectionHandle:
    """Freeze ``model`` and add ``plan``'s modules (a :class:`Plan` or a plan.json / adapter dir path)."""
    if not isinstance(plan, Plan):
        plan = Plan.load(plan)
    handle = inject(model, plan, arch, train_head=train_head)
    _HANDLES[model] = handle
    return handle


def _handle_of(handle_or_model: InjectionHandle | nn.Module) -> InjectionHandle:
    if isinstance(handle_or_model, InjectionHandle):
        handle = handle_or_model
    else:
        handle = _HANDLES.get(handle_or_model)  # type: ignore[arg-type]
        if handle is None:
            raise UserError("this model has no autopeft plan applied; call autopeft.apply(model, plan) first")
    if handle._removed:
        raise UserError("the plan was removed from this model (handle.remove()); there is no adapter to save")
    return handle


def base_fingerprint(model: nn.Module, adapter_params: int = 0) -> dict[str, Any]:
    """Name, family, parameter count and fingerprint of ``model``'s base (adapter parameters excluded)."""
    config = model.config
    shape = {k: getattr(config, k) for k in CONFIG_KEYS if getattr(config, k, None) is not None}
    embeddings = model.get_input_embeddings().weight
    flat = embeddings.detach().reshape(-1)
    # evenly spaced probes in exact integer arithmetic (a float32 linspace overshoots past 2^24 elements)
    index = torch.arange(PROBES, dtype=torch.int64) * (flat.numel() - 1) // (PROBES - 1)
    return {
        "name": getattr(config, "_name_or_path", "") or type(model).__name__,
        "family": arch_from_config(config).family.name,
        "base_params": count_base_params(model) - adapter_params,
        "config_hash": hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16],
        "embedding_probe": [round(float(v), 6) for v in flat[index.to(flat.device)].float().cpu()],
    }


def save_adapter(handle_or_model: InjectionHandle | nn.Module, directory: str | Path, *,
                 metrics: dict[str, Any] | None = None, base_model: str | None = None,
                 data: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> Path:
    """Write an adapter directory (plan.json, adapter.safetensors, autopeft_config.json[, metrics.json]).

    ``base_model`` defaults to the name the model was loaded from; ``data``/``train`` are optional records
    of how it was trained (``autopeft eval`` needs ``data`` to rebuild the dataset).
    """
    handle = _handle_of(handle_or_model)
    model = handle.model
    fingerprint = base_fingerprint(model, handle.num_adapter_params())
    fingerprint["name"] = base_model or fingerprint["name"]
    is_classifier = "SequenceClassification" in type(model).__name__
    labels = getattr(model.config, "id2label", None) or {}
    config = {
        "base_model": base_model or fingerprint["name"],
        "base_model_source": base_model or fingerprint["name"],
        "base_params": fingerprint["base_params"],
        "family": fingerprint["family"],
        "task": "classification" if is_classifier else "causal-lm",
        "label_names": [labels[i] for i in sorted(labels)] if is_classifier else [],
        "base_fingerprint": fingerprint,
        **({"data": data} if data is not None else {}),
        **({"train": train} if train is not None else {}),
    }
    directory = Path(directory)
    write(directory, handle.plan, {k: v.cpu() for k, v in handle.state_dict().items()}, config, metrics)
    return directory


def _describe(record: dict[str, Any]) -> str:
    return (f"'{record.get('name') or record.get('base_model', '?')}' ({record.get('family', '?')}, "
            f"{record.get('base_params', '?')} params)")


def check_base(model: nn.Module, config: dict[str, Any], source: str, current: dict[str, Any] | None = None) -> None:
    """Refuse, naming both models, when ``model`` is not the base an adapter was made for (``current``:
    ``model``'s fingerprint when already known, e.g. taken before quantization)."""
    recorded = dict(config.get("base_fingerprint") or {})
    recorded.setdefault("name", config.get("base_model"))
    recorded.setdefault("family", config.get("family"))
    recorded.setdefault("base_params", config.get("base_params"))
    current = current or base_fingerprint(model)
    differences = [label for key, label in (("family", "family"), ("base_params", "parameter count"),
                                            ("config_hash", "architecture config"))
                   if recorded.get(key) is not None and recorded[key] != current[key]]
    probe = recorded.get("embedding_probe")
    if probe is not None and not differences and not torch.allclose(
            torch.tensor(probe), torch.tensor(current["embedding_probe"]), rtol=1e-2, atol=1e-3):
        differences.append("weights")
    if differences:
        raise UserError(f"{source} was made for base model {_describe(recorded)}, not for this model "
                        f"{_describe(current)} (different {', '.join(differences)}); load it onto "
                        f"{config.get('base_model_source') or recorded['name']}")


def load_adapter(model: nn.Module, directory: str | Path) -> InjectionHandle:
    """Apply the adapter in ``directory`` (plan + weights, task head included) to ``model``."""
    plan, state, config = read(directory)
    check_base(model, config, str(directory))
    handle = apply(model, plan, train_head=any(k.startswith("head.") for k in state))
    try:
        reference = next(model.parameters())
        handle.load_state_dict({k: v.to(reference.device) for k, v in state.items()}, source=str(directory))
    except BaseException:
        handle.remove()
        raise
    return handle


# --- search -----------------------------------------------------------------------------------------
