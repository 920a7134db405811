"""Tokenise once per (dataset content, tokenizer, max length): an on-disk cache of token ids.

A search, a later ``autopeft train`` of its pick and ``autopeft eval`` all tokenise the same splits the
same way; the second time the ids are read back instead (rotten_tomatoes with MiniLM's tokenizer:
~1 s of tokenisation becomes a ~50 ms read).

The key is a SHA-256 over everything the ids depend on:

- the split's content: its ``text``, ``text_pair`` and ``label`` columns (values, not file names or
  dates, so an edited data file is a new key and a copy of the same file is a hit);
- the tokenizer: its full serialisation (``backend_tokenizer.to_str()`` for fast tokenizers: vocabulary,
  normaliser, pre-tokeniser, post-processor with the special tokens; without the call-time truncation
  and padding settings each call writes into it), class, truncation side and
  special-token ids — or its vocabulary and special tokens for a slow tokenizer;
- the task, ``max_length`` and the source of :func:`autopeft.training.data.tokenize_split` (a change to the
  tokenisation code invalidates every entry).

Entries are safetensors files under ``<cache_dir()>/tokens/`` (no pickle): flat int32 ids, int64
offsets, int64 labels, and the truncation count as metadata. Writes are atomic (temporary file +
rename). A damaged entry is ignored, recomputed and rewritten.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from autopeft.training.data import TokenizedSplit, tokenize_split

log = logging.getLogger("autopeft")
FORMAT = 1


def token_cache_dir() -> Path:
    from autopeft.training.models import cache_dir

    return cache_dir() / "tokens"


def _content_hash(split: Any) -> str:
    digest = hashlib.sha256()
    for column in ("text", "text_pair", "label"):
        if column in split.column_names:
            digest.update(column.encode())
            digest.update(json.dumps(list(split[column]), ensure_ascii=False).encode())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # truncation/padding are call-time settings that each call writes into the backend: not identity
        state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        body = json.dumps(state, sort_keys=True)
    else:
        body = json.dumps(sorted(tokenizer.get_vocab().items()))
    special = {name: getattr(tokenizer, name, None) for name in
               ("bos_token_id", "eos_token_id", "pad_token_id", "cls_token_id", "sep_token_id", "unk_token_id")}
    extra = json.dumps({"class": type(tokenizer).__name__, "truncation_side": getattr(tokenizer, "truncation_side", None),
                        "special": special, "added": str(getattr(tokenizer, "added_tokens_decoder", ""))},
                       sort_keys=True, default=str)
    return hashlib.sha256((body + extra).encode()).hexdigest()


def cache_key(split: Any, task: str, tokenizer: Any, max_length: int) -> str:
    parts = [str(FORMAT), task, str(max_length), _content_hash(split), tokenizer_fingerprint(tokenizer),
             hashlib.sha256(inspect.getsource(tokenize_split).encode()).hexdigest()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]


def _read(path: Path) -> TokenizedSplit:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        ids, offsets = f.get_tensor("ids"), f.get_tensor("offsets")
        names = list(f.keys())  # safe_open has no __contains__
        labels = f.get_tensor("labels").tolist() if "labels" in names else None
    if int(meta.get("format", -1)) != FORMAT or offsets.ndim != 1 or int(offsets[-1]) != ids.numel():
        raise ValueError("inconsistent entry")
    flat, cuts = ids.tolist(), offsets.tolist()
    rows = [flat[cuts[i]:cuts[i + 1]] for i in range(len(cuts) - 1)]
    if labels is not None and len(labels) != len(rows):
        raise ValueError("labels do not match the rows")
    return TokenizedSplit(rows, labels, int(meta["num_truncated"]))


def _write(path: Path, data: TokenizedSplit) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = torch.tensor([0] + [len(r) for r in data.input_ids], dtype=torch.int64)
    tensors = {"ids": torch.tensor([t for r in data.input_ids for t in r], dtype=torch.int32),
               "offsets": torch.cumsum(lengths, 0)}
    if data.labels is not None:
        tensors["labels"] = torch.tensor(data.labels, dtype=torch.int64)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"format": str(FORMAT), "num_truncated": str(data.num_truncated)})
    os.replace(tmp, path)


def cached_tokenize(split: Any, task: str, tokenizer: Any, max_length: int,
                    root: Path | None = None) -> tuple[TokenizedSplit, bool]:
    """:func:`tokenize_split` through the on-disk cache; returns ``(tokens, hit)``."""
    path = (root or token_cache_dir()) / f"{cache_key(split, task, tokenizer, max_length)}.safetensors"
    if path.is_file():
        try:
            return _read(path), True
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is recomputed, never fatal
            log.warning("token cache entry %s is damaged (%s); tokenising again", path, exc)
    data = tokenize_split(split, task, tokenizer, max_length)  # type: ignore[arg-type]
    try:
        _write(path, data)
    except OSError as exc:  # a read-only or full cache directory only costs speed
        log.warning("cannot write the token cache %s (%s)", path, exc)
    return data, False
