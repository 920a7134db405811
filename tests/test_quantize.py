"""QLoRA: quantized (nf4 / fp4 / int8) base projections with LoRA-family methods on top."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from autopeft.cli.main import main
from autopeft.core.arch import arch_from_config
from autopeft.core.errors import UserError
from autopeft.methods.dora import site_weight
from autopeft.peft.inject import inject
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.peft.quantize import dequantized_weight, is_quantized, quantize_model, quantized_linear
from autopeft.testing import save_tiny_bert, tiny_batch, tiny_config, tiny_model, write_toy_csv
from autopeft.training.options import DataOptions

ON_PROJECTIONS = ("lora", "dora", "lora_fa", "vera", "adalora", "ia3", "bitfit", "adapter")


def _quantized(family: str, kind: str, task: str = "classification", layers: int = 3):
    model = tiny_model(family, task)
    if layers != 3:  # fewer blocks: a quantized forward dequantizes every projection, which is slow on CPU
        config = tiny_config(family)
        config.num_hidden_layers = layers
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval()
    arch = arch_from_config(model.config)
    count = quantize_model(model, arch, kind)
    assert count == arch.num_layers * len({s.path for s in arch.sites.values()})
    assert sum(is_quantized(m) for m in model.modules()) == count  # head, pooler, embeddings untouched
    return model, arch


@pytest.mark.parametrize(("family", "kind"), [("bert", "fp4"), ("gpt2", "nf4"), ("llama", "int8")])
def test_quantized_model_stays_close_and_keeps_the_head(family, kind):
    batch = tiny_batch()
    reference = tiny_model(family)
    with torch.no_grad():
        expected = reference(**batch).logits
    model, arch = _quantized(family, kind)
    block = arch.blocks(model)[0]
    assert all(is_quantized(block.get_submodule(s.path)) for s in arch.sites.values())
    with torch.no_grad():
        got = model(**batch).logits
    assert (got - expected).abs().max() < 0.05  # quantization error on a tiny random model
    # the dequantized weight is what the module computes with
    site = arch.sites["up"]
    module = block.get_submodule(site.path)
    x = torch.randn(4, site.in_features)
    with torch.no_grad():
        bias = module.bias if module.bias is not None else 0.0
        torch.testing.assert_close(module(x), x @ dequantized_weight(module).T + bias, rtol=1e-4, atol=1e-4)


def _lm_loss(model, batch):
    logits = model(**batch).logits
    targets = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


@pytest.mark.parametrize(("method", "kind"), [(m, "nf4") for m in ON_PROJECTIONS] + [("lora", "int8"), ("dora", "fp4")])
def test_methods_work_on_a_quantized_base_and_remove_bitwise(method, kind):
    model, arch = _quantized("llama", kind, "causal-lm", layers=1)
    batch = tiny_batch(batch=2, length=7)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(**batch).logits
    options = {"r": 2} if method in ("lora", "dora", "lora_fa") else {}
    plan = Plan((PlanEntry(method, (0,), ("q", "v", "down"), options),))
    handle = inject(model, plan, train_head=False)
    assert handle.num_adapter_params() == plan.num_params(arch_from_config(model.config))  # unquantized shapes
    with torch.no_grad():  # away from init, where e.g. LoRA's A gets no gradient (B = 0)
        for _, p in handle.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    _lm_loss(model, batch).backward()
    for name, p in handle.trainable_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    handle.remove()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_qlora_training_reduces_the_loss(method):
    model, _ = _quantized("llama", "nf4", "causal-lm", layers=1)
    batch = tiny_batch(batch=2, length=7)
    handle = inject(model, Plan((PlanEntry(method, (0,), ("q", "v", "down"), {"r": 2}),)), train_head=False)
    optimizer = torch.optim.Adam([p for _, p in handle.trainable_parameters()], lr=5e-2)
    first = _lm_loss(model, batch).item()
    for _ in range(12):
        optimizer.zero_grad()
        loss = _lm_loss(model, batch)
        loss.backward()
        optimizer.step()
    assert loss.item() < first - 0.02, (first, loss.item())


def test_eval_mode_inference_leaves_the_4bit_weight_as_it_is():
    """bitsandbytes would repack the weight in place on a CPU eval call (and fail for d=32)."""
    module = quantized_linear(torch.nn.Linear(32, 32), "nf4").eval()
    packed = module.weight.data.clone()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        module(torch.randn(3, 5, 32))
    assert torch.equal(module.weight.data, packed)


def test_dora_on_nf4_reads_the_dequantized_weight():
    model, arch = _quantized("bert", "nf4")
    handle = inject(model, Plan((PlanEntry("dora", (1,), ("v",), {"r": 2}),)))
    module = handle.modules["layers.1.v.dora"]
    base = arch.blocks(model)[1].get_submodule(arch.sites["v"].path).base
    weight, _ = site_weight(base, arch.sites["v"])
    torch.testing.assert_close(weight, dequantized_weight(base))
    torch.testing.assert_close(module.magnitude.detach(), weight.norm(dim=1))
    x, y = torch.randn(3, 40), torch.randn(3, 40)
    torch.testing.assert_close(module(x, y), y, rtol=1e-5, atol=1e-5)  # identity at init on nf4 too


def test_merge_into_a_quantized_base_is_refused():
    model, _ = _quantized("bert", "nf4")
    handle = inject(model, Plan((PlanEntry("lora", (0,), ("q",), {}),)))
    with pytest.raises(UserError, match="quantized"):
        handle.merge()


def test_unknown_quantization_is_a_user_error():
    with pytest.raises(UserError, match="--quantize 'nf3'"):
        DataOptions(quantize="nf3")


@pytest.mark.slow
def test_train_on_nf4_records_it_and_eval_reproduces(tmp_path, capsys):
    model = save_tiny_bert(tmp_path / "model")
    data = write_toy_csv(tmp_path / "reviews.csv")
    plan = tmp_path / "plan.json"
    Plan((PlanEntry("dora", (0, 1), ("q", "v"), {"r": 4}),)).save(plan)
    out = tmp_path / "adapter"
    common = ["--model", model, "--dataset", data, "--quantize", "nf4"]
    assert main(["train", "--plan", str(plan), *common, "--steps", "15", "--out", str(out), "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert json.loads((out / "autopeft_config.json").read_text())["data"]["quantize"] == "nf4"
    assert trained["adapter_params"] == 2 * 2 * (4 * (32 + 32) + 32)  # the same count as unquantized
    assert main(["eval", str(out), "--split", "validation", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == trained["validation"]["accuracy"]
