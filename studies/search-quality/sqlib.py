"""Shared pieces of the search-quality study: datasets, the reference recipes, one training loop for all.

Every recipe below trains through autopeft's own trainer (``train_plan``: same batches, same AdamW, same
6% warm-up + linear decay, bf16 autocast, batch 16), except full fine-tuning, which autopeft does not
offer as a plan: :func:`full_finetune` runs the same batches, optimizer, schedule, clipping and autocast
over every parameter of the model (the trainer's frozen-weight caches are switched off for it).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
import transformers

from autopeft.peft.plan import Plan, PlanEntry
from autopeft.training.config import TrainConfig, steps_for_epochs
from autopeft.training.options import DataOptions
from autopeft.training.pipeline import Prepared, prepare
from autopeft.training.session import Session
from autopeft.training.trial_run import lr_factor, step_seed, train_plan

HERE = Path(__file__).resolve().parent
#: max length per dataset: newsgroups posts are long (subject line first), the others are short texts
MAX_LENGTH = {"newsgroups": 128}
LAYERS = tuple(range(6))  # MiniLM-L6

LORA_R8_QV = Plan((PlanEntry("lora", LAYERS, ("q", "v"), {"r": 8, "alpha": 16}),))
# size 8: the largest power of two under the study's 0.5% budget (size 16 on o,down is 0.66%), as the
# in-search parallel-adapter baseline is scaled (autopeft.searching.baselines)
PARALLEL_ADAPTER = Plan((PlanEntry("parallel_adapter", LAYERS, ("o", "down"), {"size": 8}),))
HEAD_ONLY = Plan(())


def machine() -> dict:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               "unknown")
    return {"platform": platform.platform(), "processor": cpu, "cores": os.cpu_count(),
            "avx512_bf16": "avx512_bf16" in cpuinfo, "amx": "amx_bf16" in cpuinfo,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "commit": git_commit()}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_options(dataset: str) -> DataOptions:
    return DataOptions(dataset=dataset, max_length=MAX_LENGTH.get(dataset, 64))


def load(dataset: str) -> Prepared:
    return prepare(data_options(dataset))


def epoch_steps(prepared: Prepared, epochs: float, batch_size: int = 16) -> int:
    return steps_for_epochs(epochs, len(prepared.session.splits["train"].input_ids), batch_size)


@dataclass
class Result:
    recipe: str
    lr: float
    seed: int
    steps: int
    validation: float
    test: float
    params: int
    seconds: float

    def record(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def train_recipe(prepared: Prepared, name: str, plan: Plan, steps: int, lr: float, seed: int) -> Result:
    """Train ``plan`` with autopeft's trainer; validation and test accuracy of the trained adapter."""
    start = time.perf_counter()
    config = TrainConfig(steps=steps, lr=lr, seed=seed)
    outcome = train_plan(prepared.session, plan, config)
    test = prepared.session.evaluate_adapter(plan, outcome.state, "test", config)
    return Result(name, lr, seed, steps, outcome.validation.value, test.value, outcome.adapter_params,
                  time.perf_counter() - start)


def full_finetune(prepared: Prepared, steps: int, lr: float, seed: int) -> Result:
    """Every parameter trained: the same batches, AdamW, schedule, clipping and bf16 autocast as a plan."""
    session = prepared.session
    model = session.model
    saved = copy.deepcopy(model.state_dict())
    config = TrainConfig(steps=steps, lr=lr, seed=seed, prefix_cache="off", unpad=False, head_rows=False)
    start = time.perf_counter()
    torch.manual_seed(seed)
    session.reset_head(seed)
    session.invalidate_caches()
    params = list(model.parameters())
    was_trainable = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    batches = session.train_batches(config)
    model.train()
    try:
        for step in range(steps):
            torch.manual_seed(step_seed(seed, step))
            batch = next(batches)
            with session.autocast(True):
                loss = session.loss(batch)
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"full fine-tuning diverged at step {step} (lr {lr})")
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_factor(step, steps, config.warmup_ratio)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        session.invalidate_caches()
        validation = session.evaluate("validation", config).value
        test = session.evaluate("test", config).value
    finally:
        model.eval()
        for p, trainable in zip(params, was_trainable, strict=True):
            p.requires_grad_(trainable)
        model.load_state_dict(saved)
        session.invalidate_caches()
    return Result("full fine-tuning", lr, seed, steps, validation, test, sum(p.numel() for p in params),
                  time.perf_counter() - start)


def quiet_logs() -> None:
    """No transformers warnings or datasets progress bars in a study's log."""
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def bits(correct: torch.Tensor) -> str:
    """Per-example correctness as a string of 0/1 (what the jsonl records keep)."""
    return "".join("1" if c else "0" for c in correct.tolist())


def train_with_predictions(session: Session, plan: Plan, config: TrainConfig) -> dict:
    """Train ``plan`` with autopeft's trainer; validation and test accuracy with every example's outcome."""
    start = time.perf_counter()
    outcome = train_plan(session, plan, config)
    test = session.evaluate_adapter(plan, outcome.state, "test", config)
    assert outcome.validation.correct is not None and test.correct is not None
    return {"params": outcome.adapter_params, "validation": outcome.validation.value, "test": test.value,
            "validation_correct": bits(outcome.validation.correct), "test_correct": bits(test.correct),
            "seconds": round(time.perf_counter() - start, 1)}


def chosen_lr(records: list[dict], recipe: str, first_seed: int) -> float:
    """The recipe's learning rate picked on validation from its grid run with ``first_seed`` (ties: the
    smaller rate)."""
    first = [r for r in records if r["recipe"] == recipe and r["seed"] == first_seed]
    return max(first, key=lambda r: (r["validation"], -r["lr"]))["lr"]


def best_validation_lr(runs_by_lr: Mapping[float, list[dict]]) -> float | None:
    """Among the learning rates that have runs (lr -> runs, in grid order), the one with the highest mean
    validation accuracy (ties: the first); None when there is none."""
    return max((lr for lr, runs in runs_by_lr.items() if runs), default=None,
               key=lambda lr: statistics.fmean(r["validation"] for r in runs_by_lr[lr]))


def append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
