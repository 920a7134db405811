"""The on-disk token cache: a hit returns exactly what tokenising returns; content, tokenizer and
max length changes miss; damaged entries are recomputed."""

from __future__ import annotations

import datasets
import pytest
from tiny_assets import WORDS, tiny_tokenizer

from autopeft.training.data import tokenize_split
from autopeft.training.token_cache import cached_tokenize


class CountingTokenizer:
    """Delegates to a real tokenizer and counts the calls that tokenise."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _split(n=30, seed=0, label=True):
    texts = [" ".join(WORDS[(i * 7 + j + seed) % len(WORDS)] for j in range(3 + i % 11)) for i in range(n)]
    table = {"text": texts, **({"label": [i % 2 for i in range(n)]} if label else {})}
    return datasets.Dataset.from_dict(table)


def test_hit_equals_fresh_tokenisation_and_skips_the_tokenizer(tmp_path):
    tok = CountingTokenizer(tiny_tokenizer())
    split = _split()
    first, hit = cached_tokenize(split, "classification", tok, 8, root=tmp_path)
    assert not hit and tok.calls > 0
    calls = tok.calls
    second, hit = cached_tokenize(split, "classification", tok, 8, root=tmp_path)
    assert hit and tok.calls == calls
    fresh = tokenize_split(split, "classification", tiny_tokenizer(), 8)
    assert second == first == fresh and fresh.num_truncated > 0
    # the same content in another Dataset object (e.g. a copy of the file) is a hit too
    assert cached_tokenize(_split(), "classification", tok, 8, root=tmp_path)[1]


@pytest.mark.parametrize("change", ["content", "max_length", "tokenizer", "task"])
def test_changes_invalidate(tmp_path, change):
    tok = tiny_tokenizer()
    split = _split(label=change != "task")
    task = "causal-lm" if change == "task" else "classification"
    cached_tokenize(split, task, tok, 8, root=tmp_path)
    if change == "content":
        split = _split(seed=1)
    other = tiny_tokenizer()
    if change == "tokenizer":
        other.truncation_side = "left"
    if change == "task":
        task = "classification"
        split = _split()
    length = 9 if change == "max_length" else 8
    data, hit = cached_tokenize(split, task, other, length, root=tmp_path)
    assert not hit
    assert data == tokenize_split(split, task, other, length)
    assert len(list(tmp_path.iterdir())) == 2


def test_damaged_entry_is_recomputed(tmp_path):
    tok = tiny_tokenizer()
    split = _split()
    cached_tokenize(split, "classification", tok, 8, root=tmp_path)
    (entry,) = tmp_path.iterdir()
    entry.write_bytes(entry.read_bytes()[:50])
    data, hit = cached_tokenize(split, "classification", tok, 8, root=tmp_path)
    assert not hit and data == tokenize_split(split, "classification", tok, 8)
    assert cached_tokenize(split, "classification", tok, 8, root=tmp_path)[1]  # rewritten


def test_causal_lm_blocks_round_trip(tmp_path):
    tok = tiny_tokenizer()
    split = _split(label=False)
    data, _ = cached_tokenize(split, "causal-lm", tok, 6, root=tmp_path)
    again, hit = cached_tokenize(split, "causal-lm", tok, 6, root=tmp_path)
    assert hit and again == data and again.labels is None and len(again.input_ids) > 3
