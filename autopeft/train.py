"""Training and evaluating one plan on a base model that stays loaded across trials.

A :class:`Session` holds the base model and the tokenised splits. ``session.run(plan, config)``:
re-initialises the task head (seeded), injects the plan, trains ``config.steps`` optimizer steps of
AdamW with linear warm-up and decay, evaluates on validation, and returns a :class:`TrialOutcome`
holding the adapter weights; the plan is removed again before returning, so the base model is
unchanged for the next trial.

For multi-fidelity search the same run can be taken in pieces: ``session.start(plan, config)`` returns
a :class:`~autopeft.trial_run.TrialRun` that trains up to any step (``advance``), evaluates, saves a
checkpoint, and is resumed later with ``session.resume`` — bitwise the same as an uninterrupted run
(see ``autopeft/trial_run.py``). The learning-rate schedule is always that of ``config.steps``.

Batching: training batches are drawn from a seeded permutation (reshuffled each epoch) and padded to
the longest example of the batch; evaluation batches take examples sorted by length (deterministic,
little padding), so the same adapter always yields the same metric.

Precision: ``bf16`` runs forward and backward under ``torch.autocast(bfloat16)`` while the trainable
weights, their gradients and AdamW's state stay fp32 (mixed precision); ``fp32`` runs everything in fp32.

Metrics: classification -> accuracy (primary) and macro-F1; causal LM -> mean token loss (primary,
lower is better) and perplexity = exp(loss).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from autopeft.arch import ModelArch
from autopeft.data import TokenizedSplit
from autopeft.errors import UserError
from autopeft.inject import head_parameters, inject
from autopeft.plan import Plan

if TYPE_CHECKING:
    from autopeft.trial_run import Checkpoint, TrialRun

Precision = Literal["fp32", "bf16"]
Task = Literal["classification", "causal-lm"]


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    precision: Precision = "bf16"
    eval_batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise UserError("steps, batch size and eval batch size must be >= 1")
        if not self.lr > 0:
            raise UserError(f"learning rate must be > 0, got {self.lr}")


@dataclass
class Metrics:
    name: str  # primary metric
    greater_is_better: bool
    values: dict[str, float] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return self.values[self.name]


@dataclass
class TrialOutcome:
    plan: Plan
    config: TrainConfig
    validation: Metrics
    train_loss: float
    adapter_params: int
    head_params: int
    duration_s: float
    step_time_s: float
    state: dict[str, torch.Tensor]

    def record(self) -> dict:
        return {"validation": self.validation.values, "train_loss": self.train_loss,
                "adapter_params": self.adapter_params, "head_params": self.head_params,
                "duration_s": round(self.duration_s, 3), "step_time_s": round(self.step_time_s, 5),
                "train_config": asdict(self.config)}


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


class Session:
    def __init__(self, model: nn.Module, arch: ModelArch, task: Task, splits: dict[str, TokenizedSplit],
                 pad_token_id: int) -> None:
        self.model = model
        self.arch = arch
        self.task = task
        self.splits = splits
        self.pad_token_id = pad_token_id
        self.device = next(model.parameters()).device
        for name, split in splits.items():
            if not split.input_ids:
                raise UserError(f"the {name} split is empty after tokenisation")

    # --- one trial ---------------------------------------------------------------------------
    def start(self, plan: Plan, config: TrainConfig) -> TrialRun:
        """Inject ``plan`` (with a freshly seeded head) and return its run at step 0; ``close()`` removes it."""
        from autopeft.trial_run import TrialRun

        torch.manual_seed(config.seed)
        self._reset_head(config.seed)
        handle = inject(self.model, plan, self.arch, train_head=self.task == "classification")
        return TrialRun(self, handle, config)

    def resume(self, plan: Plan, config: TrainConfig, checkpoint: Checkpoint) -> TrialRun:
        """A run restored from ``checkpoint`` (adapter, head, optimizer state, step)."""
        run = self.start(plan, config)
        try:
            run.restore(checkpoint)
        except BaseException:
            run.close()
            raise
        return run

    def run(self, plan: Plan, config: TrainConfig,
            progress: Callable[[int, float], None] | None = None) -> TrialOutcome:
        """Train ``plan`` for ``config.steps`` steps, evaluate on validation, remove it again."""
        with self.start(plan, config) as run:
            run.advance(config.steps, progress)
            return run.outcome(run.evaluate("validation"))

    def _reset_head(self, seed: int) -> None:
        if self.task != "classification":
            return
        generator = torch.Generator().manual_seed(seed)
        std = getattr(self.model.config, "initializer_range", 0.02)
        with torch.no_grad():
            for name, p in sorted(head_parameters(self.model).items()):
                if name.endswith("bias"):
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=generator) * std)

    # --- evaluation -----------------------------------------------------------------------
    @property
    def primary_metric(self) -> str:
        return "accuracy" if self.task == "classification" else "loss"

    def evaluate_adapter(self, plan: Plan, state: dict[str, torch.Tensor], split: str,
                         config: TrainConfig) -> Metrics:
        """Metrics of a saved adapter (plan + weights, head included) on ``split``."""
        with inject(self.model, plan, self.arch, train_head=self.task == "classification") as handle:
            handle.load_state_dict({k: v.to(self.device) for k, v in state.items()})
            return self.evaluate(split, config)

    @torch.no_grad()
    def evaluate(self, split: str, config: TrainConfig) -> Metrics:
        data = self.splits[split]
        self.model.eval()
        order = sorted(range(len(data.input_ids)), key=lambda i: (len(data.input_ids[i]), i))
        batch_size = config.eval_batch_size
        if self.task == "classification":
            predictions = torch.empty(len(order), dtype=torch.long)
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                batch = self._collate(data, index)
                with self.autocast(config.precision):
                    logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                predictions[torch.tensor(index)] = logits.float().argmax(-1).cpu()
            labels = torch.tensor(data.labels)
            return classification_metrics(predictions, labels)
        total_loss, total_tokens = 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = self._collate(data, order[start:start + batch_size])
            with self.autocast(config.precision):
                loss_sum, tokens = self._lm_loss(batch, reduction="sum")
            total_loss += loss_sum.item()
            total_tokens += tokens
        loss = total_loss / max(1, total_tokens)
        return Metrics("loss", False, {"loss": loss, "perplexity": math.exp(min(loss, 50.0))})

    # --- batches and losses ---------------------------------------------------------------
    def train_batches(self, config: TrainConfig, skip: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Training batches of a seeded permutation, reshuffled each epoch; ``skip`` batches are passed over
        without being built, so a resumed run sees exactly the batches an uninterrupted one would."""
        data = self.splits["train"]
        generator = torch.Generator().manual_seed(config.seed)
        size = min(config.batch_size, len(data.input_ids))
        while True:
            permutation = torch.randperm(len(data.input_ids), generator=generator).tolist()
            for start in range(0, len(permutation) - size + 1, size):
                if skip:
                    skip -= 1
                    continue
                yield self._collate(data, permutation[start:start + size])

    def _collate(self, data: TokenizedSplit, index: list[int]) -> dict[str, torch.Tensor]:
        rows = [data.input_ids[i] for i in index]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        batch = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if data.labels is not None:
            batch["labels"] = torch.tensor([data.labels[i] for i in index], device=self.device)
        return batch

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.task == "classification":
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return F.cross_entropy(logits.float(), batch["labels"])
        loss, _ = self._lm_loss(batch, reduction="mean")
        return loss

    def _lm_loss(self, batch: dict[str, torch.Tensor], reduction: str) -> tuple[torch.Tensor, int]:
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
        logits = logits[:, :-1].float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=-100, reduction=reduction)
        return loss, int((targets != -100).sum())

    def autocast(self, precision: Precision):
        enabled = precision == "bf16" and bf16_supported(self.device)
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)


def classification_metrics(predictions: torch.Tensor, labels: torch.Tensor) -> Metrics:
    accuracy = (predictions == labels).float().mean().item()
    f1s = []
    for c in labels.unique().tolist():
        tp = ((predictions == c) & (labels == c)).sum().item()
        fp = ((predictions == c) & (labels != c)).sum().item()
        fn = ((predictions != c) & (labels == c)).sum().item()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return Metrics("accuracy", True, {"accuracy": accuracy, "macro_f1": sum(f1s) / len(f1s)})
