"""Training and evaluating one plan on a base model that stays loaded across trials.

A :class:`Session` holds the base model and the tokenised splits.
``train_plan(session, plan, config)`` (:mod:`autopeft.training.trial_run`):
re-initialises the task head (seeded), injects the plan, trains ``config.steps`` optimizer steps of
AdamW with linear warm-up and decay, evaluates on validation, and returns a :class:`TrialOutcome`
holding the adapter weights; the plan is removed again before returning, so the base model is
unchanged for the next trial.

For multi-fidelity search the same run can be taken in pieces: ``start_run(session, plan, config)`` returns
a :class:`~autopeft.training.trial_run.TrialRun` that trains up to any step (``advance``), evaluates, saves a
checkpoint, and is resumed later with ``resume_run`` — bitwise the same as an uninterrupted run
(see ``autopeft/training/trial_run.py``). The learning-rate schedule is always that of ``config.steps``.

Batching: training batches are drawn from a seeded permutation (reshuffled each epoch) and padded to
the longest example of the batch (dynamic padding); the blocks then skip the padding (``unpad``,
:mod:`autopeft.peft.unpad`), so short texts do not pay for long ones. With ``bucket_by_length`` (off by
default) each run of :data:`BUCKET_BATCHES` batches of the permutation is sorted by length before it is
cut into batches, and those batches are shuffled (seeded), as HF's ``group_by_length``. It was the
default before padding-free blocks; it is off because length-correlated batches cost accuracy in short
trials (a prefix hybrid, 150 steps: -1.2 points over 3 seeds, `studies/trial-throughput/accuracy.json`)
while padding-free blocks recover most of its speed. Evaluation batches take examples sorted by length
(deterministic, little padding), so the same adapter always yields the same metric.

Precision: ``bf16`` runs forward and backward under ``torch.autocast(bfloat16)`` while the trainable
weights, their gradients and AdamW's state stay fp32 (mixed precision); the frozen projections are held
in bf16, cast once per session (``autopeft/peft/precision.py``; bitwise the same as autocast's per-call
casts). ``fp32`` runs everything in fp32.

Speed (see the README's "Speed" section): a plan that leaves layers 0..k-1 untouched reads the hidden
states entering layer k from a cache (``prefix_cache``; ``autopeft/training/fastpath/activation_cache.py``); on CPU,
training steps use the eager attention (``autopeft/training/fastpath/step_kernels.py``).

Metrics: classification -> accuracy (primary) and macro-F1; causal LM -> mean token loss (primary,
lower is better) and perplexity = exp(loss).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from autopeft.core.arch import ModelArch
from autopeft.core.choices import TaskKind
from autopeft.core.errors import UserError
from autopeft.peft.inject import head_parameters, inject
from autopeft.peft.plan import Plan
from autopeft.peft.precision import FrozenWeights
from autopeft.training.config import TrainConfig
from autopeft.training.data import TokenizedSplit
from autopeft.training.fastpath.activation_cache import (
    DEFAULT_MAX_BYTES,
    ActivationCache,
    ChunkLayout,
    FrozenPrefix,
    first_trained_layer,
)
from autopeft.training.fastpath.head_rows import head_rows_only
from autopeft.training.step import StepRecipe, step_recipe

BUCKET_BATCHES = 50  # batches per length-sorted bucket run (as HF's LengthGroupedSampler)


@dataclass
class Metrics:
    name: str  # primary metric
    greater_is_better: bool
    values: dict[str, float] = field(default_factory=dict)
    # classification: whether each example of the split (in split order) was predicted right; the
    # comparison with the best baseline pairs them example by example (autopeft.searching.uplift)
    correct: torch.Tensor | None = field(default=None, repr=False, compare=False)

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


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX tiles
    (torch's own CPU feature probes)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence looked up with a default
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


class Session:
    def __init__(self, model: nn.Module, arch: ModelArch, task: TaskKind, splits: dict[str, TokenizedSplit],
                 pad_token_id: int, activation_cache_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.model = model
        self.arch = arch
        self.task = task
        self.splits = splits
        self.pad_token_id = pad_token_id
        self.device = next(model.parameters()).device
        self.frozen = FrozenWeights(model, arch)  # bf16 copies of the frozen projections
        self.activations = ActivationCache(activation_cache_bytes)  # shared by all trials of the session
        self._layouts: dict[tuple[str, int], ChunkLayout] = {}
        for name, split in splits.items():
            if not split.input_ids:
                raise UserError(f"the {name} split is empty after tokenisation")

    def reset_head(self, seed: int) -> None:
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
            return self.evaluate(split, config, prefix_layer=first_trained_layer(plan, self.arch))

    @torch.no_grad()
    def evaluate(self, split: str, config: TrainConfig, prefix_layer: int = 0) -> Metrics:
        """Metrics on ``split``. With ``prefix_layer`` k > 0 (the plan leaves layers below k untouched) and
        the prefix cache on, the hidden states entering layer k come from the cache: bitwise the same."""
        data = self.splits[split]
        self.model.eval()
        order = sorted(range(len(data.input_ids)), key=lambda i: (len(data.input_ids[i]), i))
        batch_size = config.eval_batch_size
        prefix = FrozenPrefix(self, prefix_layer if config.prefix_cache != "off" else 0, store=None)
        predictions = torch.empty(len(order), dtype=torch.long)
        total_loss, total_tokens = 0.0, 0
        recipe = self.recipe(config)
        with self.frozen.cast(recipe.frozen_bf16_copies):
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                batch = self._collate(data, index)
                with self.autocast(recipe.autocast_bf16):
                    hidden = prefix.eval_hidden(split, batch_size, start, batch) if prefix.active else None
                    with (prefix.feeding(hidden),
                          head_rows_only(self.model, self.arch, batch["attention_mask"], self.task,
                                         enabled=recipe.head_rows)):
                        if self.task == "classification":
                            logits = self.model(input_ids=batch["input_ids"],
                                                attention_mask=batch["attention_mask"]).logits
                            predictions[torch.tensor(index)] = logits.float().argmax(-1).cpu()
                        else:
                            loss_sum, tokens = self._lm_loss(batch, reduction="sum")
                            total_loss += loss_sum.item()
                            total_tokens += tokens
        if self.task == "classification":
            return classification_metrics(predictions, torch.tensor(data.labels))
        loss = total_loss / max(1, total_tokens)
        return Metrics("loss", False, {"loss": loss, "perplexity": math.exp(min(loss, 50.0))})

    def chunk_layout(self, split: str, size: int) -> ChunkLayout:
        """The split cut into length-sorted chunks (the activation cache's canonical batches)."""
        key = (split, size)
        if key not in self._layouts:
            self._layouts[key] = ChunkLayout.of(self.splits[split], size)
        return self._layouts[key]

    def invalidate_caches(self) -> None:
        """Drop every cached activation and bf16 weight copy (after changing the base model's weights)."""
        self.activations.clear()
        self.frozen.clear()

    # --- batches and losses ---------------------------------------------------------------
    def train_batches(self, config: TrainConfig, skip: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Training batches of a seeded permutation, reshuffled each epoch; ``skip`` batches are passed over
        without being built, so a resumed run sees exactly the batches an uninterrupted one would."""
        data = self.splits["train"]
        generator = torch.Generator().manual_seed(config.seed)
        size = min(config.batch_size, len(data.input_ids))
        while True:
            permutation = torch.randperm(len(data.input_ids), generator=generator).tolist()
            batches = [permutation[s:s + size] for s in range(0, len(permutation) - size + 1, size)]
            if config.bucket_by_length:
                batches = _bucket_by_length(batches, data, generator)
            for index in batches:
                if skip:
                    skip -= 1
                    continue
                yield self._collate(data, index)

    def _collate(self, data: TokenizedSplit, index: list[int]) -> dict[str, torch.Tensor]:
        """A right-padded batch; ``index`` (CPU) names the examples (the activation cache's key)."""
        rows = [data.input_ids[i] for i in index]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if data.labels is not None:
            batch["labels"] = torch.tensor([data.labels[i] for i in index])
        if self.device.type == "cuda":  # page-locked host memory: the copy overlaps with compute
            batch = {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}
        else:
            batch = {k: v.to(self.device) for k, v in batch.items()}
        batch["index"] = torch.tensor(index)
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

    def recipe(self, config: TrainConfig) -> StepRecipe:
        """How a step of ``config`` runs on this session's device (:mod:`autopeft.training.step`)."""
        return step_recipe(config, self.device.type, native_bf16(self.device))

    def autocast(self, bf16: bool):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)


def _bucket_by_length(batches: list[list[int]], data: TokenizedSplit,
                      generator: torch.Generator) -> list[list[int]]:
    """Re-cut each run of BUCKET_BATCHES batches into batches of similar length, in a seeded order."""
    out: list[list[int]] = []
    for s in range(0, len(batches), BUCKET_BATCHES):
        run = batches[s:s + BUCKET_BATCHES]
        size = len(run[0])
        members = sorted((i for batch in run for i in batch), key=lambda i: len(data.input_ids[i]))
        cut = [members[j:j + size] for j in range(0, len(members), size)]
        out.extend(cut[j] for j in torch.randperm(len(cut), generator=generator).tolist())
    return out


def classification_metrics(predictions: torch.Tensor, labels: torch.Tensor) -> Metrics:
    correct = predictions == labels
    accuracy = correct.float().mean().item()
    f1s = []
    for c in labels.unique().tolist():
        tp = ((predictions == c) & (labels == c)).sum().item()
        fp = ((predictions == c) & (labels != c)).sum().item()
        fn = ((predictions != c) & (labels == c)).sum().item()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    # predicted_classes: how many classes the model predicted at all; 1 on a split with several classes
    # means the run collapsed to a constant prediction (see predicts_one_class)
    return Metrics("accuracy", True, {"accuracy": accuracy, "macro_f1": sum(f1s) / len(f1s),
                                      "predicted_classes": float(predictions.unique().numel())}, correct=correct)


def predicts_one_class(values: Mapping[str, float]) -> bool:
    """Whether classification metrics (``Metrics.values``, or their JSON) come from a model that predicted
    the same class for every example of a split it did not get all right: a run that collapsed (its
    accuracy is that class's share), not noise around its plan's level. False for other tasks and for
    metrics recorded before ``predicted_classes`` existed."""
    return values.get("predicted_classes") == 1 and values.get("accuracy", 1.0) < 1.0
