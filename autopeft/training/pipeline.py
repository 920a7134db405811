"""From a model spec and a dataset spec to a ready :class:`~autopeft.training.session.Session`.

Shared by ``search``, ``train`` and ``eval`` so that all three build the model, the splits and the
tokenisation in exactly the same way (the same adapter must give the same metric everywhere).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from autopeft.training.data import TaskData, load_task_data
from autopeft.training.models import LoadedModel, load_model
from autopeft.training.options import DataOptions
from autopeft.training.session import Session
from autopeft.training.token_cache import cached_tokenize

log = logging.getLogger("autopeft")


@dataclass
class Prepared:
    options: DataOptions
    data: TaskData
    loaded: LoadedModel
    session: Session
    seconds: float
    #: the base model's record for adapters (autopeft.peft.adapters.base_fingerprint), taken before any plan is applied
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.data.label_names)


def prepare(options: DataOptions, splits: tuple[str, ...] = ("train", "validation", "test")) -> Prepared:
    start = time.perf_counter()
    data = load_task_data(
        options.dataset, task=options.task, text_column=options.text_column,  # type: ignore[arg-type]
        text_pair_column=options.text_pair_column, label_column=options.label_column, seed=options.split_seed,
    )
    log.info("dataset %s: task %s, splits %s", options.dataset, data.task, data.split_sizes)
    loaded = load_model(options.model, data.task, num_labels=max(2, len(data.label_names)),
                        trust_remote_code=options.trust_remote_code, quantize=options.quantize)
    if torch.cuda.is_available():
        loaded.model.to("cuda")
    tokenized = {}
    for name in splits:
        tokenized[name], _ = cached_tokenize(data.splits[name], data.task, loaded.tokenizer, options.max_length)
        if tokenized[name].num_truncated:
            log.warning("%s: %d of %d texts truncated to %d tokens (--max-length)", name,
                        tokenized[name].num_truncated, len(tokenized[name].input_ids), options.max_length)
    session = Session(loaded.model, loaded.arch, data.task, tokenized,  # type: ignore[arg-type]
                      pad_token_id=loaded.tokenizer.pad_token_id)
    from autopeft.peft.adapters import base_fingerprint

    fingerprint = {**base_fingerprint(loaded.model), "name": options.model,
                   "base_params": loaded.base_params}  # counted before any quantization, as recorded
    return Prepared(options, data, loaded, session, time.perf_counter() - start, fingerprint)
