"""Given identical weights, autopeft's methods produce HF peft's outputs (peft is a test-only dependency).

Mapping of conventions:
- LoRA: ``layers.<i>.<site>.lora.lora_A`` == peft ``...<module>.lora_A.default.weight`` (r, d_in), same for B;
  scaling alpha / r (alpha / sqrt(r) with rsLoRA) in both.
- DoRA: ``...dora.lora.lora_A/B`` as LoRA; ``...dora.magnitude`` == peft ``lora_magnitude_vector.default.weight``.
- (IA)^3: ``layers.<i>.<site>.ia3.ia3_l`` (d,) == peft ``ia3_l.default`` viewed as (d, 1) on output sites and
  (1, d) on feed-forward (input) sites; peft's feedforward_modules == autopeft's ``down`` site.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import IA3Config, LoraConfig, get_peft_model

from autopeft.arch import arch_from_config
from autopeft.inject import inject
from autopeft.plan import Plan, PlanEntry
from autopeft.testing import tiny_batch, tiny_model

# module names HF peft targets for our sites, per family
PEFT_NAMES = {
    "bert": {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "o": "attention.output.dense", "up": "intermediate.dense", "down": "output.dense"},
    "llama": {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
              "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"},
}
LAYER_PREFIX = {"bert": "base_model.model.bert.encoder.layer", "llama": "base_model.model.model.layers"}


def _peft_regex(family: str, sites: tuple[str, ...]) -> str:
    names = "|".join(PEFT_NAMES[family][s].replace(".", r"\.") for s in sites)
    return rf".*\.layers?\.\d+\.({names})"


def _pair(family: str):
    ours = tiny_model(family, "classification")
    reference = copy.deepcopy(ours)
    return ours, reference


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize(("method", "rslora"), [("lora", False), ("lora", True), ("dora", False)])
def test_lora_and_dora_match_peft(family, method, rslora):
    ours, reference = _pair(family)
    sites = ("q", "v", "down")
    arch = arch_from_config(ours.config)
    plan = Plan((PlanEntry(method, tuple(range(arch.num_layers)), sites, {"r": 4, "alpha": 8, "rslora": rslora}),))
    handle = inject(ours, plan, train_head=False)
    peft_model = get_peft_model(reference, LoraConfig(r=4, lora_alpha=8, use_rslora=rslora, use_dora=method == "dora",
                                                      target_modules=_peft_regex(family, sites)))
    g = torch.Generator().manual_seed(0)
    peft_params = dict(peft_model.named_parameters())
    with torch.no_grad():
        for layer in range(arch.num_layers):
            for site in sites:
                prefix = f"{LAYER_PREFIX[family]}.{layer}.{PEFT_NAMES[family][site]}"
                injected = handle.modules[f"layers.{layer}.{site}.{method}"]
                module = injected.lora if method == "dora" else injected
                module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=g))
                peft_params[f"{prefix}.lora_A.default.weight"].copy_(module.lora_A)
                peft_params[f"{prefix}.lora_B.default.weight"].copy_(module.lora_B)
                if method == "dora":
                    injected.magnitude.mul_(1 + 0.2 * torch.randn(injected.magnitude.shape, generator=g))
                    peft_params[f"{prefix}.lora_magnitude_vector.default.weight"].copy_(injected.magnitude)
    batch = tiny_batch()
    ours.eval()
    peft_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, peft_model(**batch).logits, rtol=0, atol=1e-5)
    assert handle.num_adapter_params() == sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_ia3_matches_peft(family):
    ours, reference = _pair(family)
    sites = ("k", "v", "down")
    arch = arch_from_config(ours.config)
    plan = Plan((PlanEntry("ia3", tuple(range(arch.num_layers)), sites, {}),))
    handle = inject(ours, plan, train_head=False)
    peft_model = get_peft_model(reference, IA3Config(target_modules=_peft_regex(family, sites),
                                                     feedforward_modules=_peft_regex(family, ("down",))))
    g = torch.Generator().manual_seed(1)
    peft_params = dict(peft_model.named_parameters())
    with torch.no_grad():
        for layer in range(arch.num_layers):
            for site in sites:
                vector = handle.modules[f"layers.{layer}.{site}.ia3"].ia3_l
                vector.copy_(1 + 0.3 * torch.randn(vector.shape, generator=g))
                target = peft_params[f"{LAYER_PREFIX[family]}.{layer}.{PEFT_NAMES[family][site]}.ia3_l.default"]
                target.copy_(vector.view(target.shape))
    batch = tiny_batch()
    ours.eval()
    peft_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, peft_model(**batch).logits, rtol=0, atol=1e-5)
    assert handle.num_adapter_params() == sum(p.numel() for n, p in peft_model.named_parameters() if "ia3_" in n)
