"""Fast trials: the shared base stays untouched, bf16 weights cast once equal autocast, length buckets,
thread layout."""

from __future__ import annotations

import random
from contextlib import nullcontext

import pytest
import torch
from fast_fixtures import base_state, one_thread, toy_session

from autopeft.core.errors import UserError
from autopeft.peft.inject import head_parameters
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.searching.threads import AUTO_THREADS_PER_WORKER, resolve_workers
from autopeft.training.config import TrainConfig
from autopeft.training.trial_run import start_run, train_plan

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

CHOICES = [("lora", ("q", "v"), {"r": 2}), ("adapter", ("down",), {"size": 3}), ("prefix", ("attn",), {"length": 2}),
           ("ia3", ("k", "v", "down"), {}), ("bitfit", ("o",), {}), ("dora", ("q",), {"r": 2}),
           ("lora_fa", ("v",), {"r": 3}), ("vera", ("q",), {"r": 4})]


def _random_plan(rng: random.Random, layers: int) -> Plan:
    entries, used = [], set()
    for _ in range(rng.randint(0, 3)):
        method, sites, options = rng.choice(CHOICES)
        chosen = tuple(sorted(rng.sample(range(layers), rng.randint(1, layers))))
        if (method, chosen) in used or any(m == method for m, _ in used):
            continue
        used.add((method, chosen))
        entries.append(PlanEntry(method, chosen, sites, options))
    return Plan(tuple(entries))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_base_is_bitwise_unchanged_after_100_varied_trials(family):
    session = toy_session(family, n_train=24)
    before = base_state(session)
    flags = {n: p.requires_grad for n, p in session.model.named_parameters()}
    blocks = list(session.arch.blocks(session.model))
    implementation = session.model.config._attn_implementation
    rng = random.Random(0)
    for trial in range(100):
        plan = _random_plan(rng, session.arch.num_layers)
        config = TrainConfig(steps=rng.randint(1, 2), batch_size=8, lr=1e-2, seed=trial, eval_batch_size=16,
                             precision=rng.choice(["bf16", "fp32"]), prefix_cache=rng.choice(["bf16", "fp32", "off"]),
                             bucket_by_length=rng.random() < 0.5)
        train_plan(session, plan, config)
    after = session.model.state_dict()
    assert set(after) == set(before)
    head = set(head_parameters(session.model))  # the task head is re-initialised (seeded) by every trial
    assert head and all(name in after for name in head)
    for name, value in before.items():
        if name in head:
            continue
        assert after[name].dtype == value.dtype and torch.equal(after[name], value), name
    assert {n: p.requires_grad for n, p in session.model.named_parameters()} == flags
    assert all(a is b for a, b in zip(session.arch.blocks(session.model), blocks, strict=True))
    assert session.model.config._attn_implementation == implementation
    assert session.activations.hits > 0  # trials with the same first layer shared cached activations


def test_bf16_weights_cast_once_equal_autocast_bitwise():
    session = toy_session("gpt2")  # GPT-2's Conv1D projections are swapped too
    plan = Plan((PlanEntry("lora", (0, 1, 2), ("q", "v"), {"r": 2}), PlanEntry("adapter", (1,), ("down",), {"size": 4})))
    config = TrainConfig(steps=6, batch_size=8, lr=1e-2, precision="bf16", prefix_cache="off")
    swapped = train_plan(session, plan, config)
    assert session.frozen.nbytes() > 0
    session.frozen.cast = lambda enabled=True: nullcontext()  # plain autocast: casts on every call
    plain = train_plan(session, plan, config)
    assert swapped.validation.values == plain.validation.values
    assert all(torch.equal(swapped.state[k], plain.state[k]) for k in plain.state)
    assert swapped.train_loss == plain.train_loss


def test_frozen_weights_are_fp32_outside_and_bf16_inside():
    session = toy_session("bert")
    block = session.arch.blocks(session.model)[0]
    with session.frozen.cast(True):  # outside a trial nothing is frozen: nothing is swapped
        assert block.attention.self.query.weight.dtype == torch.float32
    plan = Plan((PlanEntry("dora", (0,), ("q",), {"r": 2}),))
    with start_run(session, plan, TrainConfig()):
        with session.frozen.cast(True):
            assert block.attention.self.key.weight.dtype == torch.bfloat16
            assert block.attention.self.query.base.weight.dtype == torch.float32  # DoRA reads it: kept fp32
            assert block.attention.output.LayerNorm.weight.dtype == torch.float32
        assert block.attention.self.key.weight.dtype == torch.float32
        with session.frozen.cast(False):
            assert block.attention.self.key.weight.dtype == torch.float32


def test_length_buckets_cover_every_example_once_per_epoch_and_cut_padding():
    session = toy_session("bert", n_train=200)
    data = session.splits["train"]
    per_epoch = 200 // 8

    def epoch(bucket: bool, skip: int = 0):
        config = TrainConfig(batch_size=8, seed=3, bucket_by_length=bucket)
        batches = session.train_batches(config, skip=skip)
        return [next(batches) for _ in range(per_epoch - skip)]

    bucketed, plain = epoch(True), epoch(False)
    seen = sorted(i for b in bucketed for i in b["index"].tolist())
    assert seen == sorted(i for b in plain for i in b["index"].tolist()) == list(range(200))

    def padding(batches):
        return sum(int((b["attention_mask"] == 0).sum()) for b in batches)

    assert padding(bucketed) < padding(plain) / 3
    for b in bucketed:  # labels and ids still belong to the same examples
        index = b["index"].tolist()
        assert b["labels"].tolist() == [data.labels[i] for i in index]
        assert b["attention_mask"].sum(1).tolist() == [len(data.input_ids[i]) for i in index]
    resumed = epoch(True, skip=5)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(resumed, bucketed[5:], strict=True))


def test_resolve_workers():
    assert resolve_workers(2, cpus=2) == (2, 1)
    assert resolve_workers("1", cpus=2) == (1, 2)
    assert resolve_workers(3, cpus=8) == (3, 2)
    assert resolve_workers("auto", cpus=8) == (8 // AUTO_THREADS_PER_WORKER, AUTO_THREADS_PER_WORKER)
    assert resolve_workers("auto", cpus=1) == (1, 1)
    for bad in (0, "zero", "-1", True):
        with pytest.raises(UserError, match="--workers"):
            resolve_workers(bad, cpus=2)


def test_fast_dropout_rate_scale_gradient_and_seed():
    import torch.nn.functional as F

    from autopeft.training.fastpath.step_kernels import CpuStepKernels

    x = torch.ones(200_000, requires_grad=True)
    torch.manual_seed(0)
    with CpuStepKernels():
        y = F.dropout(x, p=0.1, training=True)
        assert torch.equal(F.dropout(x, p=0.1, training=False), x)  # eval mode: untouched
        z = torch.nn.Dropout(0.3)(x)
    p = round(0.1 * 2**16) / 2**16
    kept = y > 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.003
    assert abs((z > 0).float().mean().item() - 0.7) < 0.003
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask * s)/dx = mask * s
    torch.manual_seed(0)
    with CpuStepKernels():
        again = F.dropout(x, p=0.1, training=True)
    assert torch.equal(again, y)  # seeded from torch's generator, like dropout


def test_bf16_softmax_matches_torch_values_and_gradients():
    """The CPU step's bf16 softmax (through the fp32 kernel) matches torch's bf16 softmax, forward and backward."""
    import torch.nn.functional as F

    from autopeft.training.fastpath.step_kernels import CpuStepKernels

    torch.manual_seed(0)
    for width in (7, 47, 64):
        scores = (torch.randn(3, 4, width, width) * 4).to(torch.bfloat16)
        grad = torch.randn(3, 4, width, width).to(torch.bfloat16)
        ours_in = scores.clone().requires_grad_()
        torch_in = scores.clone().requires_grad_()
        with CpuStepKernels():
            ours = F.softmax(ours_in, dim=-1)
            assert ours.grad_fn is not None and "Bf16Softmax" in type(ours.grad_fn).__name__
            assert F.softmax(scores.float(), dim=-1).dtype == torch.float32  # fp32 inputs: torch's own
        native = F.softmax(torch_in, dim=-1)
        assert ours.dtype == torch.bfloat16
        torch.testing.assert_close(ours, native)  # both round an fp32 accumulation: equal but for rare ulps
        assert (ours != native).float().mean() < 1e-3
        ours.backward(grad)
        native.backward(grad)
        torch.testing.assert_close(ours_in.grad, torch_in.grad)
