"""Head rows only (autopeft/training/fastpath/head_rows.py): a token-0 classifier's last block runs its post-attention work on
token 0 only, with the same losses, gradients and predictions, for every method, in both block layouts."""

from __future__ import annotations

import pytest
import torch
from fast_fixtures import first_step, one_thread, toy_session
from test_conformance import CASES, MIXED, MIXED_INPUT_NORM, method_plan

from autopeft.peft.inject import inject
from autopeft.peft.plan import Plan
from autopeft.training.config import TrainConfig
from autopeft.training.fastpath.head_rows import head_rows_only, head_rows_supported

pytestmark = pytest.mark.usefixtures(one_thread.__name__)
BERT_CASES = [(m, f, t) for m, f, t in CASES if f == "bert"]
SOFT_PROMPTS = ("prompt", "ptuning", "prompt[random]", "ptuning[lstm]")


def _assert_same_step(session, plan: Plan, unpad: bool) -> tuple[list, dict]:
    common = dict(steps=2, batch_size=6, precision="fp32", prefix_cache="off", seed=3, unpad=unpad)
    mlp = session.arch.block_module(session.model, session.arch.num_layers - 1, session.arch.family.mlp_path)
    loss_on, grads_on, rows, batch = first_step(session, plan, TrainConfig(**common), mlp)
    loss_off, grads_off, rows_off, _ = first_step(session, plan, TrainConfig(**common, head_rows=False), mlp)
    torch.testing.assert_close(loss_on, loss_off, rtol=1e-5, atol=1e-6)
    assert set(grads_on) == set(grads_off) and grads_on
    for name in grads_off:
        torch.testing.assert_close(grads_on[name], grads_off[name], rtol=1e-4, atol=1e-6, msg=name)
    assert rows_off[0][0] * rows_off[0][1] > 6  # without: every (real) token
    return rows, batch


@pytest.mark.parametrize("unpad", [True, False], ids=["packed", "padded"])
@pytest.mark.parametrize(("method", "family", "task"), BERT_CASES)
def test_every_method_trains_the_same_on_the_head_rows(method, family, task, unpad):
    session = toy_session(family, task, dropout=False)
    rows, batch = _assert_same_step(session, method_plan(method, family), unpad)
    if method in SOFT_PROMPTS:  # a soft prompt lengthens the sequence: the last block runs every row
        assert rows[0][0] == 6 and rows[0][1] > batch["input_ids"].shape[1]
    else:  # the last block's MLP ran on one row per example
        assert rows == [torch.Size([1, 6]) if unpad else torch.Size([6, 1])]


@pytest.mark.parametrize("unpad", [True, False], ids=["packed", "padded"])
@pytest.mark.parametrize("plan", [MIXED, MIXED_INPUT_NORM], ids=["mixed", "mixed-input-norm"])
def test_hybrid_plans_train_the_same_on_the_head_rows(plan, unpad):
    rows, _ = _assert_same_step(toy_session("bert", "classification", dropout=False), plan, unpad)
    if plan is MIXED:  # (MIXED_INPUT_NORM has soft prompts: every row runs)
        assert rows == [torch.Size([1, 6]) if unpad else torch.Size([6, 1])]


def test_parallel_adapter_beside_attention_in_the_last_block_sees_the_head_rows():
    """Its input is captured before the selection (N rows) and is narrowed with the block's rows."""
    from autopeft.peft.plan import PlanEntry

    plan = Plan((PlanEntry("parallel_adapter", (2,), ("o",), {"size": 3, "scaling": 4.0}),))
    for unpad in (True, False):
        rows, _ = _assert_same_step(toy_session("bert", "classification", dropout=False), plan, unpad)
        assert rows[0] == (torch.Size([1, 6]) if unpad else torch.Size([6, 1]))


@pytest.mark.parametrize("family", ["distilbert", "gpt2", "llama"])
def test_other_families_run_every_row(family):
    session = toy_session(family, "classification", dropout=False)
    assert not head_rows_supported(session.arch, "classification")
    rows, batch = _assert_same_step(session, method_plan("lora", family), unpad=True)
    assert rows[0][1] > 6  # all real tokens, packed


def test_causal_lm_is_not_narrowed():
    assert not head_rows_supported(toy_session("gpt2", "causal-lm").arch, "causal-lm")


def test_evaluation_predicts_the_same_on_the_head_rows():
    """Eval-mode logits (padded, length-sorted batches as ``Session.evaluate`` runs them) are unchanged."""
    session = toy_session("bert", "classification")
    with inject(session.model, MIXED, session.arch, train_head=True) as handle:
        for p in handle.trainable_parameters():  # move off the identity so the plan matters
            torch.nn.init.normal_(p[1], std=0.2)
        batch = session._collate(session.splits["validation"], list(range(12)))
        session.model.eval()
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            full = session.model(**inputs).logits
            with head_rows_only(session.model, session.arch, batch["attention_mask"], "classification"):
                narrow = session.model(**inputs).logits
    torch.testing.assert_close(narrow, full, rtol=1e-5, atol=1e-6)
    metrics_on = session.evaluate("validation", TrainConfig())
    metrics_off = session.evaluate("validation", TrainConfig(head_rows=False))
    assert metrics_on.values == metrics_off.values
