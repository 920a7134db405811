"""The Python API: apply a plan, save and load adapters, and search, from Python.

Example (runs as a test: ``tests/test_api.py`` executes every example of this module)::

    import autopeft
    from autopeft.testing import tiny_batch, tiny_model

    model = tiny_model("bert")                                   # any supported transformers model
    plan = autopeft.Plan.from_dict({"entries": [
        {"method": "lora", "layers": [0, 1, 2], "sites": ["q", "v"], "options": {"r": 4}}]})
    handle = autopeft.apply(model, plan)     # base frozen; LoRA + task head trainable; a normal nn.Module
    ...                                      # train with any loop or HF Trainer
    autopeft.save_adapter(model, "adapter_dir")                  # plan + weights + base-model record

    fresh = tiny_model("bert")
    handle = autopeft.load_adapter(fresh, "adapter_dir")         # checks it is the same base model
    handle.remove()                                              # the base model, bitwise

``autopeft.search(**options)`` runs ``autopeft search`` with keyword arguments named like its options
(``--time-budget 20m`` -> ``time_budget="20m"``); it is built on the command's own argument parser,
so every option the CLI has, this has, with the same defaults and checks. It returns the study.

Base-model check: an adapter records its base model's name, source, family, parameter count and a
fingerprint (a hash of the shape-defining config fields, plus 16 probe values of the input embedding
matrix). ``load_adapter`` refuses a model whose family, parameter count or fingerprint differ, naming
both models. Probe values are compared with a tolerance (1e-2 relative), so loading the base in bf16
still passes; adapters written before fingerprints existed are checked on family and parameter count.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import time
import types
import weakref
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from autopeft.arch import ModelArch, arch_from_config
from autopeft.errors import UserError
from autopeft.inject import InjectionHandle, inject
from autopeft.plan import Plan

_HANDLES: weakref.WeakKeyDictionary[nn.Module, InjectionHandle] = weakref.WeakKeyDictionary()
CONFIG_KEYS = ("model_type", "hidden_size", "n_embd", "dim", "num_hidden_layers", "n_layer", "n_layers",
               "num_attention_heads", "n_head", "n_heads", "num_key_value_heads", "head_dim", "intermediate_size",
               "n_inner", "hidden_dim", "vocab_size", "max_position_embeddings", "n_positions")
PROBES = 16


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
    from autopeft.models import count_base_params

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
    from autopeft.artifacts import save_adapter as write

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
    from autopeft.artifacts import load_adapter as read

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
class _CallableModule(types.ModuleType):
    """A module that is also :func:`search`: see :func:`make_callable`."""

    def __call__(self, **options: Any):
        return search(**options)


def make_callable(module_name: str) -> None:
    """Make the module ``autopeft.search`` callable as :func:`search`.

    Importing the submodule ``autopeft.search`` sets the package attribute ``autopeft.search`` to the
    module, so the API function of the same name cannot be a plain attribute; the module calls it instead.
    """
    sys.modules[module_name].__class__ = _CallableModule


def _search_parser():
    from autopeft.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if hasattr(a, "choices"))  # type: ignore[union-attr]
    return parser, sub.choices["search"]


def search_options() -> dict[str, Any]:
    """Keyword arguments :func:`search` accepts, with their defaults (those of ``autopeft search``)."""
    _, search_parser = _search_parser()
    return {a.dest: a.default for a in search_parser._actions if a.option_strings and a.dest != "help"}


def _argv(search_parser, options: dict[str, Any]) -> list[str]:
    actions = {a.dest: a for a in search_parser._actions if a.option_strings and a.dest != "help"}
    unknown = sorted(set(options) - set(actions))
    if unknown:
        raise TypeError(f"autopeft.search() got unknown option(s) {unknown}; options: {', '.join(sorted(actions))}")
    argv: list[str] = []
    for name, value in options.items():
        action, flag = actions[name], actions[name].option_strings[-1]
        if action.nargs == 0:  # store_true / store_false / count flags
            if bool(value) != bool(action.default):
                argv.append(flag)
        elif value is None:
            continue
        elif isinstance(value, (list, tuple)):
            if type(action).__name__ == "_AppendAction":
                for item in value:
                    argv += [flag, str(item)]
            else:
                argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def search(**options: Any):
    """Run ``autopeft search`` with these options; return the finished study (a ``StudyView``).

    Example: ``autopeft.search(model="minilm", dataset="rotten_tomatoes", budget="0.5%", trials=12,
    out="runs/rt")``; ``study.best()``, ``study.front`` and ``study.summary`` hold the results.
    """
    from autopeft.cli import _quiet_libraries
    from autopeft.study_view import load_study_view

    parser, search_parser = _search_parser()
    _quiet_libraries()  # as the CLI does: no transformers/datasets progress bars, Optuna warnings only
    if options.get("out") is None:
        options["out"] = f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    argv = ["search", *_argv(search_parser, options)]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv)
    except SystemExit:
        message = [line for line in stderr.getvalue().splitlines() if line.strip()]
        raise UserError(message[-1].split("error: ", 1)[-1] if message else f"invalid options {argv}") from None
    args.handler(args)
    return load_study_view(Path(options["out"]))
