"""Everything a search process needs, built once: model and data, space, budgets, rungs, study.

The coordinator (``autopeft search``) builds it from the command line and stores the settings in the
study; a worker (``autopeft worker``, a local ``--workers`` process, a Ray trial) rebuilds it from the
study alone, so every process of a search samples, trains and judges plans identically.
"""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from autopeft.core.errors import UserError
from autopeft.core.units import format_count, parse_budget, parse_memory
from autopeft.searching.objectives import Objectives, estimate_memory
from autopeft.searching.progress import Reporter
from autopeft.searching.settings import DEFAULT_BUDGET, SearchSettings
from autopeft.space import SearchSpace, load_space
from autopeft.study.files import SETTINGS_ATTR, StudyFiles, check_same_identity, mask_url, open_storage
from autopeft.training.config import TrainConfig, steps_for_epochs
from autopeft.training.pipeline import Prepared, prepare


@dataclass
class SearchContext:
    settings: SearchSettings
    prepared: Prepared
    space: SearchSpace
    budget: int  # trainable parameters
    memory_limit: int | None  # bytes
    objectives: Objectives
    files: StudyFiles
    identity: dict[str, Any]

    @property
    def arch(self):
        return self.prepared.loaded.arch

    @property
    def base_params(self) -> int:
        return self.prepared.loaded.base_params

    @property
    def rungs(self) -> tuple[int, ...]:
        return self.settings.rungs

    @property
    def storage_url(self) -> str:
        return self.settings.storage or self.files.storage_url

    @property
    def needs_memory(self) -> bool:
        return self.memory_limit is not None or self.objectives.uses_memory


def _space_and_source(settings: SearchSettings) -> tuple[SearchSpace, str | None]:
    path = Path(settings.space)
    space = load_space(settings.space)
    source = path.read_text() if path.is_file() else None
    return space, source


def _budget_text(settings: SearchSettings, space: SearchSpace) -> str:
    return settings.budget or getattr(space, "budget", None) or DEFAULT_BUDGET


def build_context(settings: SearchSettings, reporter: Reporter, space_source: str | None = None) -> SearchContext:
    """Load model and data and check the budgets; ``space_source``: the space YAML stored in a study."""
    if space_source is not None:
        with tempfile.TemporaryDirectory() as tmp:  # a worker may not have the coordinator's YAML file
            path = Path(tmp) / f"{Path(settings.space).stem or 'space'}.yaml"
            path.write_text(space_source)
            space = load_space(str(path))
    else:
        space, space_source = _space_and_source(settings)
    budget_text = _budget_text(settings, space)
    parse_budget(budget_text, base_params=10**12)  # syntax errors surface before any loading
    memory_limit = parse_memory(settings.memory) if settings.memory else None
    files = StudyFiles(Path(settings.out))
    if settings.epochs is None:  # otherwise the full fidelity is known once the data is loaded
        files.check_resume(settings.identity(budget_text, space_source))
    reporter.info(f"loading model '{settings.data.model}' and dataset '{settings.data.dataset}'")
    prepared = prepare(settings.data)
    if settings.epochs is not None:
        examples = prepared.data.split_sizes["train"]
        steps = steps_for_epochs(settings.epochs, examples, settings.train.batch_size)
        text = f"full fidelity: {settings.epochs:g} epochs of {examples} examples = {steps} steps"
        if settings.epoch_steps_cap is not None and steps > settings.epoch_steps_cap:
            steps = settings.epoch_steps_cap
            text = (f"full fidelity: {steps} steps = {steps * settings.train.batch_size / examples:.2f} epochs of "
                    f"{examples} examples (the default, {settings.epochs:g} epochs, capped at {steps} steps; "
                    f"--epochs or --max-steps to change it)")
        reporter.info(text)
        # the resolved length defines the study (workers rebuild these settings without the data)
        settings = replace(settings, train=replace(settings.train, steps=steps), epochs=None, epoch_steps_cap=None)
        settings.rungs  # noqa: B018 - --min-steps against the resolved length
    identity = settings.identity(budget_text, space_source)
    files.check_resume(identity)
    arch, base = prepared.loaded.arch, prepared.loaded.base_params
    budget = parse_budget(budget_text, base)
    greater = prepared.data.task == "classification"
    ctx = SearchContext(settings, prepared, space, budget, memory_limit,
                        Objectives(tuple(settings.objectives), greater), files, identity)  # type: ignore[arg-type]
    smallest = space.smallest(arch).plan()
    if smallest.num_params(arch) > budget:
        need = smallest.num_params(arch)
        raise UserError(f"no plan of space '{space.name}' fits --budget {budget_text} ({budget} params) on "
                        f"this model; the smallest feasible budget is {need} params ({100 * need / base:.4f}%)")
    if memory_limit is not None:
        need = estimate_memory(prepared, smallest, settings.train)
        if need > memory_limit:
            raise UserError(f"--memory {settings.memory} is below what the smallest plan of space '{space.name}' "
                            f"needs to train ({need / 2**30:.2f} GiB at batch size {settings.train.batch_size}, "
                            f"max length {settings.data.max_length}); raise --memory or lower --batch-size")
    reporter.info(f"base model {format_count(base)} params ({arch.family.name}, {arch.num_layers} layers); "
                  f"budget {format_count(budget)} trainable params"
                  + (f", memory {settings.memory}" if memory_limit else "")
                  + f"; space '{space.name}'; rungs {'/'.join(map(str, settings.rungs))} steps (eta {settings.eta:g}); "
                  f"objectives {','.join(settings.objectives)}; splits {prepared.data.split_sizes}")
    return ctx


def adapter_config(prepared: Prepared, config: TrainConfig) -> dict[str, Any]:
    """``autopeft_config.json`` of an adapter trained on ``prepared`` with ``config``."""
    return {
        "base_model": prepared.options.model,
        "base_model_source": prepared.loaded.source,
        "base_params": prepared.loaded.base_params,
        "family": prepared.loaded.arch.family.name,
        "task": prepared.data.task,
        "data": prepared.options.to_record(),
        "label_names": prepared.data.label_names,
        "split_seed": prepared.data.split_seed,
        "train": asdict(config),
        "precision_ran": prepared.session.recipe(config).precision,  # train.precision may say "auto"
        "base_fingerprint": prepared.fingerprint,  # checked by autopeft.load_adapter and `autopeft eval`
    }


# --- the study ----------------------------------------------------------------------------------
def make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():  # group=True etc. are "experimental" in Optuna, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 3)))
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8, warn_independent_sampling=False)
        # group=True: TPE models the conditional parameters of each method choice jointly
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8)


def sampler_seed(seed: int, existing_trials: int, worker: int) -> int:
    """A fresh study on one worker samples with ``--seed`` itself; a resumed study or another worker gets a
    derived seed, so it does not replay the random start-up samples already taken."""
    if existing_trials == 0 and worker == 0:
        return seed
    digest = hashlib.sha256(f"{seed}-{existing_trials}-{worker}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def open_study(ctx: SearchContext, worker: int = 0, create: bool = True) -> optuna.Study:
    settings = ctx.settings
    storage = open_storage(ctx.storage_url)
    directions = ctx.objectives.directions()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if create:
            study = optuna.create_study(storage=storage, study_name=settings.study_name, directions=directions,
                                        load_if_exists=True)
        else:
            study = optuna.load_study(storage=storage, study_name=settings.study_name)
        if [d.name.lower() for d in study.directions] != directions:
            raise UserError(f"storage {mask_url(ctx.storage_url)} already holds a study '{settings.study_name}' "
                            f"with other objectives; choose another --study-name")
        stored = study.user_attrs.get(SETTINGS_ATTR)
        if stored:
            check_same_identity(stored["identity"], ctx.identity, f"study '{settings.study_name}'")
        study.set_metric_names(ctx.objectives.metric_names())
    seed = sampler_seed(settings.seed, len(study.trials), worker)
    study.sampler = make_sampler(settings.sampler, seed, settings.trials)
    # recorded per process and session (worker index, trials existing when it started): reproducible
    study.set_user_attr(f"sampler_seed:{worker}:{len(study.trials)}", seed)
    return study


def record_settings(study: optuna.Study, ctx: SearchContext) -> None:
    """Store what a worker needs to join (in the study) and what a reader needs (settings.json)."""
    record = {"identity": ctx.identity, "record": ctx.settings.to_record()}
    study.set_user_attr(SETTINGS_ATTR, record)
    ctx.files.write_settings(ctx.identity, extra={
        "budget_params": ctx.budget, "base_params": ctx.base_params, "memory_limit_bytes": ctx.memory_limit,
        "data": ctx.prepared.data.to_record(), "storage": mask_url(ctx.storage_url),
        "study_name": ctx.settings.study_name, "rungs": list(ctx.rungs), "objectives": list(ctx.objectives.names),
    })


def load_worker_context(storage_url: str, study_name: str, out: str | None, reporter: Reporter) -> SearchContext:
    """The context of a search that another process started (``autopeft worker``)."""
    storage = open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise UserError(f"storage {mask_url(storage_url)} holds no study named '{study_name}'; start it with "
                        "`autopeft search --storage URL --study-name NAME` first") from None
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if not stored:
        raise UserError(f"study '{study_name}' was not created by `autopeft search` (no settings recorded)")
    record = stored["record"]
    settings = SearchSettings.from_record(record, storage=storage_url, out=out or record["out"])
    try:
        Path(settings.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot use study directory {settings.out} ({exc.strerror}); pass --out DIR") from None
    return build_context(settings, reporter, space_source=stored["identity"].get("space_source"))


