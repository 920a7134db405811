"""Semantics of the input-, norm- and sublayer-level methods against hand-written references.

The conformance suite checks every method's contract (counts, removal, round trips, training); these
tests check *what* they compute: a soft prompt equals running the model on [prompt ; tokens] (with the
head reading the real [CLS] / last real token), a parallel adapter adds its update to the MLP's output
from the MLP's input, LN tuning equals the norm with shifted parameters, gates ignore padding, and a
prefix trained through its MLP saves plain key/values that load without it. Plus presets and refusals.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from autopeft.cli.main import main
from autopeft.core.arch import arch_from_config
from autopeft.core.errors import UserError
from autopeft.peft.inject import inject
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.peft.presets import PRESETS, preset_plan
from autopeft.testing import tiny_batch, tiny_config, tiny_model


def _perturb(handle, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in handle.adapter_parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.mark.parametrize(("family", "task"), [("bert", "classification"), ("distilbert", "classification"),
                                              ("gpt2", "classification"), ("llama", "classification"),
                                              ("llama", "causal-lm")])
def test_prompt_equals_the_model_on_prompt_tokens_reading_the_real_positions(family, task):
    """With the prompt set to the embeddings of tokens u, autopeft(x) == the plain model on [u ; x] at x's positions."""
    model = tiny_model(family, task)
    batch = tiny_batch()
    prompt_ids = torch.tensor([5, 17, 42])
    handle = inject(model, Plan((PlanEntry("prompt", (), ("input",), {"length": 3}),)), train_head=False)
    with torch.no_grad():
        handle.modules["input.prompt"].prompt.copy_(model.get_input_embeddings().weight[prompt_ids])
        ours = model(**batch).logits
    handle.remove()
    ids = torch.cat([prompt_ids.expand(3, -1), batch["input_ids"]], dim=1)
    mask = torch.cat([torch.ones(3, 3, dtype=torch.long), batch["attention_mask"]], dim=1)
    with torch.no_grad():
        if family in ("gpt2", "llama"):  # LM logits at x's positions; classifiers at the last real token
            expected = model(input_ids=ids, attention_mask=mask).logits
            expected = expected[:, 3:] if task == "causal-lm" else expected
        else:  # the head reads x's first token ([CLS]), not the first virtual token
            hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[:, 3]
            if family == "bert":
                expected = model.classifier(model.bert.pooler.activation(model.bert.pooler.dense(hidden)))
            else:
                expected = model.classifier(F.relu(model.pre_classifier(hidden)))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_prompt_vocab_init_copies_seeded_vocabulary_rows_and_random_init_matches_the_scale():
    model = tiny_model("bert")
    table = model.get_input_embeddings().weight
    plan = Plan((PlanEntry("prompt", (), ("input",), {"length": 4, "seed": 7}),))
    prompt = inject(model, plan).modules["input.prompt"].prompt
    ids = torch.randint(0, table.shape[0], (4,), generator=torch.Generator().manual_seed(7))
    assert torch.equal(prompt, table[ids])
    model = tiny_model("bert")
    plan = Plan((PlanEntry("prompt", (), ("input",), {"length": 400, "init": "random"}),))
    prompt = inject(model, plan).modules["input.prompt"].prompt
    assert abs(prompt.std().item() / table.std().item() - 1) < 0.1


def test_too_long_prompt_is_a_user_error():
    model = tiny_model("gpt2")  # 64 positions
    inject(model, Plan((PlanEntry("prompt", (), ("input",), {"length": 60}),)))
    with pytest.raises(UserError, match="exceed the model's 64 positions"):
        model(**tiny_batch())


@pytest.mark.parametrize("family", ["distilbert", "gpt2", "llama"])  # (BERT's MLP spans two modules)
def test_parallel_adapter_adds_its_update_from_the_mlp_input(family):
    model = tiny_model(family)
    arch = arch_from_config(model.config)
    mlp = arch.block_module(model, 1, arch.family.mlp_path)
    seen = {}
    hook = mlp.register_forward_hook(lambda m, args, out: seen.update(x=args[0], out=out))
    handle = inject(model, Plan((PlanEntry("parallel_adapter", (1,), ("down",), {"size": 4, "scaling": 2.0}),)))
    _perturb(handle)
    adapter = handle.modules["layers.1.down.parallel_adapter"]
    with torch.no_grad():
        model(**tiny_batch())
        update = 2.0 * adapter.up(torch.relu(adapter.down(seen["x"])))
        handle.remove()
        hook.remove()
        base = mlp(seen["x"])
    torch.testing.assert_close(seen["out"], base + update, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_ln_tuning_is_the_norm_with_shifted_parameters(family):
    model = tiny_model(family)
    arch = arch_from_config(model.config)
    norm = arch.block_module(model, 2, arch.norms["ln_mlp"].path)
    seen = {}
    handle = inject(model, Plan((PlanEntry("ln_tuning", (2,), ("ln_mlp",)),)))
    wrapper = arch.block_module(model, 2, arch.norms["ln_mlp"].path)
    hook = wrapper.register_forward_hook(lambda m, args, out: seen.update(x=args[0], out=out))
    _perturb(handle)
    delta = handle.modules["layers.2.ln_mlp.ln_tuning"]
    with torch.no_grad():
        model(**tiny_batch())
    hook.remove()
    x = seen["x"]
    if family == "bert":
        expected = F.layer_norm(x, (arch.hidden,), norm.weight + delta.delta_weight, norm.bias + delta.delta_bias,
                                norm.eps)
    else:  # RMSNorm: no bias
        assert delta.delta_bias is None
        expected = (norm.weight + delta.delta_weight) * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True)
                                                                          + norm.variance_epsilon))
    torch.testing.assert_close(seen["out"], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("entry", [
    PlanEntry("prefix", (0, 1, 2), ("attn",), {"length": 3, "gated": True}),
    PlanEntry("adapter", (0, 1, 2), ("o", "down"), {"size": 3, "gated": True}),
], ids=["prefix", "adapter"])
def test_gated_outputs_do_not_depend_on_batch_padding(entry):
    model = tiny_model("llama", "causal-lm")
    handle = inject(model, Plan((entry,)))
    _perturb(handle, scale=1.0)
    batch = tiny_batch()
    with torch.no_grad():
        padded = model(**batch).logits
        row = 2  # the most padded row, alone and unpadded
        length = int(batch["attention_mask"][row].sum())
        alone = model(input_ids=batch["input_ids"][row:row + 1, :length],
                      attention_mask=batch["attention_mask"][row:row + 1, :length]).logits
    torch.testing.assert_close(padded[row:row + 1, :length], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_reparameterised_prefix_saves_plain_key_values_that_load_without_the_mlp(family):
    arch = arch_from_config(tiny_config(family))
    reparam = Plan((PlanEntry("prefix", (0, 2), ("attn",), {"length": 3, "reparam_hidden": 7, "gated": True}),))
    plain = Plan((PlanEntry("prefix", (0, 2), ("attn",), {"length": 3, "gated": True}),))
    batch = tiny_batch()
    model = tiny_model(family)
    handle = inject(model, reparam)
    assert handle.num_adapter_params() == reparam.num_params(arch) > plain.num_params(arch)  # budget: training count
    _perturb(handle)
    expected = model(**batch).logits.detach()
    state = handle.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items() if not k.startswith("head.")} == {
        f"layers.{i}.attn.prefix.{name}": shape for i in (0, 2) for name, shape in (
            ("key", (arch.num_kv_heads, 3, arch.head_dim)), ("value", (arch.num_kv_heads, 3, arch.head_dim)),
            ("gate.weight", (1, arch.hidden)), ("gate.bias", (1,)))}
    for target in (reparam, plain):  # the same file loads into either plan, with the same outputs
        fresh = tiny_model(family)
        loaded = inject(fresh, target)
        loaded.load_state_dict(state)
        assert loaded.num_adapter_params() == plain.num_params(arch)  # folded: the MLP is gone
        assert torch.equal(fresh(**batch).logits, expected)


def test_ptuning_saves_only_its_virtual_tokens():
    arch = arch_from_config(tiny_config("gpt2"))
    model = tiny_model("gpt2", "causal-lm")
    handle = inject(model, Plan((PlanEntry("ptuning", (), ("input",), {"length": 4, "hidden": 6}),)))
    assert set(handle.state_dict()) == {"input.ptuning.prompt"}
    assert handle.state_dict()["input.ptuning.prompt"].shape == (4, arch.hidden)


@pytest.mark.parametrize(("entries", "message"), [
    ([PlanEntry("prefix", (1,), ("attn",), {}), PlanEntry("ptuning_v2", (1,), ("attn",), {})], "two prefix-type methods"),
    ([PlanEntry("prompt", (), ("q",), {})], "goes on site"),
    ([PlanEntry("ln_tuning", (0,), ("down",), {})], "goes on site"),
    ([PlanEntry("parallel_adapter", (0,), ("q",), {})], "goes on site"),
    ([PlanEntry("lora", (0,), ("ln_attn",), {})], "does not exist"),
    ([PlanEntry("prompt", (), ("input",), {}), PlanEntry("prompt", (0,), ("input",), {"length": 2})], "twice"),
    ([PlanEntry("ptuning", (), ("input",), {"encoder": "gru"})], "choose one of"),
    ([PlanEntry("prefix", (0,), ("attn",), {"reparam_hidden": -1})], "reparam_hidden"),
])
def test_misplaced_methods_are_user_errors(entries, message):
    with pytest.raises(UserError, match=message):
        inject(tiny_model("llama"), Plan(tuple(entries)))


def test_presets_are_valid_plans_scaled_to_the_model():
    arch = arch_from_config(tiny_config("bert"))  # hidden 40
    plans = {name: preset_plan(name, arch) for name in PRESETS}
    adapter = plans["houlsby"].entries[0]
    assert adapter.sites == ("o", "down") and adapter.options["size"] == 2 and adapter.layers == (0, 1, 2)
    assert plans["pfeiffer"].entries[0].sites == ("down",)
    assert [e.method for e in plans["mam"].entries] == ["prefix", "parallel_adapter"]
    assert plans["mam"].entries[1].options == {"size": 20, "activation": "relu", "scaling": 4.0}
    assert [(e.method, e.options.get("gated")) for e in plans["unipelt"].entries] == [
        ("lora", True), ("prefix", True), ("adapter", True)]
    model = tiny_model("bert")
    for plan in plans.values():
        with inject(model, plan) as handle:
            assert handle.num_adapter_params() == plan.num_params(arch)
    with pytest.raises(UserError, match="unknown preset"):
        preset_plan("lora", arch)


def test_plan_command_writes_presets_and_input_methods(tmp_path, capsys):
    out = tmp_path / "mam.json"
    assert main(["plan", "--preset", "mam", "--model", "minilm", "--layers", "0-1", "--out", str(out)]) == 0
    plan = Plan.load(out)
    assert [(e.method, e.layers) for e in plan.entries] == [("prefix", (0, 1)), ("parallel_adapter", (0, 1))]
    capsys.readouterr()
    assert main(["plan", "--method", "prompt", "--set", "length=4", "--model", "minilm"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["entries"] == [{"method": "prompt", "layers": [], "sites": ["input"], "options": {"length": 4}}]
    assert main(["plan", "--preset", "houlsby", "--set", "size=4"]) == 2


def test_a_resumed_run_keeps_training_the_reparameterisations(tmp_path):
    """Checkpoints hold the MLP / prompt encoder (unfolded); adapter files hold what they produce."""
    from autopeft.training.config import TrainConfig
    from autopeft.training.data import TokenizedSplit
    from autopeft.training.session import Session
    from autopeft.training.trial_run import Checkpoint, resume_run, start_run, train_plan

    model = tiny_model("gpt2", "causal-lm")
    g = torch.Generator().manual_seed(0)
    block = [torch.randint(1, 97, (12,), generator=g).tolist() for _ in range(8)]
    splits = {name: TokenizedSplit(block, None, 0) for name in ("train", "validation", "test")}
    session = Session(model, arch_from_config(model.config), "causal-lm", splits, pad_token_id=0)
    plan = Plan((PlanEntry("prefix", (1, 2), ("attn",), {"length": 2, "reparam_hidden": 5, "gated": True}),
                 PlanEntry("ptuning", (), ("input",), {"length": 2, "hidden": 4})))
    config = TrainConfig(steps=6, batch_size=4, lr=1e-2, precision="fp32", seed=1)
    whole = train_plan(session, plan, config)
    with start_run(session, plan, config) as run:
        run.advance(3)
        checkpoint = run.checkpoint()
        assert "input.ptuning.embedding" in checkpoint.state and "input.ptuning.prompt" not in checkpoint.state
        checkpoint.save(tmp_path / "ckpt.safetensors")
    with resume_run(session, plan, config, Checkpoint.load(tmp_path / "ckpt.safetensors")) as run:
        run.advance(6)
        pieces = run.outcome(run.evaluate("validation"))
    assert pieces.validation.values == whole.validation.values
    assert set(whole.state) == set(pieces.state) and "input.ptuning.prompt" in whole.state
    assert all(torch.equal(pieces.state[k], whole.state[k]) for k in whole.state)
    again = session.evaluate_adapter(plan, whole.state, "validation", config)  # the folded adapter file
    assert again.values == whole.validation.values
