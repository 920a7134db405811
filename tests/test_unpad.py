"""Padding-free blocks (autopeft/peft/unpad.py): the same losses and gradients as the padded model, for every
registered method on every family, with and without the frozen-prefix cache."""

from __future__ import annotations

import pytest
import torch
from fast_fixtures import first_step, one_thread, toy_session
from test_conformance import CASES, MIXED, MIXED_INPUT_NORM, method_plan

from autopeft.peft import unpad
from autopeft.peft.plan import Plan
from autopeft.peft.unpad import Packing
from autopeft.training import step
from autopeft.training.config import TrainConfig
from autopeft.training.trial_run import train_plan

pytestmark = pytest.mark.usefixtures(one_thread.__name__)
MULTIPLE = 8  # the toy batches (~60 real of ~100 positions) get filler rows, and stay packed


@pytest.fixture(autouse=True)
def _toy_pack_multiple(monkeypatch):
    monkeypatch.setitem(step.PACK_MULTIPLE, "cpu", MULTIPLE)


def _rows(real: int) -> int:
    return -(-real // MULTIPLE) * MULTIPLE


def _assert_same_step(session, plan: Plan, prefix_cache: str = "off") -> tuple[list, int]:
    # unbucketed batches of lengths 3..17: well over MIN_PADDING of padding
    on = TrainConfig(steps=2, batch_size=6, precision="fp32", prefix_cache=prefix_cache, seed=3, bucket_by_length=False)
    off = TrainConfig(steps=2, batch_size=6, precision="fp32", prefix_cache=prefix_cache, seed=3,
                      bucket_by_length=False, unpad=False)
    last_block = session.arch.blocks(session.model)[-1]
    loss_on, grads_on, widths, batch = first_step(session, plan, on, last_block)
    loss_off, grads_off, _, _ = first_step(session, plan, off, last_block)
    real = int(batch["attention_mask"].sum())
    torch.testing.assert_close(loss_on, loss_off, rtol=1e-5, atol=1e-6)
    assert set(grads_on) == set(grads_off) and grads_on
    for name in grads_off:
        torch.testing.assert_close(grads_on[name], grads_off[name], rtol=1e-4, atol=1e-6, msg=name)
    return widths, real


@pytest.mark.parametrize(("method", "family", "task"), CASES)
def test_every_method_trains_the_same_without_padding(method, family, task):
    session = toy_session(family, task, dropout=False)
    widths, real = _assert_same_step(session, method_plan(method, family))
    if method not in ("prompt", "ptuning", "prompt[random]", "ptuning[lstm]"):
        assert widths == [torch.Size([1, _rows(real)])]  # the top block ran on the real tokens (+ filler)
    else:  # a soft prompt lengthens the sequence: the blocks stay padded
        assert widths[0][0] == 6


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("plan", [MIXED, MIXED_INPUT_NORM], ids=["mixed", "mixed-input-norm"])
def test_hybrid_plans_train_the_same_without_padding(family, plan):
    _assert_same_step(toy_session(family, "classification", dropout=False), plan)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_unpadding_composes_with_the_prefix_cache(family):
    """Blocks below the plan's first layer come from the cache; the first running block packs them."""
    from test_fast_activation_cache import TOP

    widths, real = _assert_same_step(toy_session(family, "classification", dropout=False), TOP, prefix_cache="fp32")
    assert widths == [torch.Size([1, _rows(real)])]


def test_packing_round_trip_and_no_padding_is_left_alone():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    packing = Packing.of(mask)
    assert packing is not None and packing.tokens == 8
    x = torch.arange(24.0).view(3, 4, 2)
    packed = packing.pack(x)
    assert packed.shape == (1, 8, 2)
    restored = packing.unpack(packed)
    torch.testing.assert_close(restored, x * mask[..., None])
    assert Packing.of(torch.ones(2, 5, dtype=torch.long)) is None
    assert Packing.of(mask, min_padding=0.4) is None  # 4 of 12 positions are padding: less than 40%


def test_packing_rounds_rows_up_with_the_first_padding_positions(monkeypatch):
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    x = torch.arange(24.0).view(3, 4, 2)
    assert Packing.of(mask, multiple=5).tokens == 8  # 10 rows would be more than 75% of the positions: exact
    monkeypatch.setattr(unpad, "MAX_FILLED_SHARE", 1.0)
    packing = Packing.of(mask, multiple=5)
    assert packing is not None and packing.tokens == 10
    assert packing.index.tolist() == [0, 1, 2, 3, 4, 5, 8, 9, 10, 11]  # filler: flat positions 3 and 5, in order
    filled = mask.clone()
    filled[0, 3] = filled[1, 1] = 1
    torch.testing.assert_close(packing.unpack(packing.pack(x)), x * filled[..., None])
    assert Packing.of(mask, multiple=4).tokens == 8  # already a multiple: no filler


def test_filler_stops_at_the_max_filled_share(monkeypatch):
    mask = torch.zeros(4, 10, dtype=torch.long)
    mask[:, :6] = 1  # 24 real of 40 positions
    assert Packing.of(mask, multiple=16).tokens == 24  # 32 rows = 80% > 75%: the exact count
    assert Packing.of(mask, multiple=10).tokens == 30  # 75%: filled
    monkeypatch.setattr(unpad, "MAX_FILLED_SHARE", 0.8)
    assert Packing.of(mask, multiple=16).tokens == 32


def test_the_pack_multiple_is_per_device_type():
    assert step.step_recipe(TrainConfig(), "cpu").pack_multiple == MULTIPLE  # this module's fixture
    assert step.step_recipe(TrainConfig(), "cuda").pack_multiple == step.DEFAULT_PACK_MULTIPLE


def test_whole_runs_agree_with_and_without_unpadding():
    session = toy_session("bert", "classification", dropout=False)
    plan = MIXED
    a = train_plan(session, plan, TrainConfig(steps=6, batch_size=6, precision="fp32", prefix_cache="off", seed=2))
    b = train_plan(session, plan, TrainConfig(steps=6, batch_size=6, precision="fp32", prefix_cache="off", seed=2,
                                       unpad=False))
    assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
    assert a.validation.value == b.validation.value
