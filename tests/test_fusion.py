"""AdapterFusion: the fusion layer's math, what trains, removal, refusals, and ``autopeft fuse`` end to end."""

from __future__ import annotations

import json

import pytest
import torch

from autopeft.cli.main import main
from autopeft.core.errors import UserError
from autopeft.peft.artifacts import save_adapter
from autopeft.peft.fusion import (
    FusionLayer,
    fuse,
    fusion_state,
    load_sources,
    source_state,
    sources_from_saved,
)
from autopeft.peft.inject import inject
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.testing import save_tiny_bert, tiny_batch, tiny_model, write_toy_csv

LORA = Plan((PlanEntry("lora", (0, 1), ("q", "v"), {"r": 2}),))
ADAPTER = Plan((PlanEntry("adapter", (1, 2), ("down",), {"size": 4}), PlanEntry("lora", (1,), ("down",), {"r": 2})))


def _save_source(tmp_path, name: str, plan: Plan, family: str = "bert", model: str = "tiny", seed: int = 0):
    """Train-free stand-in for a trained adapter: the plan's modules with random (non-identity) weights."""
    handle = inject(tiny_model(family), plan)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in handle.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    directory = tmp_path / name
    save_adapter(directory, plan, handle.state_dict(), {"data": {"model": model, "quantize": "none"}})
    return str(directory)


def test_fusion_layer_starts_as_the_mean_of_the_sources_and_attends():
    width = 6
    x, y = torch.randn(2, 3, 5), torch.randn(2, 3, width)
    shift = [torch.randn(width), torch.randn(width)]

    class Add(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = v

        def forward(self, x, y):
            return y + self.v

    layer = FusionLayer(width, [[Add(shift[0])], [Add(shift[1]), Add(shift[1])]])  # a chain of two
    with torch.no_grad():
        layer.query.weight.zero_()  # equal scores: the plain average
        torch.testing.assert_close(layer(x, y), y + 0.5 * (shift[0] + 2 * shift[1]))
        layer.query.weight.copy_(torch.eye(width) * 50)
        layer.key.weight.copy_(torch.eye(width))
        # keys = deltas, query = 50 h: the source whose delta aligns with h dominates
        out = layer(x, y)
    scores = torch.stack([50 * y @ shift[0], 50 * y @ (2 * shift[1])], dim=-1)
    weights = torch.softmax(scores, dim=-1)
    torch.testing.assert_close(out, y + weights[..., :1] * shift[0] + weights[..., 1:] * 2 * shift[1])
    assert layer.regularization().item() == 0.0  # V = I at init


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_fuse_trains_only_fusion_and_head_and_removes_bitwise(family, tmp_path):
    plans = (LORA, Plan((PlanEntry("ia3", (0,), ("k", "v"), {}), PlanEntry("adapter", (2,), ("o",), {"size": 3}))))
    dirs = [_save_source(tmp_path, f"s{i}", plan, family, seed=i) for i, plan in enumerate(plans)]
    sources, _ = load_sources(dirs)
    model = tiny_model(family)
    batch = tiny_batch()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(**batch).logits
    handle = fuse(model, handle_arch(model), sources)
    sites = {"layers.0.q", "layers.0.k", "layers.0.v", "layers.1.q", "layers.1.v", "layers.2.o"}
    assert set(handle.modules) == {f"{s}.fusion" for s in sites}
    width = 40
    assert handle.num_adapter_params() == len(sites) * (3 * width * width + 2 * width)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for _, p in handle.trainable_parameters()}  # sources stay frozen
    model(**batch).logits.sum().backward()
    assert all(p.grad is not None for _, p in handle.adapter_parameters())
    with torch.no_grad():
        fused = model(**batch).logits
    assert not torch.allclose(fused, before, atol=1e-4)  # the sources act through the fusion
    handle.remove()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)


def test_saved_fusion_round_trip_reproduces_outputs(tmp_path):
    dirs = [_save_source(tmp_path, "a", LORA, seed=1), _save_source(tmp_path, "b", ADAPTER, seed=2)]
    sources, _ = load_sources(dirs)
    model = tiny_model("bert")
    handle = fuse(model, handle_arch(model), sources)
    with torch.no_grad():
        for _, p in handle.trainable_parameters():
            p.add_(torch.randn(p.shape) * 0.05)
        expected = model(**tiny_batch()).logits
    saved = {**{k: v.clone() for k, v in handle.state_dict().items()}, **source_state(sources)}
    record = {"fusion": {"sources": [s.to_record() for s in sources]}}
    handle.remove()
    fresh = tiny_model("bert")
    again = fuse(fresh, handle_arch(fresh), sources_from_saved(record, saved))
    again.load_state_dict(fusion_state(saved))
    with torch.no_grad():
        assert torch.equal(fresh(**tiny_batch()).logits, expected)


def test_what_cannot_be_fused_is_refused(tmp_path):
    lora = _save_source(tmp_path, "lora", LORA)
    with pytest.raises(UserError, match="at least two"):
        load_sources([lora])
    other_base = _save_source(tmp_path, "other", LORA, model="another-model")
    with pytest.raises(UserError, match="same base model"):
        load_sources([lora, other_base])
    prefix = _save_source(tmp_path, "prefix", Plan((PlanEntry("prefix", (0,), ("attn",), {"length": 2}),)))
    with pytest.raises(UserError, match="cannot be fused"):
        load_sources([lora, prefix])
    ia3_down = _save_source(tmp_path, "ia3", Plan((PlanEntry("ia3", (0,), ("down",), {}),)))
    sources, _ = load_sources([lora, ia3_down])
    model = tiny_model("bert")
    with pytest.raises(UserError, match="rescales the projection's input"):
        fuse(model, handle_arch(model), sources)
    assert not any(p.requires_grad is False for p in model.parameters())  # a failed fuse leaves no trace


def handle_arch(model):
    from autopeft.core.arch import arch_from_config

    return arch_from_config(model.config)


@pytest.mark.slow
def test_fuse_command_end_to_end(tmp_path, capsys):
    model = save_tiny_bert(tmp_path / "model")
    task_a = write_toy_csv(tmp_path / "a.csv", ("good", "bad"))
    task_b = write_toy_csv(tmp_path / "b.csv", ("red", "blue"))
    target = write_toy_csv(tmp_path / "target.csv", ("good", "blue"))
    adapter = Plan((PlanEntry("adapter", (1,), ("down",), {"size": 4}), PlanEntry("lora", (1,), ("down",), {"r": 2})))
    for name, plan, data in (("a", LORA, task_a), ("b", adapter, task_b)):
        plan.save(tmp_path / f"{name}.json")
        assert main(["train", "--plan", str(tmp_path / f"{name}.json"), "--model", model, "--dataset", data,
                     "--steps", "8", "--out", str(tmp_path / name)]) == 0
    out = tmp_path / "fused"
    capsys.readouterr()
    assert main(["fuse", str(tmp_path / "a"), str(tmp_path / "b"), "--dataset", target, "--steps", "10",
                 "--out", str(out), "--json"]) == 0
    fused = json.loads(capsys.readouterr().out)
    assert fused["fusion_params"] == 5 * (3 * 32 * 32 + 2 * 32)  # a: 0.q 0.v 1.q 1.v; b: 1.down
    assert main(["eval", str(out), "--split", "validation", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == fused["validation"]["accuracy"]
    # what cannot be fused is refused with exit code 2 and a one-line reason
    assert main(["fuse", str(tmp_path / "a"), str(out), "--dataset", target, "--steps", "2"]) == 2
    assert "itself a fusion" in capsys.readouterr().err
