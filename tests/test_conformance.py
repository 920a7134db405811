"""The contract every registered method honours, on every supported family (tiny random models).

For each method x family: the exact parameter count from shapes equals the trainable count after
injection; identity at initialisation where the method declares it; only the plan's (and the head's)
parameters train; removal restores the base bitwise (state, outputs, requires_grad flags, attention
implementation); a safetensors save -> load round trip reproduces outputs exactly; a few optimizer
steps reduce the loss of a learnable toy task (catches wiring that silently does nothing).
Option variants that change a method's wiring (``VARIANTS``) run through the same checks.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from autopeft.core.arch import arch_from_config
from autopeft.core.errors import UserError
from autopeft.methods import REGISTRY, Placement
from autopeft.methods.base import merges
from autopeft.peft.inject import head_parameters, inject
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.testing import TINY_FAMILIES, tiny_batch, tiny_config, tiny_model

TASKS = {"bert": ("classification",), "distilbert": ("classification",),
         "gpt2": ("classification", "causal-lm"), "llama": ("classification", "causal-lm")}
OPTIONS = {"lora": {"r": 3}, "adapter": {"size": 5}, "prefix": {"length": 4}, "ptuning_v2": {"length": 3},
           "prompt": {"length": 3}, "ptuning": {"length": 3, "hidden": 6}, "parallel_adapter": {"size": 5}}
VARIANTS = {  # name -> (method, options)
    "prefix[reparam,gated]": ("prefix", {"length": 4, "reparam_hidden": 6, "gated": True}),
    "adapter[gated]": ("adapter", {"size": 5, "gated": True}),
    "ptuning[lstm]": ("ptuning", {"length": 3, "hidden": 5, "encoder": "lstm"}),
    "prompt[random]": ("prompt", {"length": 3, "init": "random"}),
}
VARIANT_FAMILIES = ("bert", "llama")  # variants re-check wiring, not families: two suffice, and keep it fast
CASES = ([(m, f, t) for m in sorted(REGISTRY) for f in TINY_FAMILIES for t in TASKS[f]]
         + [(v, f, t) for v in sorted(VARIANTS) for f in VARIANT_FAMILIES for t in TASKS[f]])


def _spec(name: str):
    return REGISTRY[VARIANTS[name][0] if name in VARIANTS else name]


def method_plan(method: str, family: str) -> Plan:
    """The method (or variant) on every site it supports, in layers 0 and 2 (layer 1 stays untouched)."""
    arch = arch_from_config(tiny_config(family))
    method, options = VARIANTS.get(method, (method, OPTIONS.get(method, {})))
    spec = REGISTRY[method]
    sites = spec.sites if spec.placement is Placement.ATTENTION else spec.sites or tuple(arch.sites)
    return Plan((PlanEntry(method, (0, 2), tuple(sites), options),))


MIXED = Plan((
    PlanEntry("lora", (0, 1), ("q", "v"), {"r": 2}),
    PlanEntry("adapter", (2,), ("o", "down"), {"size": 4}),
    PlanEntry("prefix", (1, 2), ("attn",), {"length": 3}),
    PlanEntry("lora", (2,), ("o",), {"r": 2}),  # LoRA and an adapter on the same projection
))
MIXED_INPUT_NORM = Plan((  # prompts, norms, parallel adapters and gates next to LoRA and prefixes
    PlanEntry("lora", (0, 1), ("q", "v"), {"r": 2}),
    PlanEntry("prompt", (), ("input",), {"length": 2}),
    PlanEntry("ptuning", (), ("input",), {"length": 2, "hidden": 4}),
    PlanEntry("ln_tuning", (0, 1, 2), ("ln_attn", "ln_mlp")),
    PlanEntry("parallel_adapter", (1, 2), ("o", "down"), {"size": 3, "scaling": 4.0}),
    PlanEntry("adapter", (2,), ("down",), {"size": 3, "gated": True}),  # serial and parallel on one projection
    PlanEntry("prefix", (0,), ("attn",), {"length": 2, "reparam_hidden": 4, "gated": True}),
    PlanEntry("ptuning_v2", (2,), ("attn",), {"length": 2}),
))


def _hooks(model):
    return {name: (len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()}


def _outputs(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _perturb(handle, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in handle.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize(("method", "family", "task"), CASES)
def test_count_identity_trainability_and_removal(method, family, task):
    model = tiny_model(family, task)
    arch = arch_from_config(model.config)
    plan = method_plan(method, family)
    batch = tiny_batch()
    # a mix of flags before injection, to check that exactly these come back
    flags = {}
    for i, (name, p) in enumerate(model.named_parameters()):
        p.requires_grad_(i % 3 != 0)
        flags[name] = p.requires_grad
    state = {k: v.clone() for k, v in model.state_dict().items()}
    implementation = model.config._attn_implementation
    before = _outputs(model, batch)
    hooks = _hooks(model)

    handle = inject(model, plan, train_head=task == "classification")
    assert plan.num_params(arch) == handle.num_adapter_params() > 0
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    declared = {id(p) for _, p in handle.trainable_parameters()}
    assert trainable == declared
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        handle.num_adapter_params() + handle.num_head_params())
    if task == "causal-lm":
        assert handle.num_head_params() == 0
    injected = _outputs(model, batch)
    if _spec(method).identity_at_init:
        torch.testing.assert_close(injected, before, rtol=0, atol=1e-6)
    else:
        assert not torch.allclose(injected, before, atol=1e-6)
    _perturb(handle)
    assert not torch.allclose(_outputs(model, batch), before, atol=1e-6)

    handle.remove()
    assert set(model.state_dict()) == set(state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.config._attn_implementation == implementation
    assert _hooks(model) == hooks
    assert torch.equal(_outputs(model, batch), before)


def test_methods_that_change_outputs_at_init_say_so():
    for spec in REGISTRY.values():
        doc = " ".join((sys.modules[type(spec).__module__].__doc__ or "").split()).lower()
        assert spec.identity_at_init or "not the identity at initialisation" in doc, spec.name


@pytest.mark.parametrize(("method", "family", "task"), CASES)
def test_save_load_round_trip_is_exact(method, family, task, tmp_path):
    plan = method_plan(method, family)
    batch = tiny_batch()
    model = tiny_model(family, task)
    handle = inject(model, plan)
    _perturb(handle, seed=1)
    expected = _outputs(model, batch)
    save_file(handle.state_dict(), str(tmp_path / "adapter.safetensors"))

    fresh = tiny_model(family, task)  # same base weights (seeded), new head init and adapter init
    fresh_handle = inject(fresh, plan)
    fresh_handle.load_state_dict(load_file(str(tmp_path / "adapter.safetensors")))
    assert torch.equal(_outputs(fresh, batch), expected)


@pytest.mark.parametrize(("method", "family"), [(m, f) for m in sorted(REGISTRY) for f in TINY_FAMILIES]
                         + [(v, f) for v in sorted(VARIANTS) for f in VARIANT_FAMILIES])
def test_a_few_steps_reduce_the_loss(method, family):
    """Causal LM where the family supports it (no head trains, so only the method can learn)."""
    task = "causal-lm" if "causal-lm" in TASKS[family] else "classification"
    torch.manual_seed(0)
    model = tiny_model(family, task)
    with torch.no_grad():  # a frozen head at the usual std 0.02 would leave the logits nearly fixed
        for p in head_parameters(model).values():
            p.normal_(std=1.0)
        # and at std 0.02 attention is nearly uniform, so virtual tokens (prompts) could barely move
        # anything: sharper frozen projections (std 0.1) make the task learnable through every method
        for module in model.base_model.modules():
            if not isinstance(module, torch.nn.Embedding) and getattr(module, "weight", None) is not None \
                    and module.weight.dim() == 2:
                module.weight.mul_(5.0)
    handle = inject(model, method_plan(method, family), train_head=False)
    batch = tiny_batch(batch=4, length=9)
    labels = torch.tensor([0, 1, 2, 1])
    optimizer = torch.optim.Adam([p for _, p in handle.trainable_parameters()], lr=3e-2)

    def loss_fn():
        logits = model(**batch).logits
        if task == "classification":
            return F.cross_entropy(logits, labels)
        targets = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)

    model.eval()  # no dropout: the loss moves only through the method's parameters
    first = loss_fn().item()
    for _ in range(60):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
    assert loss.item() < first - 0.05, (first, loss.item())


@pytest.mark.parametrize("plan", [MIXED, MIXED_INPUT_NORM], ids=["mixed", "mixed_input_norm"])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_mixed_plan_counts_trains_saves_and_removes(family, plan, tmp_path):
    model = tiny_model(family)
    arch = arch_from_config(model.config)
    batch = tiny_batch()
    before = _outputs(model, batch)
    handle = inject(model, plan)
    assert plan.num_params(arch) == handle.num_adapter_params()
    _perturb(handle)
    out = model(**batch).logits
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in handle.adapter_parameters())
    expected = _outputs(model, batch)
    save_file(handle.state_dict(), str(tmp_path / "a.safetensors"))
    fresh = tiny_model(family)
    inject(fresh, plan).load_state_dict(load_file(str(tmp_path / "a.safetensors")))
    assert torch.equal(_outputs(fresh, batch), expected)
    handle.remove()
    assert torch.equal(_outputs(model, batch), before)


@pytest.mark.parametrize(("method", "family"),
                         [(m, f) for m in sorted(REGISTRY) if merges(REGISTRY[m]) for f in TINY_FAMILIES])
def test_merge_equals_unmerged_and_unmerge_restores(method, family):
    """Methods that declare ``merge``: merged outputs == unmerged (1e-5, fp32); unmerge and removal are bitwise."""
    model = tiny_model(family)
    batch = tiny_batch()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = _outputs(model, batch)
    handle = inject(model, method_plan(method, family))
    _perturb(handle, seed=2)
    unmerged = _outputs(model, batch)
    assert sorted(handle.merge()) == sorted(handle.modules)
    torch.testing.assert_close(_outputs(model, batch), unmerged, rtol=0, atol=1e-5)
    handle.unmerge()
    assert torch.equal(_outputs(model, batch), unmerged)
    handle.merge()
    handle.remove()  # straight from the merged state
    assert set(model.state_dict()) == set(state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert torch.equal(_outputs(model, batch), before)


def test_mismatching_adapter_state_is_refused():
    model = tiny_model("bert")
    handle = inject(model, MIXED)
    state = handle.state_dict()
    with pytest.raises(UserError, match="missing"):
        handle.load_state_dict({k: v for k, v in state.items() if "lora" not in k})
    bad = dict(state)
    key = next(k for k in bad if k.endswith("lora_A"))
    bad[key] = torch.zeros(1, 1)
    with pytest.raises(UserError, match="shape"):
        handle.load_state_dict(bad)
