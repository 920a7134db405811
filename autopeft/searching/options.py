"""The options of a search, defined once for ``autopeft search`` and ``autopeft.search(...)``.

:data:`SEARCH_OPTIONS` is the table both read (the CLI adds it to its parser, the API resolves keyword
arguments against it); :func:`settings_from_options` turns its values into
:class:`~autopeft.searching.settings.SearchSettings`, checking them the same way for both. Imports no torch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, get_args

from autopeft.core.choices import SUPERNET_TRAININGS
from autopeft.core.errors import UserError
from autopeft.core.extras import require
from autopeft.core.options import Option, OptionGroup, OptionTable
from autopeft.core.units import parse_duration, parse_memory
from autopeft.searching.settings import (
    DEFAULT_EPOCH_STEPS_CAP,
    DEFAULT_EPOCHS,
    DEFAULT_SPACE,
    STUDY_NAME,
    BackendName,
    BaselineName,
    PickName,
    SamplerName,
    StrategyName,
)
from autopeft.training.options import DATA_OPTIONS, data_options, train_options

DEFAULT_FIDELITY_TEXT = f"{DEFAULT_EPOCHS:g} epochs, at most {DEFAULT_EPOCH_STEPS_CAP} steps"

SEARCH_OPTIONS = OptionTable.of(
    DATA_OPTIONS,
    train_options(steps=None, steps_help=DEFAULT_FIDELITY_TEXT),
    OptionGroup("objectives and budgets", (
        Option("budget", help="max trainable params: 0.5%% of the base model, 120k, 1.5M "
                              "(default: the space's budget, else 0.5%%)"),
        Option("memory", help="max estimated peak training memory, e.g. 8GiB, 512MiB"),
        Option("objectives", "metric,params",
               help="what to optimise: metric plus any of params, memory (default metric,params)"),
    )),
    OptionGroup("search", (
        Option("space", DEFAULT_SPACE, help=f"preset name or YAML file (default: {DEFAULT_SPACE})"),
        Option("trials", 12, type=int, help="plans to train, at any rung (default 12)"),
        Option("time_budget", help="stop starting new trials after this long, e.g. 20m"),
        Option("sampler", "tpe", choices=get_args(SamplerName)),
        Option("strategy", "bayes", choices=get_args(StrategyName),
               help="bayes: the sampler proposes every plan (default); oneshot: one supernet run, its readouts "
                    "trained as the trials; oneshot+bayes: the readouts first, then the sampler"),
        Option("readouts", 8, type=int, help="oneshot strategies: plans read out of the supernet (default 8)"),
        Option("supernet", "gates", choices=SUPERNET_TRAININGS,
               help="oneshot strategies, how the supernet trains: gates: every candidate behind a learned budget "
                    "gate (default); subnets: one random sub-network within the budget per step"),
        Option("seed", 0, type=int, help="sampler seed; trial n trains with seed + n"),
        Option("max_failures", 5, type=int, help="stop after this many failed trials"),
    )),
    OptionGroup("multi-fidelity (rungs by training steps)", (
        # the same value as --steps (train_options): the top rung; --steps keeps its own default
        Option("steps", None, type=int, flags=("--max-steps",), hidden_default=True,
               help=f"full-fidelity training steps, the top rung (default {DEFAULT_FIDELITY_TEXT}; "
                    "--steps is the same option)"),
        Option("epochs", type=float, help="full fidelity in epochs of the training split instead of "
                                           "--max-steps (no step cap): the training the found adapter gets"),
        Option("min_steps", type=int, help="steps of the first rung (default max-steps / eta; "
                                           "= max-steps: no early stopping)"),
        Option("eta", 3.0, type=float, help="rung growth factor; the top 1/eta of a rung continue (default 3)"),
    )),
    OptionGroup("final stage", (
        Option("baselines", ",".join(get_args(BaselineName)),
               help="standard recipes trained as the first trials, and compared with the pick at the end: "
                    f"comma-separated from {', '.join(get_args(BaselineName))}, or none (default: all)"),
        Option("baseline_lrs", 2, type=int,
               help="train each baseline at this many learning rates spread over the space's lr range (log "
                    "scale; the best recipe's lrs are settled on seeds 2..K, the best meets the pick), or 0: one lr "
                    "drawn by the sampler (default 2)"),
        Option("seeds", 3, type=int, help="retrain each finalist with this many seeds (default 3)"),
        Option("finalists", 3, type=int,
               help="front plans retrained with --seeds seeds: the best by metric (default 3; --pick knee "
                    "retrains the whole front)"),
        Option("pick", "max-metric", choices=get_args(PickName),
               help="best/ = best mean metric (default) or the front's knee"),
    )),
    OptionGroup("where it runs", (
        Option("out", help="study directory (default runs/<timestamp>); same --out resumes"),
        Option("workers", "auto", help="local worker processes sharing the study: a number, or auto = one per "
                                       "core with one torch thread each (default auto)"),
        Option("storage", help="Optuna storage URL, e.g. postgresql://host/db (default: SQLite study.db in "
                               "the study directory)"),
        Option("study_name", STUDY_NAME, help=f"study name in the storage (default {STUDY_NAME})"),
        Option("backend", "optuna", choices=get_args(BackendName)),
        Option("ray_address", help="existing Ray cluster to connect to (default: start a local one)"),
        Option("ray_cpus_per_trial", 1.0, type=float, help="CPUs per Ray trial (default 1)"),
        Option("ray_gpus_per_trial", 0.0, type=float, help="GPUs per Ray trial (default 0)"),
    )),
    OptionGroup(None, (Option("quiet", False, switch=True),)),
)


def settings_from_options(values: dict[str, Any]):
    """Checked :class:`~autopeft.searching.settings.SearchSettings` from :data:`SEARCH_OPTIONS` values.

    Everything that can be checked without loading a model is checked here, before anything is loaded.
    """
    from autopeft.searching.objectives import parse_objectives
    from autopeft.searching.settings import SearchSettings
    from autopeft.searching.threads import resolve_workers
    from autopeft.training.config import TrainConfig

    if values["trials"] < 1:
        raise UserError(f"--trials must be >= 1, got {values['trials']}")
    if values["baseline_lrs"] < 0:
        raise UserError(f"--baseline-lrs must be >= 0 (0: the sampler draws each baseline's lr), got "
                        f"{values['baseline_lrs']}")
    if values["seeds"] < 1:
        raise UserError(f"--seeds must be >= 1, got {values['seeds']}")
    if values["readouts"] < 1:
        raise UserError(f"--readouts must be >= 1, got {values['readouts']}")
    if values["finalists"] < 1:
        raise UserError(f"--finalists must be >= 1, got {values['finalists']}")
    if not values["study_name"].strip():
        raise UserError("--study-name must not be empty")
    if values["ray_cpus_per_trial"] <= 0 or values["ray_gpus_per_trial"] < 0:
        raise UserError("--ray-cpus-per-trial must be > 0 and --ray-gpus-per-trial >= 0")
    if values["backend"] == "ray":
        if values["strategy"] != "bayes":
            raise UserError(f"--strategy {values['strategy']} runs with the optuna backend; drop --backend ray")
        require("ray")
    if (values["storage"] or "").startswith(("postgresql", "postgres:")):
        require("postgres")
    workers, threads = resolve_workers(values["workers"])
    epochs, cap = full_fidelity(values["steps"], values["epochs"])
    settings = SearchSettings(
        data=data_options(values),
        budget=values["budget"], memory=values["memory"], objectives=parse_objectives(values["objectives"]),
        space=values["space"], trials=values["trials"],
        time_budget_s=parse_duration(values["time_budget"]) if values["time_budget"] else None,
        out=values["out"] or f"runs/{datetime.now().strftime('%Y%m%d-%H%M%S')}",
        seed=values["seed"], sampler=values["sampler"], max_failures=values["max_failures"],
        # with epochs, train.steps is a placeholder until the data is loaded (build_context resolves it)
        train=TrainConfig(steps=values["steps"] or DEFAULT_EPOCH_STEPS_CAP, batch_size=values["batch_size"],
                          lr=values["lr"], head_lr_scale=values["head_lr_scale"], precision=values["precision"]),
        min_steps=values["min_steps"], eta=values["eta"], seeds=values["seeds"],
        finalists=values["finalists"], pick=values["pick"],
        workers=workers, threads=threads, storage=values["storage"], study_name=values["study_name"],
        backend=values["backend"], ray_address=values["ray_address"],
        ray_cpus_per_trial=values["ray_cpus_per_trial"], ray_gpus_per_trial=values["ray_gpus_per_trial"],
        baselines=parse_baselines(values["baselines"]), baseline_lrs=values["baseline_lrs"],
        epochs=epochs, epoch_steps_cap=cap, strategy=values["strategy"], readouts=values["readouts"],
        supernet=values["supernet"],
    )
    if epochs is None:
        settings.rungs  # noqa: B018 - rung arguments are checked before anything is loaded
    if values["memory"]:
        parse_memory(values["memory"])
    return settings


def full_fidelity(steps: int | None, epochs: float | None) -> tuple[float | None, int | None]:
    """(epochs, step cap) of the top rung: --max-steps N -> (None, None); --epochs E -> (E, None);
    neither -> the default, DEFAULT_EPOCHS capped at DEFAULT_EPOCH_STEPS_CAP steps."""
    if steps is not None and epochs is not None:
        raise UserError(f"give --max-steps ({steps}) or --epochs ({epochs:g}), not both")
    if epochs is not None and not epochs > 0:
        raise UserError(f"--epochs must be > 0, got {epochs}")
    if steps is None and epochs is None:
        return DEFAULT_EPOCHS, DEFAULT_EPOCH_STEPS_CAP
    return epochs, None


def parse_baselines(text: str) -> tuple[BaselineName, ...]:
    """``--baselines``: comma-separated recipe names, or ``none``."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names in ((), ("none",)):
        return ()
    unknown = [n for n in names if n not in get_args(BaselineName)]
    if unknown:
        raise UserError(f"--baselines: unknown recipe(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(get_args(BaselineName))}, or none")
    return names  # type: ignore[return-value]
