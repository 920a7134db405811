"""Choices shared across the package, each defined once (a ``Literal`` for typing, a tuple for checks).

Choices that belong to one part only live there (the sampler and pick names in
:mod:`autopeft.searching.settings`, a method's own options in its config).
"""

from __future__ import annotations

from enum import Enum
from typing import Literal, get_args

TaskKind = Literal["classification", "causal-lm"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)

#: bf16 = bf16 autocast with fp32 master weights; fp32 = everything in fp32
Precision = Literal["bf16", "fp32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: what a user asks for: auto = bf16 where the hardware computes it natively (a CUDA GPU with bf16, a CPU with
#: AVX512-BF16 or AMX), else fp32. A CPU without them emulates bf16: measured 16.8x slower per step than fp32
#: (MiniLM LoRA step, AMD EPYC with AVX2 only: 3.22 s vs 0.192 s, studies/step-speed/precision.json).
PrecisionChoice = Literal["auto", "bf16", "fp32"]
PRECISION_CHOICES: tuple[str, ...] = get_args(PrecisionChoice)

#: the dtype of the frozen-prefix activation cache, or off
PrefixCache = Literal["off", "bf16", "fp32"]
PREFIX_CACHES: tuple[str, ...] = get_args(PrefixCache)

#: where a step runs, as far as the trainer and the memory estimate care
DeviceType = Literal["cpu", "cuda"]
DEVICE_TYPES: tuple[str, ...] = get_args(DeviceType)

#: the optimizer of the trainable parameters (the trainer uses AdamW; the memory estimate models all three)
OptimizerName = Literal["adamw", "adamw8bit", "sgd"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)

#: the base model's frozen projections: as loaded, or 4-bit NF4/FP4 or int8 (bitsandbytes; QLoRA)
Quantization = Literal["none", "nf4", "fp4", "int8"]
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)

#: how a one-shot supernet trains: ``gates``, every slice open as far as its learned gate says (expected
#: cost = budget, S3Delta); ``subnets``, one random hard sub-network within the budget per step, the gates
#: untouched (autopeft.oneshot; either way the readouts are chosen by measuring inside the supernet)
SupernetTraining = Literal["gates", "subnets"]
SUPERNET_TRAININGS: tuple[str, ...] = get_args(SupernetTraining)


class TrialStatus(str, Enum):
    """What became of a trial (Optuna user attribute ``status``; finer than Optuna's own states).

    A ``str`` enum, so it is stored and compared as its plain value (``"complete"``) in Optuna's storage,
    ``trials.csv`` and ``summary.json``.
    """

    QUEUED = "queued"  # enqueued (warm start, repaired copy), not claimed yet
    RUNNING = "running"  # claimed by a worker, training
    COMPLETE = "complete"  # trained to the top rung
    STOPPED = "stopped"  # stopped at a lower rung by promotion (Optuna: PRUNED)
    INFEASIBLE = "infeasible"  # over the parameter or memory budget: never trained
    FAILED = "failed"  # training raised

    def __str__(self) -> str:
        return self.value


#: statuses of trials that hold (or held) a place in the trial budget, and that a resume continues
TRAINED_OR_TRAINING: tuple[TrialStatus, ...] = (TrialStatus.RUNNING, TrialStatus.COMPLETE, TrialStatus.STOPPED)
