"""What a search optimises: the validation metric, trainable parameters, estimated peak training memory.

``--objectives`` picks a subset that contains ``metric`` (default ``metric,params``). The Optuna study
has one direction per objective, in this order: metric (maximised for accuracy, minimised for LM loss),
params (minimised), memory (minimised). Promotion at rungs compares the same vectors with every
component turned into "smaller is better" (the metric negated when higher is better).

Memory is the estimated peak of one training step (weights, activations, gradients and optimizer
state) for the chosen batch size and sequence length: :func:`estimate_memory` is the one place that
asks for it (see its docstring for the source).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from autopeft.core.errors import UserError

if TYPE_CHECKING:
    from autopeft.peft.plan import Plan
    from autopeft.training.config import TrainConfig
    from autopeft.training.pipeline import Prepared

Objective = Literal["metric", "params", "memory"]
ALL_OBJECTIVES: tuple[Objective, ...] = ("metric", "params", "memory")
METRIC_NAMES = {"metric": "validation_metric", "params": "trainable_params", "memory": "memory_bytes"}


def parse_objectives(text: str) -> tuple[Objective, ...]:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_OBJECTIVES]
    if unknown or not names:
        raise UserError(f"--objectives {text!r}: unknown objective {unknown[0] if unknown else '(none)'!r}; "
                        "choose from metric, params, memory, e.g. metric,params")
    if "metric" not in names:
        raise UserError(f"--objectives {text!r} must include metric (plans are trained to be compared on it)")
    if len(set(names)) != len(names):
        raise UserError(f"--objectives {text!r} names an objective twice")
    return tuple(n for n in ALL_OBJECTIVES if n in names)  # type: ignore[misc]


@dataclass(frozen=True)
class Objectives:
    names: tuple[Objective, ...]
    greater_is_better: bool

    @property
    def uses_memory(self) -> bool:
        return "memory" in self.names

    def directions(self) -> list[str]:
        return [("maximize" if self.greater_is_better else "minimize") if n == "metric" else "minimize"
                for n in self.names]

    def metric_names(self) -> list[str]:
        return [METRIC_NAMES[n] for n in self.names]

    def values(self, metric: float, params: int, memory: int | None) -> list[float]:
        """The values told to Optuna (natural units, in :attr:`names` order)."""
        table = {"metric": float(metric), "params": float(params),
                 "memory": float(memory) if memory is not None else float("nan")}
        return [table[n] for n in self.names]

    def minimised(self, metric: float, params: int, memory: int | None) -> tuple[float, ...]:
        """The same vector with every component to be minimised (for Pareto sorting)."""
        sign = -1.0 if self.greater_is_better else 1.0
        return tuple(sign * v if n == "metric" else v for n, v in zip(self.names, self.values(metric, params, memory),
                                                                        strict=True))


def estimate_memory(prepared: Prepared, plan: Plan, config: TrainConfig) -> int:
    """Estimated peak bytes of one training step of ``plan`` at ``config``'s batch size and precision and
    the data's max length, on the session's device. The single place the search asks for memory:
    the analytic estimator of :mod:`autopeft.memory.estimate` (milliseconds per plan, nothing is run).
    """
    from autopeft.memory.estimate import estimate_plan_bytes

    recipe = prepared.session.recipe(config)  # the step the trainer will run, switch for switch
    return int(estimate_plan_bytes(prepared, plan, batch_size=config.batch_size, recipe=recipe,
                                   dtype="bf16" if recipe.autocast_bf16 else "fp32", device=recipe.device,
                                   quantize=getattr(prepared.options, "quantize", "none")))
