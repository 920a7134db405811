"""From a model spec and a dataset spec to a ready :class:`~autopeft.train.Session`.

Shared by ``search``, ``train`` and ``eval`` so that all three build the model, the splits and the
tokenisation in exactly the same way (the same adapter must give the same metric everywhere).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from autopeft.data import TaskData, load_task_data
from autopeft.errors import UserError
from autopeft.models import LoadedModel, load_model
from autopeft.quantize import check_quantization
from autopeft.token_cache import cached_tokenize
from autopeft.train import Session

log = logging.getLogger("autopeft")


@dataclass(frozen=True)
class DataOptions:
    model: str = "minilm"
    dataset: str = "rotten_tomatoes"
    task: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    split_seed: int = 0
    max_length: int = 64
    trust_remote_code: bool = False
    quantize: str = "none"  # base projections in nf4 / fp4 / int8 (QLoRA); see autopeft.quantize

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise UserError(f"--max-length must be >= 2, got {self.max_length}")
        check_quantization(self.quantize)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prepared:
    options: DataOptions
    data: TaskData
    loaded: LoadedModel
    session: Session
    seconds: float
    #: the base model's record for adapters (autopeft.api.base_fingerprint), taken before any plan is applied
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
    from autopeft.api import base_fingerprint

    fingerprint = {**base_fingerprint(loaded.model), "name": options.model,
                   "base_params": loaded.base_params}  # counted before any quantization, as recorded
    return Prepared(options, data, loaded, session, time.perf_counter() - start, fingerprint)
