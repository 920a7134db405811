"""Merging beyond the one-method conformance case: several methods stacked on one projection, partial
merges of plans with non-mergeable methods, gated LoRA, and the catalogue's ``merges`` column."""

from __future__ import annotations

import pytest
import torch
from test_conformance import _outputs, _perturb  # the suite's helpers (tests/ is on sys.path)

from autopeft.cli.commands.methods import method_catalogue
from autopeft.methods import REGISTRY
from autopeft.methods.base import merges
from autopeft.peft.inject import AdaptedLinear, inject
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.testing import tiny_batch, tiny_model

# every mergeable method on the same projections: additive deltas (stage 0), DoRA (stage 1) rescaling
# their sum, (IA)^3 on the output (k, v) and on the input (down) of the same projections
STACK = Plan((
    PlanEntry("lora", (0, 2), ("k", "v", "down"), {"r": 3}),
    PlanEntry("vera", (0, 2), ("v", "down"), {"r": 4}),
    PlanEntry("bitfit", (0, 2), ("k", "down"), {}),
    PlanEntry("adalora", (0,), ("v", "down"), {"init_r": 3, "target_r": 2}),
    PlanEntry("dora", (0, 2), ("v", "down"), {"r": 2}),
    PlanEntry("ia3", (0, 2), ("k", "v", "down"), {}),
))


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_stacked_methods_on_one_projection_merge_exactly(family):
    model = tiny_model(family)
    batch = tiny_batch()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    handle = inject(model, STACK)
    _perturb(handle, seed=3)
    unmerged = _outputs(model, batch)
    assert sorted(handle.merge()) == sorted(handle.modules)
    # merged projections are plain modules again (no wrapper left in the model)
    assert not any(isinstance(m, AdaptedLinear) for m in model.modules())
    torch.testing.assert_close(_outputs(model, batch), unmerged, rtol=0, atol=1e-5)
    handle.remove()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert set(model.state_dict()) == set(state)  # BitFit's temporary bias on Llama is gone again


def test_plan_with_non_mergeable_methods_merges_the_rest():
    plan = Plan((
        PlanEntry("lora", (0, 1), ("q", "v"), {"r": 2}),
        PlanEntry("lora", (2,), ("o",), {"r": 2}),
        PlanEntry("adapter", (2,), ("o",), {"size": 4}),  # shares layer 2's o with LoRA: o stays unmerged
        PlanEntry("prefix", (1,), ("attn",), {"length": 3}),
        PlanEntry("lora", (1,), ("k",), {"r": 2, "gated": True}),  # depends on x: not mergeable
    ))
    model = tiny_model("bert")
    batch = tiny_batch()
    handle = inject(model, plan)
    _perturb(handle, seed=4)
    unmerged = _outputs(model, batch)
    merged = handle.merge()
    assert sorted(merged) == sorted(f"layers.{i}.{s}.lora" for i in (0, 1) for s in ("q", "v"))
    torch.testing.assert_close(_outputs(model, batch), unmerged, rtol=0, atol=1e-5)
    assert handle.merge() == merged  # idempotent
    handle.unmerge()
    assert torch.equal(_outputs(model, batch), unmerged)


def test_gated_lora_counts_its_gate_and_the_gate_scales_the_update():
    model = tiny_model("llama")
    plan = Plan((PlanEntry("lora", (0,), ("q",), {"r": 2, "gated": True}),))
    handle = inject(model, plan)
    module = handle.modules["layers.0.q.lora"]
    assert handle.num_adapter_params() == 2 * (40 + 40) + 40 + 1 == plan.num_params(handle.arch)
    x, y = torch.randn(2, 5, 40), torch.randn(2, 5, 40)
    with torch.no_grad():
        module.lora_B.normal_()
        module.gate.bias.fill_(-50.0)  # gate closed: no update
        torch.testing.assert_close(module(x, y), y)
        module.gate.weight.zero_()
        module.gate.bias.fill_(0.0)  # gate 1/2: half the plain LoRA update
        plain = module.scaling * (x @ module.lora_A.T @ module.lora_B.T)
        torch.testing.assert_close(module(x, y), y + 0.5 * plain, rtol=1e-5, atol=1e-5)


def test_catalogue_says_which_methods_merge():
    rows = {r["name"]: r for r in method_catalogue()}
    for name in ("lora", "dora", "lora_fa", "vera", "adalora", "ia3", "bitfit"):
        assert rows[name]["merges"] is True
    assert rows["adapter"]["merges"] is False and rows["prefix"]["merges"] is False
    assert all(rows[n]["merges"] == merges(REGISTRY[n]) for n in REGISTRY)
