"""How one plan is trained: :class:`TrainConfig`, a frozen record (imports no torch).

Every run's learning-rate schedule is defined by ``steps`` (see :mod:`autopeft.training.trial_run`); the
speed switches (``prefix_cache``, ``unpad``, ``head_rows``, ``compile``) change no result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autopeft.core.choices import PRECISION_CHOICES, PREFIX_CACHES, PrecisionChoice, PrefixCache
from autopeft.core.errors import UserError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-3
    # the task head's learning rate is lr x head_lr_scale: a classifier starts from a random head, which the
    # head-only recipe trains best at ~10x an adapter's lr (studies/search-quality/lr_structure.py)
    head_lr_scale: float = 1.0
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    precision: PrecisionChoice = "auto"  # see autopeft.core.choices
    eval_batch_size: int = 64
    seed: int = 0
    bucket_by_length: bool = False  # training batches of similar lengths (see the module docstring)
    prefix_cache: PrefixCache = "bf16"  # cache of the hidden states below the plan's first layer
    compile: bool = False  # torch.compile the model for the run (measured: does not pay for short trials)
    unpad: bool = True  # training blocks skip padding tokens where autopeft's attention runs (autopeft/peft/unpad.py)
    head_rows: bool = True  # a token-0 classifier's last block runs only token 0 after attention (autopeft/training/fastpath/head_rows.py)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise UserError("steps, batch size and eval batch size must be >= 1")
        if not self.lr > 0:
            raise UserError(f"learning rate must be > 0, got {self.lr}")
        if not self.head_lr_scale > 0:
            raise UserError(f"head_lr_scale must be > 0 (the head's lr = lr x head_lr_scale), "
                            f"got {self.head_lr_scale}")
        if self.precision not in PRECISION_CHOICES:
            raise UserError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        if self.prefix_cache not in PREFIX_CACHES:
            raise UserError(f"prefix_cache must be off, bf16 or fp32, got {self.prefix_cache!r}")

    @property
    def cache_dtype(self) -> torch.dtype | None:
        """Storage dtype of the training activation cache; None when it is off."""
        import torch  # here, not at the top: a config is built by commands that must start without torch

        return {"off": None, "bf16": torch.bfloat16, "fp32": torch.float32}[self.prefix_cache]


def steps_for_epochs(epochs: float, train_examples: int, batch_size: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``train_examples`` at ``batch_size`` (rounded up)."""
    return max(1, math.ceil(epochs * train_examples / batch_size))
