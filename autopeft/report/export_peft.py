"""Export an autopeft adapter as a Hugging Face peft adapter, for the plans peft can represent.

peft holds one method per adapter, applied with one config. The mapping (checked by the crosscheck
tests and, at every export, by comparing both models' logits on a probe batch):

| plan | peft config |
|---|---|
| ``lora`` (any mix of ranks/alphas per layer and site), ``rslora`` | ``LoraConfig``: the most common r/alpha as ``r``/``lora_alpha``, the others in ``rank_pattern``/``alpha_pattern``; sites as ``target_modules`` plus ``layers_to_transform`` when the plan is a full layers x sites block, else the exact module names |
| ``dora`` | the same with ``use_dora=True``; ``magnitude`` -> ``lora_magnitude_vector`` |
| ``lora_fa`` | ``LoraConfig`` (inference-equivalent; peft would train A too) |
| ``ia3`` | ``IA3Config``; the ``down`` site is a ``feedforward_module`` (its input is scaled) |
| ``vera`` | ``VeraConfig(save_projection=True)`` with autopeft's frozen A, B stored in the file; only when every site has the same shape (autopeft draws A, B per shape, peft shares one pair) |
| ``prompt`` | ``PromptTuningConfig`` for causal LMs (peft's logits at the real tokens are autopeft's; peft also returns logits at the virtual tokens) |

Refused although the tensors map one-to-one: ``prefix``/``ptuning_v2`` (peft feeds prefixes as a key/value
cache, which shifts the real tokens' positions by the prefix length; autopeft keeps them, see
``methods/prefix.py``) and ``prompt`` for classification (peft's classification heads read the virtual
tokens' positions; autopeft's read the real tokens).

The task head (classifier) is saved through peft's ``modules_to_save``. Anything else (several methods
in one plan, bottleneck adapters, BitFit, LN tuning, fused GPT-2 q/k/v slices, a plan with
no adapter modules) is refused with one line saying why, suggesting ``--format autopeft``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from autopeft.core.errors import UserError
from autopeft.core.extras import require
from autopeft.peft.plan import Placement, Plan

PEFT_METHODS = {"lora": "LoRA", "lora_fa": "LoRA", "dora": "DoRA", "ia3": "(IA)3", "vera": "VeRA",
                "prefix": "prefix tuning", "ptuning_v2": "prefix tuning", "prompt": "prompt tuning"}
NO_PEFT_EQUIVALENT = {"adapter": "peft has no bottleneck adapters", "parallel_adapter": "peft has no parallel adapters",
                      "bitfit": "peft has no BitFit",
                      "adalora": "exporting AdaLoRA's pruned SVD state to peft is not implemented",
                      "ptuning": "autopeft's P-tuning prompt encoder is not peft's",
                      "ln_tuning": "exporting LN tuning to peft's LNTuningConfig is not implemented"}
TOLERANCE = 1e-4
# measured on tiny BERT and Llama models (tests/test_export.py); the tensors map one-to-one, the semantics differ
PREFIX_MISMATCH = ("peft feeds prefixes as a key/value cache, which shifts the real tokens' positions by the prefix "
                   "length, while autopeft's prefixes leave positions unchanged")
PROMPT_MISMATCH = ("peft's classification models read the soft prompt's positions (BERT pools the first virtual "
                   "token, Llama indexes the last token without the prompt offset), autopeft's read the real tokens")


class NotRepresentable(UserError):
    """The plan has no peft equivalent."""


def _refuse(why: str) -> NotRepresentable:
    return NotRepresentable(f"peft cannot represent this plan: {why}; use --format autopeft")


@dataclass
class PeftExport:
    out: Path
    method: str
    max_logit_diff: float
    config: dict[str, Any]


def check_representable(plan: Plan, placements: list[Placement], task: str) -> str:
    """The plan's single peft method, or :class:`NotRepresentable` naming the reason."""
    methods = sorted({p.method for p in placements})
    if not methods:
        raise _refuse("it has no adapter modules (head only)")
    kinds = {PEFT_METHODS.get(m, m) for m in methods}
    if len(kinds) > 1:
        raise _refuse(f"it mixes {', '.join(methods)}, and a peft adapter holds one method")
    method = methods[0] if len(methods) == 1 else "lora"  # lora + lora_fa: both plain LoRA in peft
    method = "prefix" if method == "ptuning_v2" else method
    if method not in PEFT_METHODS:
        raise _refuse(f"{NO_PEFT_EQUIVALENT.get(method, f'peft has no {method!r} method')} ({method!r})")
    fused = sorted({p.site for p in placements if p.linear is not None and p.linear.out_slice[1] > 1})
    if fused:
        raise _refuse(f"site(s) {', '.join(fused)} are slices of a fused projection, which peft adapts as a whole")
    if method == "prefix":
        raise _refuse(PREFIX_MISMATCH)
    if method == "prompt" and task == "classification":
        raise _refuse(PROMPT_MISMATCH)
    if any(getattr(p.config, "gated", False) for p in placements):
        raise _refuse("its LoRA is gated (UniPELT), and peft has no gated LoRA")
    return method


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


def _mode(values: list[Any]) -> Any:
    return Counter(values).most_common(1)[0][0]


def _targets(model: nn.Module, arch, placements: list[Placement]) -> tuple[dict[str, Placement], dict[str, Any]]:
    """Module name -> placement, and the compact targeting kwargs (target_modules, layers_to_transform)."""
    names = _module_names(model)
    by_name = {}
    for p in placements:
        module = arch.blocks(model)[p.layer].get_submodule(p.linear.path)
        by_name[names[id(module)]] = p
    layers = sorted({p.layer for p in placements})
    paths = sorted({p.linear.path for p in placements})
    full_block = len(placements) == len(layers) * len(paths)
    compact: dict[str, Any] = {"target_modules": paths}
    if layers != list(range(arch.num_layers)):
        compact["layers_to_transform"] = layers
    return by_name, compact if full_block else {"target_modules": sorted(by_name)}


def _lora_config(cls, by_name: dict[str, Placement], targeting: dict[str, Any], **extra):
    configs = {name: p.config for name, p in by_name.items()}
    r = _mode([c.r for c in configs.values()])
    alpha = _mode([c.alpha for c in configs.values()])
    rslora = {c.rslora for c in configs.values()}
    if len(rslora) > 1:
        raise _refuse("it mixes rsLoRA and plain LoRA scaling, which peft sets once per adapter")
    return cls(r=r, lora_alpha=alpha, lora_dropout=_mode([c.dropout for c in configs.values()]),
               use_rslora=rslora.pop(), rank_pattern={n: c.r for n, c in configs.items() if c.r != r},
               alpha_pattern={n: c.alpha for n, c in configs.items() if c.alpha != alpha}, **targeting, **extra)


def build_peft_config(method: str, model: nn.Module, arch, placements: list[Placement], task: str,
                      head_modules: list[str]):
    import peft

    task_type = "SEQ_CLS" if task == "classification" else "CAUSAL_LM"
    common = {"task_type": task_type}
    if method == "prompt":
        return peft.PromptTuningConfig(num_virtual_tokens=placements[0].config.length, **common), {}
    if head_modules:
        common["modules_to_save"] = head_modules
    by_name, targeting = _targets(model, arch, placements)
    if method in ("lora", "lora_fa", "dora"):
        return _lora_config(peft.LoraConfig, by_name, targeting, use_dora=method == "dora", **common), by_name
    if method == "ia3":
        # exact module names: peft requires feedforward_modules to be a subset of target_modules, name by name
        feedforward = sorted(n for n, p in by_name.items() if p.site == "down")
        return peft.IA3Config(target_modules=sorted(by_name), feedforward_modules=feedforward, **common), by_name
    if method == "vera":
        configs = {(p.config.r, p.config.d_init, p.config.seed) for p in placements}
        shapes = {(p.linear.in_features, p.linear.width) for p in placements}
        if len(configs) > 1:
            raise _refuse("VeRA options differ across sites; peft uses one r for all")
        if len(shapes) > 1:
            raise _refuse("VeRA sits on projections of different shapes; autopeft draws frozen A, B per shape while "
                          "peft shares one pair")
        r, d_init, _ = configs.pop()
        return peft.VeraConfig(r=r, d_initial=d_init, save_projection=True, **targeting, **common), by_name
    raise _refuse(f"no peft mapping for {method!r}")


def _wrapped(peft_model: nn.Module, originals: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """peft's layer that wraps each original projection (found by identity, whatever its name)."""
    by_id = {id(m): name for name, m in originals.items()}
    found = {}
    for module in peft_model.modules():
        base = getattr(module, "base_layer", None)
        if base is not None and id(base) in by_id and not hasattr(base, "base_layer"):
            found[by_id[id(base)]] = module
    return found


@torch.no_grad()
def _copy_weights(method: str, peft_model, state: dict[str, torch.Tensor], by_name: dict[str, Placement],
                  layers: dict[str, nn.Module], arch) -> None:
    if method == "prompt":
        peft_model.prompt_encoder["default"].embedding.weight.copy_(state["input.prompt.prompt"])
        return
    vera_done = False
    for name, p in by_name.items():
        layer, key = layers[name], p.key
        if p.method in ("lora", "lora_fa"):
            layer.lora_A["default"].weight.copy_(state[f"{key}.lora_A"])
            layer.lora_B["default"].weight.copy_(state[f"{key}.lora_B"])
        elif p.method == "dora":
            layer.lora_A["default"].weight.copy_(state[f"{key}.lora.lora_A"])
            layer.lora_B["default"].weight.copy_(state[f"{key}.lora.lora_B"])
            layer.lora_magnitude_vector["default"].weight.copy_(state[f"{key}.magnitude"])
        elif p.method == "ia3":
            target = layer.ia3_l["default"]
            target.copy_(state[f"{key}.ia3_l"].view(target.shape))
        elif p.method == "vera":
            from autopeft.methods.vera import shared_projections

            layer.vera_lambda_d["default"].copy_(state[f"{key}.lambda_d"])
            layer.vera_lambda_b["default"].copy_(state[f"{key}.lambda_b"])
            if not vera_done:
                a, b = shared_projections(p.config.r, p.linear.in_features, p.linear.width, p.config.seed)
                peft_model.base_model.vera_A["default"].copy_(a)
                peft_model.base_model.vera_B["default"].copy_(b)
                vera_done = True


def probe_batch(vocab_size: int, pad_token_id: int | None, batch: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    """Random token ids with right padding in all but the first row (so masks matter)."""
    g = torch.Generator().manual_seed(0)
    low = 1 if pad_token_id == 0 else 0
    ids = torch.randint(low, vocab_size, (batch, length), generator=g)
    if pad_token_id is not None:
        ids[ids == pad_token_id] = (pad_token_id + 1) % vocab_size
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):
        mask[row, length - 2 * row:] = 0
    if pad_token_id is not None:
        ids = ids.masked_fill(mask == 0, pad_token_id)
    return {"input_ids": ids, "attention_mask": mask}


def export_peft(adapter_dir: Path, out: Path) -> PeftExport:
    """Write ``out`` as a peft adapter directory; verify it reproduces autopeft's logits first."""
    require("peft")
    from peft import get_peft_model

    from autopeft.peft.artifacts import load_adapter
    from autopeft.peft.inject import HEAD_PREFIX, head_parameters, inject
    from autopeft.training.models import load_model

    plan, state, config = load_adapter(adapter_dir)
    task = config.get("task", "classification")
    spec = config.get("base_model_source") or config["base_model"]
    loaded = load_model(spec, task, num_labels=max(2, len(config.get("label_names") or [])),
                        trust_remote_code=bool(config.get("data", {}).get("trust_remote_code")))
    model, arch = loaded.model, loaded.arch
    placements = plan.placements(arch)
    method = check_representable(plan, placements, task)
    batch = probe_batch(model.config.vocab_size, getattr(model.config, "pad_token_id", None))
    with inject(model, plan, arch, train_head=task == "classification") as handle:
        handle.load_state_dict(state, source=str(adapter_dir))
        expected = model(**batch).logits.float()
    head = head_parameters(model) if task == "classification" else {}
    with torch.no_grad():
        for name, param in head.items():
            param.copy_(state[HEAD_PREFIX + name])
    head_modules = sorted({name.rpartition(".")[0] for name in head})
    names = _module_names(model)
    originals = {names[id(arch.blocks(model)[p.layer].get_submodule(p.linear.path))]: arch.blocks(model)[p.layer]
                 .get_submodule(p.linear.path) for p in placements if p.linear is not None}
    peft_config, by_name = build_peft_config(method, model, arch, placements, task, head_modules)
    peft_model = get_peft_model(model, peft_config)
    layers = _wrapped(peft_model, originals)
    if set(layers) != set(by_name):
        raise RuntimeError(f"peft wrapped {sorted(set(layers) ^ set(by_name))[:3]} differently from the plan")
    _copy_weights(method, peft_model, state, by_name, layers, arch)
    peft_model.eval()
    with torch.no_grad():
        got = peft_model(**batch).logits.float()
    if method == "prompt" and got.dim() == 3 and got.shape[1] > expected.shape[1]:
        got = got[:, got.shape[1] - expected.shape[1]:]  # peft also returns logits at the virtual tokens
    diff = (got - expected).abs().max().item() if got.shape == expected.shape else float("inf")
    if not diff <= TOLERANCE * max(1.0, expected.abs().max().item()):
        why = f"{method} on the {arch.family.name} family"
        raise _refuse(f"the converted peft model's logits differ from autopeft's by up to {diff:.2e} ({why})")
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))
    return PeftExport(out, method, diff, peft_config.to_dict())
