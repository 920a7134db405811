"""autopeft.space.shapes: a model's shapes and base count from config.json equal the meta-device build's."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from autopeft.core.arch import FAMILIES, arch_from_config
from autopeft.peft.adapters import count_base_params
from autopeft.space.shapes import ALIASES, DEFAULTS, NOT_FIELDS, config_file_shapes, config_folder
from autopeft.training.models import cache_dir, load_config, resolve_model

MODEL_TYPES = [t for family in FAMILIES for t in family.model_types]
ENCODER = dict(hidden_size=32, num_attention_heads=4, intermediate_size=48, num_hidden_layers=2, vocab_size=101,
               max_position_embeddings=40)
DECODER = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
               num_hidden_layers=2, vocab_size=101, max_position_embeddings=64)
GPT2 = dict(n_embd=32, n_head=4, n_layer=2, vocab_size=101, n_positions=40)
DISTILBERT = dict(dim=32, n_heads=4, hidden_dim=48, n_layers=2, vocab_size=101, max_position_embeddings=40)


def _variants():
    yield "bert", {**ENCODER, "type_vocab_size": 3}
    yield "roberta", {**ENCODER, "type_vocab_size": 1, "pad_token_id": 1}
    yield "xlm-roberta", {**ENCODER, "num_hidden_layers": 3}
    yield "distilbert", DISTILBERT
    yield "distilbert", {**DISTILBERT, "sinusoidal_pos_embds": True}
    for tie in (True, False):
        yield "gpt2", {**GPT2, "tie_word_embeddings": tie}
        yield "gpt2", {**GPT2, "n_inner": 50, "tie_word_embeddings": tie}
        for model_type in ("llama", "mistral", "qwen2", "qwen3"):
            yield model_type, {**DECODER, "tie_word_embeddings": tie}
            yield model_type, {**DECODER, "head_dim": 16, "tie_word_embeddings": tie}
        yield "llama", {**DECODER, "attention_bias": True, "mlp_bias": True}
        yield "qwen3", {**DECODER, "attention_bias": True}


def _meta_build(config) -> tuple:
    """What `autopeft space check` computed before: arch, and the count of a meta-device build."""
    arch = arch_from_config(config)
    cls = AutoModelForCausalLM if arch.family.is_causal else AutoModelForSequenceClassification
    with torch.device("meta"):
        model = cls.from_config(config)
    return arch, count_base_params(model)


def _folder(path, text: str) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(text)
    return str(path)


@pytest.mark.parametrize(("model_type", "fields"), list(_variants()))
@pytest.mark.parametrize("use_diff", [False, True], ids=["full", "diff"])
def test_shapes_and_count_equal_the_meta_build(model_type, fields, use_diff, tmp_path):
    config = AutoConfig.for_model(model_type, **fields)
    shapes = config_file_shapes(_folder(tmp_path, config.to_json_string(use_diff=use_diff)))
    assert shapes is not None
    assert shapes == _meta_build(config)


def test_the_builtin_model_needs_no_build():
    assert str(config_folder("minilm")) == resolve_model("minilm")
    shapes = config_file_shapes("minilm")
    assert shapes is not None and shapes == _meta_build(load_config("minilm"))


def test_the_converted_smollm2_is_found_where_training_puts_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path))
    folder = cache_dir() / "models" / "smollm2-135m"
    assert config_folder("smollm2-135m") is None  # not converted yet: transformers converts it
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    assert config_folder("smollm2-135m") == folder


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_defaults_aliases_and_absent_fields_are_the_config_classes(model_type):
    config = AutoConfig.for_model(model_type)
    assert {k: getattr(config, k) for k in DEFAULTS[model_type]} == DEFAULTS[model_type]
    assert [k for k in NOT_FIELDS.get(model_type, ()) if hasattr(config, k)] == []
    assert dict(config.attribute_map) == ALIASES.get(model_type, {})


BERT = {"model_type": "bert", **ENCODER, "type_vocab_size": 2}


@pytest.mark.parametrize("data", [
    {**BERT, "auto_map": {"AutoConfig": "x.Config"}}, {**BERT, "quantization_config": {"quant_method": "bnb"}},
    {**BERT, "add_cross_attention": True}, {**BERT, "model_type": "t5"}, {**BERT, "hidden_size": None},
    {"model_type": "gpt2", **GPT2, "hidden_size": 32},
], ids=["remote-code", "quantized", "cross-attention", "unsupported", "bad-value", "alias-name"])
def test_what_the_file_cannot_say_exactly_is_left_to_transformers(data, tmp_path):
    assert config_file_shapes(_folder(tmp_path / "plain", json.dumps(BERT))) is not None
    assert config_file_shapes(_folder(tmp_path, json.dumps(data))) is None


def test_a_missing_field_is_left_to_transformers(tmp_path):
    data = {"model_type": "llama", **DECODER, "tie_word_embeddings": False}
    del data["num_key_value_heads"]  # its default depends on the class: not guessed
    assert config_file_shapes(_folder(tmp_path, json.dumps(data))) is None
    assert config_file_shapes("HuggingFaceTB/SmolLM2-135M") is None  # a hub id
    assert config_file_shapes(_folder(tmp_path, "{not json")) is None
