"""One-shot core (#19): nested slices with exact costs, budget gates, readouts that are valid plans."""

import random

import pytest
import torch

from autopeft.core.arch import arch_from_config
from autopeft.core.errors import UserError
from autopeft.oneshot.candidates import candidates, sample_of
from autopeft.oneshot.gates import BudgetGates, SliceSpec, readout
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.space import load_space, parse_space
from autopeft.testing import tiny_config


def _gates(space_name: str, family: str, budget_share: float, seed: int = 0):
    arch = arch_from_config(tiny_config(family))
    space = load_space(space_name)
    slices = candidates(space, arch)
    total = sum(s.cost for s in slices)
    gates = BudgetGates([SliceSpec(s.cost, s.parent, s.unit) for s in slices], budget_share * total)
    torch.manual_seed(seed)
    with torch.no_grad():
        gates.raw.normal_()
    return arch, space, slices, gates


def test_slices_are_nested_sizes_with_exact_costs():
    arch, space, slices, _ = _gates("compact", "bert", 0.3)
    q = [s for s in slices if s.unit == "lora.q"]
    assert [(s.start, s.size) for s in q] == [(0, 2), (2, 4), (4, 8)]
    assert [s.parent for s in q] == [None, q[0].index, q[1].index]
    # the slices up to size s cost exactly LoRA r=s on q of every layer
    layers = tuple(range(arch.num_layers))
    for j, s in enumerate(q):
        plan = Plan((PlanEntry("lora", layers, ("q",), {"r": s.size, "alpha": 16}),))
        assert sum(x.cost for x in q[:j + 1]) == plan.num_params(arch)


@pytest.mark.parametrize("tau", [1.0, 0.3, 0.05])
@pytest.mark.parametrize("share", [0.05, 0.3, 0.8])
def test_the_expected_cost_meets_the_budget_exactly(tau, share):
    _, _, _, gates = _gates("compact", "bert", share)
    p = gates(tau)
    expected = float((p.detach().double() * gates.costs).sum())
    assert expected == pytest.approx(gates.budget, rel=1e-6)  # float32 gates; float64 inside: 1e-12
    assert torch.all((p >= 0) & (p <= 1))
    p.sum().backward()  # the scores learn through the gates (the shift is held fixed)
    assert gates.raw.grad is not None and gates.raw.grad.abs().sum() > 0


def test_nested_gates_never_open_a_slice_wider_than_its_parent():
    _, _, slices, gates = _gates("compact", "bert", 0.3)
    p = gates(0.5).detach()
    for s in slices:
        if s.parent is not None:
            assert p[s.index] <= p[s.parent] + 1e-12


def test_everything_open_when_the_budget_holds_the_whole_supernet():
    _, _, slices, gates = _gates("compact", "bert", 1.0)
    assert torch.equal(gates(0.5), torch.ones(len(slices)))
    kept = gates.readout(gates.budget)  # every unit gets a method at its largest size, one method per unit
    assert len({slices[i].unit for i in kept}) == len({s.unit for s in slices})
    assert all(slices[i].parent in kept for i in kept if slices[i].parent is not None)
    assert {slices[i].size for i in kept if slices[i].unit == "lora.q"} == {2, 4, 8}


@pytest.mark.parametrize("space_name", ["compact", "s3delta"])
@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_readouts_are_valid_plans_whose_count_is_the_sum_of_their_slices(family, space_name):
    rng = random.Random(0)
    for seed in range(5):
        arch, space, slices, gates = _gates(space_name, family, 0.5, seed)
        total = sum(s.cost for s in slices)
        for _ in range(6):
            budget = rng.uniform(0, total)
            kept = gates.readout(budget)
            cost = sum(slices[i].cost for i in kept)
            assert cost <= budget
            for i in kept:  # nested: a slice only with its parent; one method per unit
                assert slices[i].parent is None or slices[i].parent in kept
            assert len({(slices[i].unit) for i in kept}) == len({(slices[i].unit, slices[i].method) for i in kept})
            sample = sample_of(space, arch, slices, kept)
            assert sample.plan().num_params(arch) == cost
            assert space.infeasible_reason(sample, arch, int(budget)) is None


def test_greedy_readout_skips_what_does_not_fit_and_keeps_filling():
    specs = [SliceSpec(10, None, "a"), SliceSpec(100, 0, "a"), SliceSpec(20, None, "b")]
    # a's second slice ranks above b but does not fit: b is still taken
    assert readout(specs, [3.0, 2.0, 1.0], budget=40) == [0, 2]
    assert readout(specs, [3.0, 2.0, 1.0], budget=130) == [0, 1, 2]
    assert readout(specs, [3.0, 2.0, 1.0], budget=5) == []


def test_spaces_the_supernet_cannot_express_get_a_one_line_error():
    arch = arch_from_config(tiny_config("bert"))
    with pytest.raises(UserError, match="masks"):
        candidates(load_space("sappa"), arch)
    text = ("decisions:\n  - name: a\n    sites: [q]\n    per: site\n    methods:\n      none: {}\n"
            "      lora: {r: {choice: [2, 4]}, alpha: {choice: [8, 16]}}\n")
    with pytest.raises(UserError, match="option 'alpha' of lora is searched"):
        candidates(parse_space(text, "t.yaml", "t"), arch)
