"""The settings of a search, as one frozen record.

The whole record is stored in the Optuna study (study user attribute ``settings``), so that
``autopeft worker --storage URL --study NAME`` on another machine rebuilds exactly the same search
from the storage alone. :meth:`SearchSettings.identity` is the part that defines the study: resuming
with a different identity is refused. Everything else (``--trials``, ``--time-budget``, ``--workers``,
``--seeds``, ``--pick``, the backend, ...) may change between runs of the same study.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from autopeft.core.choices import SupernetTraining
from autopeft.searching.rungs import default_min_steps, rung_steps
from autopeft.study.layout import STUDY_NAME
from autopeft.training.config import TrainConfig
from autopeft.training.options import DataOptions

SamplerName = Literal["tpe", "nsga2", "gp", "random"]
PickName = Literal["max-metric", "knee"]
BackendName = Literal["optuna", "ray"]
#: the standard recipes trained as a study's first trials (:mod:`autopeft.searching.baselines`)
BaselineName = Literal["lora-r8-qv", "pfeiffer", "parallel-adapter"]
#: how plans are proposed: the sampler over the space (bayes); only the readouts of one supernet run
#: (oneshot); the readouts first, then the sampler (oneshot+bayes). See autopeft.oneshot.
StrategyName = Literal["bayes", "oneshot", "oneshot+bayes"]
DEFAULT_BUDGET = "0.5%"
# The default full fidelity (the top rung = the training the found adapter gets), chosen from
# studies/search-quality/fidelity.py on the tuning datasets: see that study's README.
DEFAULT_EPOCHS = 3.0
DEFAULT_SPACE = "compact"  # the search-space preset when --space is not given
DEFAULT_EPOCH_STEPS_CAP = 800


@dataclass(frozen=True)
class SearchSettings:
    data: DataOptions = field(default_factory=DataOptions)
    budget: str | None = None  # None: the space's own budget if it has one, else DEFAULT_BUDGET
    memory: str | None = None  # hard cap on estimated peak training memory, e.g. "4GiB"
    objectives: tuple[str, ...] = ("metric", "params")
    # compact: chosen over hybrid on the tuning datasets (studies/search-quality: ceiling.jsonl, and a 20-minute
    # trec search each: validation uplift over the LoRA baseline +1.05 pt vs -0.06)
    space: str = DEFAULT_SPACE
    trials: int = 12
    time_budget_s: float | None = None
    step_budget: int | None = None  # stop starting new trials once this many training steps were spent
    out: str = "runs/latest"
    seed: int = 0
    sampler: SamplerName = "tpe"
    max_failures: int = 5
    train: TrainConfig = field(default_factory=TrainConfig)  # train.steps = full fidelity (--max-steps)
    min_steps: int | None = None  # None: max_steps / eta
    eta: float = 3.0
    seeds: int = 3
    finalists: int = 3  # front plans retrained with `seeds` seeds: the best by metric (knee pick: all)
    pick: PickName = "max-metric"
    workers: int = 1  # local processes (Optuna backend)
    threads: int = 0  # torch threads per worker process; 0 = torch's default
    storage: str | None = None  # None: SQLite file study.db in the study directory
    study_name: str = STUDY_NAME
    backend: BackendName = "optuna"
    ray_address: str | None = None
    ray_cpus_per_trial: float = 1.0
    ray_gpus_per_trial: float = 0.0
    baselines: tuple[BaselineName, ...] = get_args(BaselineName)
    baseline_lrs: int = 2  # each baseline at this many lrs spread over the space's range; 0: sampled (baselines.py)
    epochs: float | None = None  # full fidelity in epochs; resolved to train.steps once the data is loaded
    epoch_steps_cap: int | None = None  # with epochs: at most this many steps (the default fidelity's cap)
    strategy: StrategyName = "bayes"
    readouts: int = 8  # oneshot strategies: plans read out of the supernet (budgets from the smallest to --budget)
    supernet: SupernetTraining = "gates"  # oneshot strategies: how the supernet trains (autopeft.oneshot)

    @property
    def uses_supernet(self) -> bool:
        return self.strategy != "bayes"

    @property
    def max_steps(self) -> int:
        return self.train.steps

    @property
    def rungs(self) -> tuple[int, ...]:
        min_steps = self.min_steps if self.min_steps is not None else default_min_steps(self.max_steps, self.eta)
        return rung_steps(min_steps, self.max_steps, self.eta)

    def identity(self, budget: str, space_source: str | None = None) -> dict[str, Any]:
        """What must match to resume a study (``budget``: the budget actually used, after defaults)."""
        return {"data": self.data.to_record(), "budget": budget, "memory": self.memory,
                "objectives": list(self.objectives), "space": self.space, "space_source": space_source,
                "seed": self.seed, "train": asdict(self.train), "rungs": list(self.rungs), "eta": self.eta}

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["objectives"] = list(self.objectives)
        record["out"] = str(Path(self.out).resolve())
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], **overrides: Any) -> SearchSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        values["data"] = DataOptions(**{k: v for k, v in record["data"].items()
                                        if k in {f.name for f in fields(DataOptions)}})
        values["train"] = TrainConfig(**record["train"])
        values["objectives"] = tuple(record["objectives"])
        values["baselines"] = tuple(record.get("baselines", ()))
        return replace(cls(**values), **overrides)
