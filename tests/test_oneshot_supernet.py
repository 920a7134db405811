"""The one-shot supernet (#19): gates open and close the candidates exactly, training moves the scores
under the budget, a checkpointed run resumes bitwise, removal restores the base bitwise."""

import pytest
import torch
from fast_fixtures import base_state, one_thread, toy_session  # noqa: F401

from autopeft.oneshot.candidates import candidates, sample_of
from autopeft.oneshot.gates import SliceSpec, readout
from autopeft.oneshot.supernet import SCORES_KEY, build_supernet, supernet_plan
from autopeft.peft.inject import head_parameters, inject
from autopeft.space import load_space, parse_space
from autopeft.testing import tiny_batch
from autopeft.training.config import TrainConfig
from autopeft.training.trial_run import Checkpoint, TrialRun

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_adapters(handle) -> None:
    """Non-zero B / up weights, so that an open candidate changes the output (they start at zero)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in handle.adapter_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _logits(session, batch):
    session.model.eval()
    with torch.no_grad():
        return session.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


IA3_SPACE = """
decisions:
  - name: ia3
    sites: [k, v, down]
    per: site
    methods: {none: {}, ia3: {}}
"""

# DoRA (rank gated inside, magnitude on the output) and prefixes (positions gated in the attention's scores)
DORA_PREFIX_SPACE = """
decisions:
  - name: dora
    sites: [q, v]
    per: site
    methods: {none: {}, dora: {r: {choice: [2, 4]}, alpha: 16}}
  - name: prefix
    sites: [prefix]
    per: layer
    methods: {none: {}, prefix: {length: {choice: [2, 4]}}}
"""
SPACES = {"ia3": IA3_SPACE, "dora_prefix": DORA_PREFIX_SPACE}


def _space(name: str):
    return parse_space(SPACES[name], f"{name}.yaml", name) if name in SPACES else load_space(name)


# LoRA, adapters, BitFit, LN, (IA)^3, DoRA, prefixes
@pytest.mark.parametrize("space_name", ["compact", "s3delta", "ia3", "dora_prefix"])
@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_open_gates_are_the_full_supernet_plan_and_closed_gates_the_base(family, space_name):
    session = toy_session(family, dropout=False)
    batch = tiny_batch()
    space = _space(space_name)
    base = _logits(session, batch)
    supernet = build_supernet(session.model, session.arch, space, budget=10**12)  # everything fits: all open
    _randomise_adapters(supernet.handle)
    opened = _logits(session, batch)
    state = {k: v.clone() for k, v in supernet.handle.state_dict(folded=False).items()}
    supernet.gates.budget = 0.0  # nothing fits: all closed
    closed = _logits(session, batch)
    supernet.remove()
    assert torch.equal(closed, base)  # a closed gate removes its candidate exactly
    assert not torch.allclose(opened, base)
    plain = inject(session.model, supernet_plan(supernet.slices), session.arch)  # the same weights, no gates
    plain.load_state_dict(state, source="checkpoint")
    assert torch.allclose(_logits(session, batch), opened, atol=1e-5)
    plain.remove()
    assert torch.equal(_logits(session, batch), base)


def _train(session, space, budget, steps, stop_at=None, checkpoint=None, training="gates", seen=None):
    """A supernet trained by the ordinary TrialRun (as a trial's plan is), to ``stop_at`` or the end;
    ``seen`` collects each training forward's openings."""
    torch.manual_seed(0)  # as start_run: the seed, the head, then the injected modules' init
    session.reset_head(0)
    supernet = build_supernet(session.model, session.arch, space, budget, training=training)
    if seen is not None:
        supernet._hooks.append(session.model.register_forward_hook(
            lambda m, a, o: seen.append(supernet._p.clone()) if m.training else None))
    config = TrainConfig(steps=steps, batch_size=8, lr=1e-2, seed=0, prefix_cache="off")
    run = TrialRun(session, supernet, config)
    if checkpoint is not None:
        run.restore(checkpoint)
    run.advance(stop_at or steps)
    return run, supernet


@pytest.mark.parametrize("space_name", ["compact", "dora_prefix"])
def test_training_moves_the_scores_under_the_budget_resumes_bitwise_and_restores_the_base(tmp_path, space_name):
    session = toy_session("bert")
    space = _space(space_name)
    before = base_state(session)
    head = set(head_parameters(session.model))
    budget = 0.3 * sum(s.cost for s in candidates(space, session.arch))

    run, supernet = _train(session, space, budget, steps=6)
    assert supernet.gates.raw.detach().abs().sum() > 0  # the scores learned
    assert 0.05 < supernet.tau < 0.06  # annealed to its end value
    expected = float((supernet.openings().detach().double() * supernet.gates.costs).sum())
    assert expected == pytest.approx(budget, rel=1e-6)
    whole = run.state()
    kept = supernet.readout(budget)
    plan = sample_of(space, session.arch, supernet.slices, kept).plan()
    assert 0 < plan.num_params(session.arch) <= budget
    run.close()

    first, _ = _train(session, space, budget, steps=6, stop_at=3)  # "killed" after 3 steps
    first.checkpoint().save(tmp_path / "ckpt.safetensors")
    first.close()
    resumed, _ = _train(session, space, budget, steps=6, checkpoint=Checkpoint.load(tmp_path / "ckpt.safetensors"))
    again = resumed.state()
    resumed.close()
    assert set(again) == set(whole) and SCORES_KEY in whole
    for key, value in whole.items():
        assert torch.equal(again[key], value), key

    after = session.model.state_dict()
    assert set(after) == set(before)
    for name, value in before.items():
        if name not in head:
            assert torch.equal(after[name], value), name


def test_a_subnets_supernet_trains_one_hard_subnetwork_per_step_and_resumes_bitwise(tmp_path):
    session = toy_session("bert")
    space = load_space("compact")
    budget = 0.3 * sum(s.cost for s in candidates(space, session.arch))
    seen: list[torch.Tensor] = []
    run, supernet = _train(session, space, budget, steps=6, training="subnets", seen=seen)
    assert len(seen) == 6
    for p in seen:
        assert set(p.unique().tolist()) <= {0.0, 1.0}  # hard: a slice is in or out
        assert float((p.double() * supernet.gates.costs).sum()) <= budget
    assert len({tuple(p.tolist()) for p in seen}) > 1  # a different sub-network across steps
    assert torch.equal(supernet.gates.raw.detach(), torch.zeros_like(supernet.gates.raw))  # gates untouched
    assert SCORES_KEY not in dict(supernet.trainable_parameters())
    whole = run.state()
    run.close()
    first, _ = _train(session, space, budget, steps=6, stop_at=3, training="subnets")
    first.checkpoint().save(tmp_path / "ckpt.safetensors")
    first.close()
    resumed, _ = _train(session, space, budget, steps=6, training="subnets",
                        checkpoint=Checkpoint.load(tmp_path / "ckpt.safetensors"))
    again = resumed.state()
    resumed.close()
    for key, value in whole.items():
        assert torch.equal(again[key], value), key


class Killed(Exception):
    pass


def test_one_run_reads_out_distinct_valid_plans_and_resumes_after_a_kill_bitwise(tmp_path, monkeypatch):
    from autopeft.oneshot import run as oneshot_run

    monkeypatch.setattr(oneshot_run, "CHECKPOINT_EVERY", 2)
    session = toy_session("bert")
    space = load_space("compact")
    budget = 0.4 * sum(s.cost for s in candidates(space, session.arch))
    config = TrainConfig(steps=6, batch_size=8, lr=1e-2, seed=0, prefix_cache="off")
    whole, predicted = oneshot_run.train_supernet(session, space, budget, config, readouts_k=8)

    def kill_at_5(step, loss):
        if step == 5:
            raise Killed
    path = tmp_path / "supernet.safetensors"
    with pytest.raises(Killed):
        oneshot_run.train_supernet(session, space, budget, config, path, progress=kill_at_5)
    assert path.is_file()  # the step-4 checkpoint
    resumed, replans = oneshot_run.train_supernet(session, space, budget, config, path, readouts_k=8)
    assert resumed.scores == whole.scores
    assert [(r.slices, r.supernet_metric) for r in replans] == [(r.slices, r.supernet_metric) for r in predicted]

    assert 1 <= len(predicted) <= 8
    assert len({r.slices for r in predicted}) == len(predicted)
    for r in predicted:
        assert r.params == sum(whole.slices[i].cost for i in r.slices) <= r.budget <= budget
        assert space.infeasible_reason(r.sample, session.arch, int(budget)) is None
        assert r.supernet_metric == whole.probes[r.slices]  # accuracy of the supernet cut to the readout
        if r.source == "ranking":  # the gates' ranking cut at the readout's budget
            specs = [SliceSpec(s.cost, s.parent, s.unit) for s in whole.slices]
            assert list(r.slices) == readout(specs, whole.scores, r.budget)


def test_a_space_with_soft_prompts_is_refused_with_the_reason():
    from autopeft.core.errors import UserError

    session = toy_session("bert")
    space = parse_space("""
decisions:
  - name: prompt
    sites: [prompt]
    methods: {none: {}, prompt: {length: {choice: [2, 4]}}}
""", "prompt.yaml", "prompt")
    with pytest.raises(UserError, match="also offers prompt: use a space without them"):
        build_supernet(session.model, session.arch, space, budget=1000)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive", "causal"])
def test_a_prefix_position_with_opening_g_gets_g_times_its_attention_weight(mask_kind):
    """The supernet's prefix gate: softmax over [log g_j + s_j (prefix), s_k + mask_k (tokens)], i.e.
    weights proportional to g_j exp(s_j); g = 1 is the plain prefix, g = 0 removes the position."""
    from autopeft.peft.attention import extend_with_prefix

    g = torch.Generator().manual_seed(0)
    batch, heads, length, tokens, dim = 2, 2, 3, 4, 8
    query, key, value = (torch.randn(batch, heads, tokens, dim, generator=g) for _ in range(3))
    prefix_key, prefix_value = (torch.randn(heads, length, dim, generator=g) for _ in range(2))
    padding = torch.tensor([[True] * tokens, [True] * (tokens - 1) + [False]])[:, None, None, :]  # (B, 1, 1, T)
    mask = {"none": None, "causal": None, "bool": padding,
            "additive": torch.zeros(padding.shape).masked_fill(~padding, torch.finfo(torch.float32).min)}[mask_kind]
    gate = torch.tensor([1.0, 0.5, 0.0])
    full_key, full_value, gated = extend_with_prefix(prefix_key, prefix_value, query, key, value, mask,
                                                     causal=mask_kind == "causal", prefix_gate=gate)
    out = torch.nn.functional.scaled_dot_product_attention(query, full_key, full_value, attn_mask=gated)

    scores = query @ full_key.transpose(-1, -2) / dim ** 0.5  # (B, H, T, P + T)
    weight = torch.cat([gate.expand(batch, heads, tokens, length), torch.ones(batch, heads, tokens, tokens)], -1)
    if mask_kind in ("bool", "additive"):
        weight[..., length:] *= padding.float()
    if mask_kind == "causal":
        weight[..., length:] *= torch.ones(tokens, tokens).tril()
    expected = weight * scores.exp()
    expected = (expected / expected.sum(-1, keepdim=True)) @ full_value
    assert torch.allclose(out, expected, atol=1e-5)
    _, _, plain = extend_with_prefix(prefix_key, prefix_value, query, key, value, mask, causal=mask_kind == "causal",
                                     prefix_gate=torch.ones(length))
    _, _, ungated = extend_with_prefix(prefix_key, prefix_value, query, key, value, mask, causal=mask_kind == "causal")
    reference = torch.nn.functional.scaled_dot_product_attention(query, full_key, full_value, attn_mask=ungated)
    assert torch.allclose(torch.nn.functional.scaled_dot_product_attention(
        query, full_key, full_value, attn_mask=plain), reference, atol=1e-6)  # all open = the plain prefix
