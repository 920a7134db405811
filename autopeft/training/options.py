"""The model, data and training options that ``search``, ``train`` and ``fuse`` share (and the Python API).

Defined once as :class:`~autopeft.core.options.Option` records; :func:`data_options` turns their values
into :class:`DataOptions`, the record from which :func:`autopeft.training.pipeline.prepare` loads a model
and a dataset. Imports no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from autopeft.core.choices import PRECISION_CHOICES, QUANTIZATIONS, TASK_KINDS
from autopeft.core.errors import UserError
from autopeft.core.extras import require
from autopeft.core.options import Option, OptionGroup, OptionTable

DATA_OPTIONS = OptionTable.of(OptionGroup(None, (
    Option("model", "minilm", help="built-in alias (minilm, smollm2-135m), local folder or hub id"),
    Option("dataset", "rotten_tomatoes",
           help="built-in alias (rotten_tomatoes, bbc_news, newsgroups, trec, amazon_reviews, hamlet), "
                "csv/json/jsonl/parquet file, "
                "save_to_disk folder, or hub id (name or name:config)"),
    Option("task", None, choices=TASK_KINDS, help="default: detected"),
    Option("text_column"),
    Option("text_pair_column"),
    Option("label_column"),
    Option("max_length", 64, type=int, help="tokens per example (default 64)"),
    Option("split_seed", 0, type=int, help="seed of the train/validation/test split"),
    Option("trust_remote_code", False, switch=True, help="allow code from the model repository"),
    Option("quantize", "none", choices=QUANTIZATIONS,
           help="base projections in 4-bit NF4/FP4 or int8 (QLoRA; bitsandbytes), default none"),
)))


def train_options(steps: int | None, steps_help: str | None = None) -> OptionTable:
    """Training options, with ``steps`` as the default length (search: None, resolved from the data to the
    top rung; train: 300). ``steps_help``: the default as the help text states it."""
    return OptionTable.of(OptionGroup(None, (
        Option("steps", steps, type=int, help=f"training steps per trial (default {steps_help or steps})"),
        Option("batch_size", 16, type=int),
        Option("lr", 1e-3, type=float, help="learning rate when the space does not search it"),
        Option("head_lr_scale", 1.0, type=float,
               help="the task head's learning rate is lr x this, when the space does not search it (default 1)"),
        Option("precision", "auto", choices=PRECISION_CHOICES,
               help="auto = bf16 autocast with fp32 master weights where the hardware computes bf16 natively "
                    "(CUDA with bf16, CPUs with AVX512-BF16 or AMX), else fp32 (default); bf16 = always "
                    "(emulated, ~17x slower, on other CPUs); fp32 = full precision"),
    )))


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
    quantize: str = "none"  # base projections in nf4 / fp4 / int8 (QLoRA); see autopeft.peft.quantize

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise UserError(f"--max-length must be >= 2, got {self.max_length}")
        if self.quantize not in QUANTIZATIONS:
            raise UserError(f"--quantize {self.quantize!r} is not supported; choose one of "
                            f"{', '.join(QUANTIZATIONS)}")
        if self.quantize != "none":
            require("quant")

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def data_options(values: dict[str, Any]) -> DataOptions:
    """:class:`DataOptions` from option values (parsed arguments or keyword arguments)."""
    return DataOptions(**{o.name: values[o.name] for o in DATA_OPTIONS.options})
