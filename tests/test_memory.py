"""Memory estimator: estimates against measured peaks of real training steps, monotonicity, parsing, CLI."""

import json
import time
from dataclasses import fields, replace

import pytest

from autopeft.core.arch import arch_from_config
from autopeft.core.errors import UserError
from autopeft.core.units import parse_memory
from autopeft.memory.estimate import RECIPE_MEMORY, MemorySettings, estimate_memory, estimate_plan_bytes
from autopeft.memory.measure import measure_training_step
from autopeft.peft.plan import Plan
from autopeft.testing import tiny_config, tiny_model
from autopeft.training.config import TrainConfig
from autopeft.training.step import StepRecipe, step_recipe


def _plan(*entries):
    return Plan.from_dict({"entries": [dict(zip(("method", "layers", "sites", "options"), e, strict=True)) for e in entries]})


LORA_ALL = _plan(("lora", [0, 1, 2], ["q", "v"], {"r": 8}))
LORA_TOP = _plan(("lora", [2], ["q", "v"], {"r": 8}))


@pytest.mark.parametrize(("family", "task", "plan"), [
    ("llama", "causal-lm", LORA_ALL),
    ("gpt2", "causal-lm", _plan(("prefix", [1, 2], ["attn"], {"length": 5}))),
    ("bert", "classification", _plan(("adapter", [0, 1, 2], ["o", "down"], {"size": 8}))),
    ("llama", "causal-lm", _plan(("lora", [1], ["q", "v"], {"r": 4}), ("adapter", [2], ["down"], {"size": 8}))),
])
def test_estimate_matches_a_measured_training_step(family, task, plan):
    model = tiny_model(family, task)
    batch, length = 6, 21
    measured = measure_training_step(model, plan, task, batch, length, "bf16")
    settings = MemorySettings(batch_size=batch, seq_len=length, device="cpu", task=task, num_labels=3)
    estimate = estimate_memory(model.config, plan, settings)
    assert abs(estimate.allocated_bytes - measured) / measured < 0.08, (estimate.to_dict(), measured)


@pytest.mark.parametrize(("family", "task"), [("bert", "classification"), ("llama", "causal-lm")])
def test_estimate_bounds_a_padding_free_step(family, task):
    """Half the rows half as long (25% padding): the trainer drops the padding, the estimate (which
    counts the padded batch) stays above the measured peak and within 30% of it."""
    model = tiny_model(family, task)
    measured = measure_training_step(model, LORA_ALL, task, 6, 24, "bf16", short_rows=3)
    settings = MemorySettings(batch_size=6, seq_len=24, device="cpu", task=task, num_labels=3)
    estimate = estimate_memory(model.config, LORA_ALL, settings).allocated_bytes
    assert measured <= estimate < 1.3 * measured, (estimate, measured)


def test_every_switch_of_the_trainers_step_is_declared_by_the_estimator():
    """A new field of the trainer's step recipe fails here until the estimator says how it models it."""
    assert set(RECIPE_MEMORY) == {f.name for f in fields(StepRecipe)}


_FLIPPED = {"device": "cuda", "eager_attention_max_length": 0}


@pytest.mark.parametrize("field", [name for name, (modelled, _) in RECIPE_MEMORY.items() if modelled])
def test_each_modelled_switch_of_the_step_moves_the_estimate(field):
    """The trainer's CPU bf16 step of a BERT classifier (every switch on) vs the same step with one switch
    flipped: each switch the estimator claims to model must change its estimate."""
    base = step_recipe(TrainConfig(), "cpu")
    flipped = replace(base, **{field: _FLIPPED.get(field, not getattr(base, field))})

    def estimate(recipe: StepRecipe) -> int:
        settings = MemorySettings(batch_size=4, seq_len=32, device=recipe.device, task="classification",
                                  dtype="bf16" if recipe.autocast_bf16 else "fp32", recipe=recipe)
        return estimate_memory(tiny_config("bert"), LORA_ALL, settings).total_bytes

    assert estimate(base) != estimate(flipped), field


def test_the_search_estimates_the_step_its_trainer_runs():
    """Without a recipe, the settings' step is the trainer's own for that precision and device."""
    settings = MemorySettings(device="cpu", dtype="bf16")
    assert settings.step() == step_recipe(TrainConfig(precision="bf16"), "cpu")
    assert MemorySettings(device="cpu", trainer_kernels=False).step() == StepRecipe.plain("cpu", True)
    with pytest.raises(ValueError, match="contradict"):
        MemorySettings(device="cuda", recipe=settings.step())


def _estimate(plan=LORA_ALL, **settings):
    base = {"batch_size": 4, "seq_len": 32, "device": "cpu", "task": "causal-lm"}
    return estimate_memory(tiny_config("llama"), plan, MemorySettings(**{**base, **settings}))


def test_more_tokens_need_more_memory():
    assert _estimate(batch_size=8).total_bytes > _estimate(batch_size=4).total_bytes
    assert _estimate(seq_len=64).total_bytes > _estimate(seq_len=32).total_bytes


def test_frozen_lower_layers_save_no_activations():
    def saved(plan):
        return sum(line.bytes for line in _estimate(plan).lines if line.name.startswith("saved "))

    assert saved(LORA_TOP) < saved(LORA_ALL)
    assert saved(Plan(())) == 0


def test_sequence_lengthening_methods_cost_activations():
    prefix = _plan(("prefix", [0, 1, 2], ["attn"], {"length": 16}))
    longer = _plan(("prefix", [0, 1, 2], ["attn"], {"length": 64}))
    assert _estimate(longer).total_bytes > _estimate(prefix).total_bytes
    prompt = _plan(("prompt", [], ["input"], {"length": 32}))
    assert _estimate(prompt).line("saved activations") > _estimate(LORA_ALL).line("saved activations")


def test_quantized_and_cheaper_settings_shrink_their_lines():
    full = _estimate()
    nf4 = _estimate(quantize="nf4")
    assert sum(x.bytes for x in nf4.lines if x.name.startswith("base weights")) < \
        sum(x.bytes for x in full.lines if x.name.startswith("base weights"))
    assert _estimate(optimizer="sgd").line("optimizer states") == 0 < full.line("optimizer states")
    cuda = _estimate(device="cuda")
    assert cuda.overhead_bytes > 0 and cuda.total_bytes == cuda.allocated_bytes + cuda.overhead_bytes
    assert sum(line.bytes for line in full.lines) == full.total_bytes


def test_estimate_plan_bytes_takes_an_arch_and_overrides():
    arch = arch_from_config(tiny_config("gpt2"))
    small = estimate_plan_bytes(arch, LORA_ALL, batch_size=2, device="cpu")
    large = estimate_plan_bytes(arch, LORA_ALL, MemorySettings(device="cpu"), batch_size=16)
    assert 0 < small < large
    with pytest.raises(UserError, match="dtype"):
        estimate_plan_bytes(arch, LORA_ALL, dtype="fp16")


@pytest.mark.parametrize(("text", "value"), [("8GiB", 8 * 2**30), ("24 GB", 24 * 10**9), ("512MiB", 512 * 2**20),
                                             ("1.5G", 1_500_000_000), ("100kB", 100_000)])
def test_parse_memory(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["8", "-1GB", "abc", "0GB", "8 parsecs", ""])
def test_parse_memory_rejects_malformed_values(text):
    with pytest.raises(UserError) as exc:
        parse_memory(text)
    assert "\n" not in str(exc.value) and "--memory" in str(exc.value)


@pytest.mark.parametrize(("args", "message"), [
    (["--plan", "/nonexistent/plan.json"], "plan file not found"),
    (["--space", "hybrid"], "--space needs --budget"),
    (["--plan", "p.json", "--budget", "1%"], "--budget goes with --space"),
    (["--plan", "p.json", "--batch-size", "0"], "--batch-size"),
])
def test_cli_errors_are_one_line(capsys, args, message):
    from autopeft.cli.main import main

    assert main(["estimate", *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "USDT" not in line]
    assert err[-1].startswith("error: ") and message in err[-1]


def test_cli_estimates_a_plan_from_a_config_folder(tmp_path, capsys):
    from autopeft.cli.main import main

    tiny_config("llama").save_pretrained(tmp_path / "model")
    LORA_ALL.save(tmp_path / "plan.json")
    assert main(["estimate", "--model", str(tmp_path / "model"), "--plan", str(tmp_path / "plan.json"),
                 "--batch-size", "4", "--seq-len", "32", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total_bytes"] == _estimate().total_bytes
    assert main(["estimate", "--model", str(tmp_path / "model"), "--space", "hybrid", "--budget", "2%",
                 "--device", "cpu"]) == 0
    assert "peak" in capsys.readouterr().out


@pytest.mark.slow
def test_minilm_estimate_is_fast_and_close():
    from autopeft.training.models import load_model

    loaded = load_model("minilm", "classification")
    plan = _plan(("lora", [2, 3, 4, 5], ["q", "v"], {"r": 8}), ("prefix", [5], ["attn"], {"length": 8}))
    settings = MemorySettings(batch_size=8, seq_len=64, device="cpu", task="classification")
    estimate_memory(loaded.model.config, plan, settings)  # warm the method profile cache
    start = time.perf_counter()
    estimate = estimate_memory(loaded.model.config, plan, settings)
    assert time.perf_counter() - start < 2.0
    measured = measure_training_step(loaded.model, plan, "classification", 8, 64, "bf16")
    assert abs(estimate.allocated_bytes - measured) / measured < 0.08, (estimate.to_dict(), measured)
