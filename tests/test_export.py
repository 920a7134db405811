"""`autopeft export`: peft-format adapters load with PeftModel.from_pretrained and give autopeft's logits;
plans peft cannot represent are refused with the reason; the autopeft format round-trips; model cards."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from tiny_assets import randomize, tiny_model_dir

from autopeft.cli.main import main
from autopeft.peft.artifacts import save_adapter
from autopeft.peft.inject import inject
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.testing import tiny_batch
from autopeft.training.models import load_model

LABELS = ["neg", "pos"]


def _entries(*entries):
    return Plan(tuple(PlanEntry(m, tuple(layers), tuple(sites), dict(options)) for m, layers, sites, options in entries))


CASES = {
    # mixed ranks and alphas -> rank_pattern / alpha_pattern, and exact module names (not a full block)
    "lora-mixed": _entries(("lora", (0, 1, 2), ("q", "v"), {"r": 4, "alpha": 8}), ("lora", (1,), ("down",), {"r": 2})),
    # a full layers x sites block on some layers -> target_modules + layers_to_transform
    "lora-block": _entries(("lora", (0, 2), ("q", "v"), {"r": 4, "alpha": 8})),
    "rslora": _entries(("lora", (0, 1, 2), ("k", "o"), {"r": 4, "rslora": True})),
    "dora": _entries(("dora", (0, 1, 2), ("q", "v"), {"r": 2})),
    "ia3": _entries(("ia3", (0, 1, 2), ("k", "v", "down"), {})),
    "vera": _entries(("vera", (0, 1, 2), ("q", "v"), {"r": 8})),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {family: tiny_model_dir(root / family, family) for family in ("bert", "llama")}


def _adapter(tmp_path, model_dir, plan: Plan, name: str):
    family = "llama" if model_dir.name == "llama" else "bert"
    loaded = load_model(str(model_dir), "classification", num_labels=2)
    with inject(loaded.model, plan) as handle:
        randomize(handle)
        state = handle.state_dict()
    adapter = tmp_path / name
    save_adapter(adapter, plan, state, {"base_model": "tiny", "base_model_source": str(model_dir), "family": family,
                                        "task": "classification", "label_names": LABELS, "data": {"dataset": "x.csv"},
                                        "train": {"steps": 5}},
                 metrics={"validation": {"accuracy": 0.5}, "adapter_params": plan.num_params(loaded.arch)})
    return model_dir, adapter, state


def _autopeft_logits(model_dir, plan, state, batch):
    model = load_model(str(model_dir), "classification", num_labels=2).model
    with inject(model, plan) as handle, torch.no_grad():
        handle.load_state_dict(state)
        return model(**batch).logits


@pytest.mark.parametrize(("family", "case"), [("bert", c) for c in CASES] + [("llama", "lora-mixed"), ("llama", "ia3")])
def test_peft_export_loads_with_identical_logits(tmp_path, capsys, models, family, case):
    plan = CASES[case]
    model_dir, adapter, state = _adapter(tmp_path, models[family], plan, case)
    out = tmp_path / "peft"
    assert main(["export", str(adapter), "--format", "peft", "--out", str(out)]) == 0
    assert "wrote peft" in capsys.readouterr().out
    batch = tiny_batch()
    expected = _autopeft_logits(model_dir, plan, state, batch)
    base = load_model(str(model_dir), "classification", num_labels=2).model
    peft_model = PeftModel.from_pretrained(base, str(out))
    peft_model.eval()
    with torch.no_grad():
        got = peft_model(**batch).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    config = json.loads((out / "adapter_config.json").read_text())
    if case == "lora-mixed":
        assert set(config["rank_pattern"].values()) == {2} and len(config["rank_pattern"]) == 1
    if case == "lora-block":
        assert config["layers_to_transform"] == [0, 2]
    card = (out / "README.md").read_text()
    assert "PeftModel.from_pretrained" in card and str(model_dir) in card and "x.csv" in card


@pytest.mark.parametrize("case", ["prompt", "lora"])
def test_causal_lm_export_gives_the_same_logits_at_the_real_tokens(tmp_path, case):
    plan = {"prompt": _entries(("prompt", (0,), ("input",), {"length": 4})),
            "lora": _entries(("lora", (0, 1), ("q", "v", "down"), {"r": 4}))}[case]
    model_dir = tiny_model_dir(tmp_path / "lm", "llama", task="causal-lm")
    model = load_model(str(model_dir), "causal-lm").model
    batch = tiny_batch()
    with inject(model, plan, train_head=False) as handle, torch.no_grad():
        randomize(handle)
        state = handle.state_dict()
        expected = model(**batch).logits
    adapter = tmp_path / "a"
    save_adapter(adapter, plan, state, {"base_model": "tiny-lm", "base_model_source": str(model_dir),
                                        "task": "causal-lm", "label_names": []})
    assert main(["export", str(adapter), "--format", "peft", "--out", str(tmp_path / "peft")]) == 0
    peft_model = PeftModel.from_pretrained(load_model(str(model_dir), "causal-lm").model, str(tmp_path / "peft"))
    with torch.no_grad():
        got = peft_model.eval()(**batch).logits
    # peft also returns logits at the soft prompt's positions, before the real tokens
    torch.testing.assert_close(got[:, -expected.shape[1]:], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("plan", "message"), [
    (_entries(("lora", (0,), ("q",), {}), ("adapter", (1,), ("down",), {"size": 4})), "mixes adapter, lora"),
    (_entries(("adapter", (0, 1), ("o",), {"size": 4})), "no bottleneck adapters"),
    (_entries(("prefix", (0, 1, 2), ("attn",), {"length": 3})), "positions"),
    (_entries(("prefix", (0,), ("attn",), {"length": 3}), ("prefix", (1,), ("attn",), {"length": 5})),
     "positions"),
    (_entries(("prompt", (0,), ("input",), {"length": 3})), "soft prompt's positions"),
    (_entries(("vera", (0,), ("q", "up"), {"r": 4})), "different shapes"),
    (_entries(), "head only"),
    (_entries(("lora", (0,), ("q",), {"gated": True})), "gated"),
])
def test_unrepresentable_plans_are_refused_with_the_reason(tmp_path, capsys, models, plan, message):
    _, adapter, _ = _adapter(tmp_path, models["bert"], plan, "a")
    out = tmp_path / "peft"
    assert main(["export", str(adapter), "--format", "peft", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: peft cannot represent this plan") and message in err[0], err
    assert "--format autopeft" in err[0]
    assert not out.exists()


def test_autopeft_format_round_trips_and_carries_a_card(tmp_path, capsys, models):
    import autopeft

    plan = _entries(("lora", (0, 1), ("q",), {"r": 2}), ("adapter", (2,), ("down",), {"size": 4}))
    model_dir, adapter, state = _adapter(tmp_path, models["bert"], plan, "a")
    out = tmp_path / "exported"
    assert main(["export", str(adapter), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"plan.json", "adapter.safetensors", "autopeft_config.json", "README.md"}
    card = (out / "README.md").read_text()
    assert "autopeft.load_adapter" in card and "validation: accuracy 0.5000" in card
    batch = tiny_batch()
    model = load_model(str(model_dir), "classification", num_labels=2).model
    with autopeft.load_adapter(model, out), torch.no_grad():
        got = model(**batch).logits
    torch.testing.assert_close(got, _autopeft_logits(model_dir, plan, state, batch), rtol=0, atol=0)
    # an existing, non-empty --out is refused
    assert main(["export", str(adapter), "--out", str(out)]) == 2
    assert "not an empty directory" in capsys.readouterr().err


def test_export_sources(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "neither a study directory" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--trial", "3", "--out", str(tmp_path / "o")]) == 2
    assert "--trial needs a study directory" in capsys.readouterr().err


@pytest.mark.slow
def test_minilm_lora_export_matches_in_peft(tmp_path):
    """The real model: LoRA with mixed ranks on MiniLM, exported and loaded by peft, same logits."""
    plan = _entries(("lora", (0, 1, 2, 3, 4, 5), ("q", "v"), {"r": 8}), ("lora", (4, 5), ("down",), {"r": 4}))
    loaded = load_model("minilm", "classification", num_labels=2)
    with inject(loaded.model, plan) as handle:
        randomize(handle)
        state = handle.state_dict()
    adapter = tmp_path / "a"
    save_adapter(adapter, plan, state, {"base_model": "minilm", "base_model_source": loaded.source, "family": "bert",
                                        "task": "classification", "label_names": LABELS})
    out = tmp_path / "peft"
    assert main(["export", str(adapter), "--format", "peft", "--out", str(out)]) == 0
    batch = loaded.tokenizer(["a gripping, beautifully acted film", "dull", "not bad at all"], padding=True,
                             return_tensors="pt")
    batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with inject(loaded.model, plan) as handle, torch.no_grad():
        handle.load_state_dict(state)
        expected = loaded.model(**batch).logits
    base = load_model("minilm", "classification", num_labels=2).model
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**batch).logits, expected, rtol=0, atol=1e-5)
