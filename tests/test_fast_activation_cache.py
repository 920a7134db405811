"""The frozen-prefix activation cache: same losses and gradients as the full model, on every family."""

from __future__ import annotations

import pytest
import torch
from fast_fixtures import one_thread, toy_session

from autopeft.peft.plan import Plan, PlanEntry
from autopeft.testing import TINY_FAMILIES
from autopeft.training.config import TrainConfig
from autopeft.training.fastpath.activation_cache import ActivationCache, first_trained_layer
from autopeft.training.trial_run import resume_run, start_run, train_plan

pytestmark = pytest.mark.usefixtures(one_thread.__name__)
TOP = Plan((PlanEntry("lora", (1, 2), ("q", "v"), {"r": 2}), PlanEntry("prefix", (2,), ("attn",), {"length": 3})))


def _grads_of_first_step(session, plan, config):
    """Loss and gradients of step 0, and how often block 0 ran, through the trainer's own code path."""
    calls = []
    hook = session.arch.blocks(session.model)[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        with start_run(session, plan, config) as run:
            batch = next(session.train_batches(config))
            width = batch["input_ids"].shape[1]
            session.model.train()
            hidden = run.prefix.train_hidden("train", batch["index"].tolist(), width) if run.prefix.active else None
            calls.clear()  # a cache miss runs the real prefix once (in eval mode, without grad)
            loss, _ = run.step_loss(batch)
            loss.backward()
            session.model.eval()
            return loss.detach(), {n: p.grad.clone() for n, p in run._named}, len(calls), hidden
    finally:
        hook.remove()


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("task", ["classification", "causal-lm"])
def test_losses_and_gradients_equal_without_cache(family, task):
    if task == "causal-lm" and family in ("bert", "distilbert"):
        pytest.skip("encoders have no causal LM head")
    session = toy_session(family, task, dropout=False)
    plan = Plan((PlanEntry("lora", (1, 2), ("q", "v"), {"r": 2}),)) if family == "distilbert" else TOP
    cached = TrainConfig(steps=3, batch_size=6, precision="fp32", prefix_cache="fp32", seed=1)
    plain = TrainConfig(steps=3, batch_size=6, precision="fp32", prefix_cache="off", seed=1)
    loss_c, grads_c, block0_calls, hidden = _grads_of_first_step(session, plan, cached)
    loss_p, grads_p, block0_plain, _ = _grads_of_first_step(session, plan, plain)
    assert block0_calls == 0 and block0_plain == 1  # the cached forward never runs block 0
    assert hidden is not None and not hidden.requires_grad  # so nothing is backpropagated below block 1
    torch.testing.assert_close(loss_c, loss_p, rtol=1e-5, atol=1e-6)
    assert set(grads_c) == set(grads_p)
    for name in grads_p:
        torch.testing.assert_close(grads_c[name], grads_p[name], rtol=1e-4, atol=1e-6)
    # whole runs (several steps, epochs, cache hits) agree too
    a, b = train_plan(session, plan, cached), train_plan(session, plan, plain)
    assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
    for name in a.state:
        torch.testing.assert_close(a.state[name], b.state[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cached_evaluation_is_bitwise_the_uncached_one(precision):
    session = toy_session("llama")
    config = TrainConfig(steps=4, batch_size=8, precision=precision, eval_batch_size=7)
    outcome = train_plan(session, TOP, config)
    off = TrainConfig(**{**config.__dict__, "prefix_cache": "off"})
    for split in ("validation", "test"):
        with_cache = session.evaluate_adapter(TOP, outcome.state, split, config)
        again = session.evaluate_adapter(TOP, outcome.state, split, config)  # from the cache
        without = session.evaluate_adapter(TOP, outcome.state, split, off)
        assert with_cache.values == without.values == again.values
    assert session.activations.hits > 0


def test_runs_do_not_depend_on_what_is_cached_and_resume_bitwise(tmp_path):
    """A miss and a hit give the same values (canonical chunks): a small cap, a cleared cache, a
    resumed run all reproduce the uninterrupted run bitwise."""
    from autopeft.training.trial_run import Checkpoint

    session = toy_session("bert")
    config = TrainConfig(steps=14, batch_size=8, lr=1e-2, precision="bf16", seed=4)
    whole = train_plan(session, TOP, config)
    assert session.activations.misses > 0 and session.activations.hits > 0
    with start_run(session, TOP, config) as run:
        run.advance(6)
        run.checkpoint().save(tmp_path / "ckpt.safetensors")
    session.activations = ActivationCache(max_bytes=20_000)  # a few chunks at most: evictions
    with resume_run(session, TOP, config, Checkpoint.load(tmp_path / "ckpt.safetensors")) as run:
        run.advance(14)
        pieces = run.outcome(run.evaluate("validation"))
    assert session.activations.nbytes <= 20_000
    assert pieces.validation.values == whole.validation.values
    assert all(torch.equal(pieces.state[k], whole.state[k]) for k in whole.state)
    assert pieces.train_loss == whole.train_loss


def test_lru_cap_and_keys():
    cache = ActivationCache(max_bytes=3 * 40)
    made = []

    def value(i):
        made.append(i)
        return torch.full((10,), float(i))  # 40 bytes in fp32

    for i in (1, 2, 3, 1, 4):  # 1 is refreshed, so 2 is the least recently used when 4 arrives
        cache.get(("k", i), lambda i=i: value(i), None)
    assert made == [1, 2, 3, 4] and cache.hits == 1 and len(cache) == 3
    cache.get(("k", 2), lambda: value(2), None)
    assert made[-1] == 2  # evicted, recomputed
    stored = cache.get(("k", 9), lambda: torch.tensor([1.0 + 2**-10]), torch.bfloat16)
    assert stored.hidden.dtype == torch.bfloat16 and stored.dtype == torch.float32


def test_first_trained_layer():
    session = toy_session("gpt2")
    arch = session.arch
    assert first_trained_layer(TOP, arch) == 1
    assert first_trained_layer(Plan((PlanEntry("adapter", (2,), ("down",), {"size": 4}),)), arch) == 2
    assert first_trained_layer(Plan(()), arch) == arch.num_layers
    prompt = Plan((PlanEntry("prompt", (0,), ("input",), {}), PlanEntry("lora", (2,), ("q",), {"r": 2})))
    assert first_trained_layer(prompt, arch) == 0  # soft prompts change the input embeddings: no cache


def test_head_only_plan_uses_the_cache_and_matches():
    session = toy_session("distilbert", dropout=False)
    cached = TrainConfig(steps=5, batch_size=8, precision="fp32", prefix_cache="fp32", lr=1e-2)
    plain = TrainConfig(steps=5, batch_size=8, precision="fp32", prefix_cache="off", lr=1e-2)
    a, b = train_plan(session, Plan(()), cached), train_plan(session, Plan(()), plain)
    assert session.activations.misses > 0
    for name in a.state:
        torch.testing.assert_close(a.state[name], b.state[name], rtol=1e-4, atol=1e-5)
