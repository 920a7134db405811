"""AdaLoRA's rank budget: schedule, global allocation towards the target, final phase, trainer wiring."""

from __future__ import annotations

import pytest
import torch

from autopeft.core.arch import arch_from_config
from autopeft.core.errors import UserError
from autopeft.methods.adalora import AdaLoRAConfig, RankBudget, SVDDelta
from autopeft.peft.inject import inject
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.testing import tiny_batch, tiny_model
from autopeft.training.config import TrainConfig
from autopeft.training.data import TokenizedSplit
from autopeft.training.session import Session
from autopeft.training.trial_run import train_plan

PLAN = Plan((PlanEntry("adalora", (0, 1, 2), ("q", "v", "down"), {"init_r": 4, "target_r": 2}),))


def _budget(handle) -> RankBudget:
    budget = next(iter(handle.modules.values())).budget
    assert all(m.budget is budget for m in handle.modules.values())  # one budget for the whole plan
    return budget


def test_budget_schedule():
    config = AdaLoRAConfig(init_r=6, target_r=2, tinit=0.1, tfinal=0.2, delta_t=0.05)
    budget = RankBudget([SVDDelta(8, 8, config) for _ in range(3)])
    assert (budget.init_budget, budget.target_budget) == (18, 6)
    assert budget.phases(100) == (10, 20, 5)
    schedule = [budget.budget(step, 100) for step in range(1, 101)]
    assert all(b == (18, False) for b in schedule[:10])  # warm-up: full rank, no masking
    middle = [b for b, _ in schedule[10:80]]
    assert middle == sorted(middle, reverse=True) and middle[0] < 18 and middle[-1] >= 6
    assert [s for s, (_, remask) in enumerate(schedule[10:79], start=11) if remask] == list(range(15, 80, 5))
    assert all(b == (6, True) for b in schedule[79:])  # target from step T - t_final on


def test_training_prunes_globally_to_the_target_and_keeps_the_final_pattern():
    torch.manual_seed(0)
    model = tiny_model("bert")
    handle = inject(model, PLAN)
    budget = _budget(handle)
    batch, labels = tiny_batch(batch=4), torch.tensor([0, 1, 2, 1])
    optimizer = torch.optim.Adam([p for _, p in handle.trainable_parameters()], lr=1e-2)
    total = 24
    for step in range(1, total + 1):
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels) + handle.regularization()
        loss.backward()
        optimizer.step()
        handle.after_optimizer_step(step, total)
        handle.after_optimizer_step(step, total)  # a second call in the same step changes nothing
        optimizer.zero_grad()
        if step == 19:  # T - t_final (24 - round(0.2 * 24)): the final pattern is set
            final = [m.rank_mask.clone() for m in handle.modules.values()]
    ranks = budget.ranks()
    assert sum(ranks) == budget.target_budget == 9 * 2
    assert max(ranks) > min(ranks)  # allocated globally by importance, not 2 per site
    for module, mask in zip(handle.modules.values(), final, strict=True):
        assert torch.equal(module.rank_mask, mask)  # the final phase keeps the pattern ...
        assert torch.all(module.lora_E[mask == 0] == 0)  # ... and pruned singular values stay 0
    assert handle.num_adapter_params() == PLAN.num_params(handle.arch) == 9 * 4 * (40 + 40 + 1) + 3 * 4 * 16


def test_regularization_is_the_mean_orthogonality_gap():
    model = tiny_model("llama")
    handle = inject(model, PLAN)
    modules = list(handle.modules.values())
    expected = 0.0
    for m in modules:
        for gram in (m.lora_A @ m.lora_A.T, m.lora_B.T @ m.lora_B):
            expected += torch.linalg.matrix_norm(gram - torch.eye(4)).item()
    expected *= 0.5 / (2 * len(modules))
    assert handle.regularization().item() == pytest.approx(expected, rel=1e-5)
    handle.regularization().backward()
    assert all(m.lora_A.grad is not None and m.lora_A.grad.abs().sum() > 0 for m in modules)


def test_entries_with_different_schedules_are_refused():
    plan = Plan((PlanEntry("adalora", (0,), ("q",), {"tinit": 0.1}),
                 PlanEntry("adalora", (1,), ("q",), {"tinit": 0.2})))
    with pytest.raises(UserError, match="share one rank budget"):
        inject(tiny_model("bert"), plan)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="target_r"):
        Plan((PlanEntry("adalora", (0,), ("q",), {"init_r": 2, "target_r": 4}),)).num_params(
            arch_from_config(tiny_model("bert").config))


def test_trainer_calls_the_hooks():
    """Through Session.run: the saved adapter holds the pruned pattern (total rank = target)."""
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(5, 97, (8,), generator=g).tolist() for _ in range(32)]
    split = TokenizedSplit(rows, [i % 2 for i in range(32)], 0)
    model = tiny_model("bert", num_labels=2)
    session = Session(model, arch_from_config(model.config), "classification",
                      {"train": split, "validation": split, "test": split}, pad_token_id=0)
    outcome = train_plan(session, PLAN, TrainConfig(steps=12, batch_size=8, lr=1e-2, precision="fp32"))
    masks = [v for k, v in outcome.state.items() if k.endswith("rank_mask")]
    assert len(masks) == 9 and sum(int(m.sum()) for m in masks) == 9 * 2
    values = [v for k, v in outcome.state.items() if k.endswith("lora_E")]
    assert all(torch.all(e[m == 0] == 0) for e, m in zip(values, masks, strict=True))
