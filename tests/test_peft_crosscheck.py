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

from autopeft.core.arch import arch_from_config
from autopeft.peft.inject import inject
from autopeft.peft.plan import Plan, PlanEntry
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


# --- VeRA, AdaLoRA, and MiniLM (appended with the AdaLoRA/QLoRA/merge work) --------------------------
# VeRA: peft keeps ONE pair (vera_A (r, max d_in), vera_B (max d_out, r)) and slices it per layer; autopeft
# draws one pair per projection shape. Given identical matrices (peft's slices copied into autopeft's
# buffers), ``...vera.lambda_d``/``lambda_b`` == peft ``vera_lambda_d.default``/``vera_lambda_b.default``.
# AdaLoRA: ``...adalora.lora_A``/``lora_B`` == peft ``lora_A.default``/``lora_B.default``; ``lora_E`` (r,) ==
# peft ``lora_E.default`` (r, 1); peft scales by alpha / (init_r + 1e-5), autopeft by alpha / init_r.

def _minilm_pair(family: str = "bert", task: str = "classification"):
    from transformers import AutoModelForSequenceClassification

    from autopeft.training.models import resolve_model

    torch.manual_seed(0)  # the classification head is new: seed it so both copies share it
    ours = AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm"), num_labels=3).eval()
    return ours, copy.deepcopy(ours)


MODELS = ["bert", "llama", pytest.param("minilm", marks=pytest.mark.slow)]


def _models(name: str):
    return ("bert", *_minilm_pair()) if name == "minilm" else (name, *_pair(name))


def _assert_same_outputs(ours, peft_model):
    batch = tiny_batch()
    ours.eval()
    peft_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, peft_model(**batch).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_vera_matches_peft(name):
    from peft import VeraConfig

    family, ours, reference = _models(name)
    sites = ("q", "v", "down")
    arch = arch_from_config(ours.config)
    handle = inject(ours, Plan((PlanEntry("vera", tuple(range(arch.num_layers)), sites, {"r": 6}),)),
                    train_head=False)
    peft_model = get_peft_model(reference, VeraConfig(r=6, target_modules=_peft_regex(family, sites)))
    shared_a, shared_b = peft_model.base_model.vera_A["default"], peft_model.base_model.vera_B["default"]
    g = torch.Generator().manual_seed(2)
    peft_params = dict(peft_model.named_parameters())
    with torch.no_grad():
        for layer in range(arch.num_layers):
            for site in sites:
                module = handle.modules[f"layers.{layer}.{site}.vera"]
                module.vera_A.copy_(shared_a[:, :module.vera_A.shape[1]])
                module.vera_B.copy_(shared_b[:module.vera_B.shape[0], :])
                prefix = f"{LAYER_PREFIX[family]}.{layer}.{PEFT_NAMES[family][site]}"
                for ours_name, peft_name in (("lambda_d", "vera_lambda_d"), ("lambda_b", "vera_lambda_b")):
                    value = getattr(module, ours_name)
                    value.copy_(torch.randn(value.shape, generator=g))
                    peft_params[f"{prefix}.{peft_name}.default"].copy_(value)
    _assert_same_outputs(ours, peft_model)
    assert handle.num_adapter_params() == sum(p.numel() for n, p in peft_model.named_parameters() if "vera_lambda" in n)


def _adalora_pair(name: str, total_step: int = 10):
    from peft import AdaLoraConfig

    family, ours, reference = _models(name)
    sites = ("q", "v", "down")
    arch = arch_from_config(ours.config)
    plan = Plan((PlanEntry("adalora", tuple(range(arch.num_layers)), sites, {"init_r": 4, "target_r": 2, "alpha": 8}),))
    handle = inject(ours, plan, train_head=False)
    peft_model = get_peft_model(reference, AdaLoraConfig(init_r=4, target_r=2, lora_alpha=8, total_step=total_step,
                                                         target_modules=_peft_regex(family, sites)))
    g = torch.Generator().manual_seed(3)
    peft_params = dict(peft_model.named_parameters())
    pairs = []  # (our module, {our name: peft parameter})
    with torch.no_grad():
        for layer in range(arch.num_layers):
            for site in sites:
                module = handle.modules[f"layers.{layer}.{site}.adalora"]
                prefix = f"{LAYER_PREFIX[family]}.{layer}.{PEFT_NAMES[family][site]}"
                names = {}
                for part in ("A", "E", "B"):
                    ours_p, peft_p = getattr(module, f"lora_{part}"), peft_params[f"{prefix}.lora_{part}.default"]
                    ours_p.copy_(torch.randn(ours_p.shape, generator=g) * 0.3)
                    peft_p.copy_(ours_p.view(peft_p.shape))
                    names[part] = peft_p
                pairs.append((module, names))
    return handle, ours, peft_model, pairs


@pytest.mark.parametrize("name", MODELS)
def test_adalora_matches_peft_at_init_including_the_orthogonality_loss(name):
    handle, ours, peft_model, _ = _adalora_pair(name)
    _assert_same_outputs(ours, peft_model)
    labels = torch.tensor([0, 2, 1])
    ours.eval()
    peft_model.eval()
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(ours(**tiny_batch()).logits, labels) + handle.regularization()
        # AdaLoraModel.forward adds the orthogonality loss (PeftModelForSequenceClassification bypasses it)
        expected = peft_model.base_model(**tiny_batch(), labels=labels).loss
        torch.testing.assert_close(loss, expected, rtol=0, atol=1e-5)
    assert handle.num_adapter_params() == sum(p.numel() for n, p in peft_model.named_parameters()
                                              if "lora_" in n and "ranknum" not in n)


def test_adalora_rank_allocation_matches_peft_rank_allocator():
    """Same weights and gradients -> same importance scores -> the same ranks pruned as peft's RankAllocator."""
    handle, _, peft_model, pairs = _adalora_pair("bert")
    allocator = peft_model.base_model.rankallocator
    budget = pairs[0][0].budget
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        for module, peft_p in pairs:
            for part in ("A", "E", "B"):
                ours_p = getattr(module, f"lora_{part}")
                ours_p.grad = torch.randn(ours_p.shape, generator=g)
                peft_p[part].grad = ours_p.grad.view(peft_p[part].shape).clone()
            module.update_importance(budget.config.beta1, budget.config.beta2)
        allocator.update_ipt(peft_model.base_model.model)
    target = budget.init_budget - 7
    budget.mask_to(target)
    allocator.mask_to_budget(peft_model.base_model.model, target)
    ours_kept = torch.cat([module.rank_mask for module, _ in pairs])
    peft_kept = torch.cat([(p["E"].view(-1) != 0).float() for _, p in pairs])
    assert torch.equal(ours_kept, peft_kept) and int(ours_kept.sum()) == target


@pytest.mark.slow
@pytest.mark.parametrize(("method", "rslora"), [("lora", False), ("dora", False)])
def test_lora_and_dora_match_peft_on_minilm(method, rslora, monkeypatch):
    monkeypatch.setitem(globals(), "_pair", _minilm_pair)  # the tiny-model test above, on MiniLM
    test_lora_and_dora_match_peft("bert", method, rslora)


@pytest.mark.slow
def test_ia3_matches_peft_on_minilm(monkeypatch):
    monkeypatch.setitem(globals(), "_pair", _minilm_pair)
    test_ia3_matches_peft("bert")


# --- prompt learning: prefix tuning / P-tuning v2 and prompt tuning -------------------------------------
# Conventions (see methods/prefix.py, methods/prompt.py): peft's PREFIX_TUNING embedding row of layer l,
# viewed (P, L, 2, H_kv, d_head), holds that layer's key at [:, l, 0] and value at [:, l, 1]. peft puts the
# prefix in the KV cache, so the real tokens sit at positions P..P+T-1: autopeft (which keeps 0..T-1) is
# given those positions explicitly. PROMPT_TUNING outputs include the P virtual positions; autopeft drops
# them, so autopeft's outputs equal peft's [:, P:].


def _minilm(task: str):
    from transformers import AutoModelForSequenceClassification

    from autopeft.training.models import resolve_model

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm"), num_labels=3).eval()


def _prefix_matches_peft(method: str, ours, task_type: str, length: int = 4) -> None:
    from peft import PrefixTuningConfig

    reference = copy.deepcopy(ours)
    arch = arch_from_config(ours.config)
    layers = tuple(range(arch.num_layers))
    handle = inject(ours, Plan((PlanEntry(method, layers, ("attn",), {"length": length}),)), train_head=False)
    peft_model = get_peft_model(reference, PrefixTuningConfig(task_type=task_type, num_virtual_tokens=length))
    g = torch.Generator().manual_seed(3)
    weight = peft_model.prompt_encoder.default.embedding.weight  # (P, L * 2 * H_kv * d_head)
    table = weight.view(length, arch.num_layers, 2, arch.num_kv_heads, arch.head_dim)
    with torch.no_grad():
        for layer in layers:
            module = handle.modules[f"layers.{layer}.attn.{method}"]
            for index, tensor in enumerate((module.key, module.value)):  # (H_kv, P, d_head)
                tensor.copy_(torch.randn(tensor.shape, generator=g))
                table[:, layer, index].copy_(tensor.transpose(0, 1))
    batch = tiny_batch(vocab=min(97, ours.config.vocab_size))
    length_t = batch["input_ids"].shape[1]
    positions = torch.arange(length, length + length_t).unsqueeze(0)  # peft's positions of the real tokens
    ours.eval()
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**batch).logits
        torch.testing.assert_close(ours(**batch, position_ids=positions).logits, expected, rtol=0, atol=1e-5)
    assert handle.num_adapter_params() == weight.numel()


@pytest.mark.parametrize("method", ["prefix", "ptuning_v2"])
@pytest.mark.parametrize(("family", "task", "task_type"),
                         [("bert", "classification", "SEQ_CLS"), ("llama", "causal-lm", "CAUSAL_LM")])
def test_prefix_and_ptuning_v2_match_peft_prefix_tuning(method, family, task, task_type):
    _prefix_matches_peft(method, tiny_model(family, task), task_type)


def _prompt_matches_peft(ours, task_type: str, length: int = 5) -> None:
    """Compare the outputs at the real tokens: the base model's hidden states, or causal-LM logits."""
    from peft import PromptTuningConfig

    reference = copy.deepcopy(ours)
    handle = inject(ours, Plan((PlanEntry("prompt", (), ("input",), {"length": length}),)), train_head=False)
    prompt = handle.modules["input.prompt"].prompt
    with torch.no_grad():
        prompt.add_(0.1 * torch.randn(prompt.shape, generator=torch.Generator().manual_seed(4)))
    if task_type == "FEATURE_EXTRACTION":  # the bare encoder: a classifier would read peft's virtual [CLS]
        ours, reference = ours.base_model, reference.base_model
    peft_model = get_peft_model(reference, PromptTuningConfig(task_type=task_type, num_virtual_tokens=length))
    with torch.no_grad():
        peft_model.prompt_encoder.default.embedding.weight.copy_(prompt)
    batch = tiny_batch(vocab=min(97, ours.config.vocab_size))
    ours.eval()
    peft_model.eval()
    with torch.no_grad():
        out, expected = ours(**batch), peft_model(**batch)
    if task_type == "FEATURE_EXTRACTION":
        out, expected = out.last_hidden_state, expected.last_hidden_state
    else:
        out, expected = out.logits, expected.logits
    assert expected.shape[1] == out.shape[1] + length
    torch.testing.assert_close(out, expected[:, length:], rtol=0, atol=1e-5)
    assert handle.num_adapter_params() == prompt.numel()


@pytest.mark.parametrize(("family", "task", "task_type"),
                         [("bert", "classification", "FEATURE_EXTRACTION"), ("llama", "causal-lm", "CAUSAL_LM")])
def test_prompt_tuning_matches_peft(family, task, task_type):
    _prompt_matches_peft(tiny_model(family, task), task_type)


@pytest.mark.slow
def test_prefix_and_prompt_match_peft_on_minilm():
    _prefix_matches_peft("prefix", _minilm("classification"), "SEQ_CLS", length=6)
    _prompt_matches_peft(_minilm("classification"), "FEATURE_EXTRACTION", length=6)
