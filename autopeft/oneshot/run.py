"""Train a supernet once and read out one plan per budget along the front.

:func:`train_supernet` trains the space's supernet (:mod:`autopeft.oneshot.supernet`) for ``config.steps``
with the ordinary trial loop (same batches, schedule, checkpoints); :func:`measured_readouts` then picks,
at ``k`` budgets spaced geometrically from the cheapest slice to ``budget``, the sub-network that scores
best inside the trained supernet among the gates' ranking cut there and random sub-networks filling it,
and returns the distinct plans (each a point of the space, as a :class:`~autopeft.space.model.Sample`
whose ``trial_params()`` enqueue it as an ordinary trial, to be verified by real training).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from autopeft.core.choices import SupernetTraining
from autopeft.oneshot.candidates import Slice, sample_of
from autopeft.oneshot.gates import readout
from autopeft.oneshot.subnets import filled_subnet
from autopeft.oneshot.supernet import Supernet, build_supernet
from autopeft.space.model import Sample
from autopeft.space.search_space import SearchSpace
from autopeft.training.config import TrainConfig
from autopeft.training.session import Session
from autopeft.training.trial_run import Checkpoint, TrialRun

DEFAULT_READOUTS = 8
CHECKPOINT_EVERY = 50  # steps between supernet checkpoints (a killed run resumes from the last one)
PROXY_CANDIDATES = 6  # random budget-filling sub-networks measured inside the supernet per readout budget
#: where a readout came from: the gates' ranking cut at its budget, or a random sub-network filling it
ReadoutSource = Literal["ranking", "sampled"]


@dataclass(frozen=True)
class Readout:
    budget: float
    sample: Sample
    params: int
    slices: tuple[int, ...]
    supernet_metric: float | None = None  # validation metric of the supernet with only these slices open
    source: ReadoutSource = "ranking"


@dataclass(frozen=True)
class SupernetResult:
    slices: list[Slice]
    scores: list[float]  # effective score per slice: the ranking every readout cuts
    train_loss: float
    seconds: float
    # validation metric inside the trained supernet of each sub-network asked for (``probes``)
    probes: dict[tuple[int, ...], float] = field(default_factory=dict)


def readout_budgets(slices: list[Slice], budget: float, k: int) -> list[float]:
    """``k`` budgets from the cheapest slice to ``budget``, geometrically spaced (the front is dense at
    small budgets, where every added parameter matters most)."""
    cheapest = min(s.cost for s in slices if s.parent is None)
    if k <= 1 or budget <= cheapest:
        return [budget]
    ratio = (budget / cheapest) ** (1 / (k - 1))
    return [cheapest * ratio ** i for i in range(k - 1)] + [budget]


def train_supernet(session: Session, space: SearchSpace, budget: float, config: TrainConfig,
                   checkpoint_path: Path | None = None, progress: Callable[[int, float], None] | None = None,
                   readouts_k: int = 0, training: SupernetTraining = "gates",
                   probes: Sequence[tuple[int, ...]] = ()) -> tuple[SupernetResult, list[Readout]]:
    """One training run of the supernet (resumed from ``checkpoint_path`` when it holds a checkpoint), and
    its ``readouts_k`` readouts, each evaluated inside the trained supernet with only its slices open (the
    weight-sharing prediction that real training of the readout then verifies); ``probes``: more
    sub-networks (kept slices) to evaluate that way, in ``result.probes``."""
    torch.manual_seed(config.seed)  # as start_run: the seed, the head, then the injected modules' init
    session.reset_head(config.seed)
    supernet: Supernet = build_supernet(session.model, session.arch, space, budget,
                                        train_head=session.task == "classification", training=training)
    with TrialRun(session, supernet, config) as run:
        if checkpoint_path is not None and checkpoint_path.is_file():
            run.restore(Checkpoint.load(checkpoint_path))
        while run.step < config.steps:
            run.advance(min(config.steps, run.step + CHECKPOINT_EVERY), progress)
            if checkpoint_path is not None:
                run.checkpoint().save(checkpoint_path)  # atomic (temporary file + rename)
        result = SupernetResult(supernet.slices, supernet.gates.effective_scores(), run.train_loss,
                                run.train_seconds, {kept: subnet_metric(run, supernet, kept) for kept in probes})
        if not readouts_k:
            return result, []
        return result, measured_readouts(space, session, run, supernet, result, budget, readouts_k, config.seed,
                                         ranked=training == "gates")


def measured_readouts(space: SearchSpace, session: Session, run: TrialRun, supernet: Supernet,
                      result: SupernetResult, budget: float, k: int, seed: int, ranked: bool = True,
                      per_budget: int = PROXY_CANDIDATES) -> list[Readout]:
    """One readout per budget, chosen by measuring inside the trained supernet: at each of the ``k``
    budgets (smallest first), the gates' ranking cut at that budget (``ranked``), ``per_budget`` random
    sub-networks that fill it and the previous budget's readout are evaluated (validation, only their
    slices open), and the best is the readout; a budget whose best is the previous readout adds none.
    Every evaluated sub-network and its metric land in ``result.probes``.

    Why measure rather than cut the ranking alone (the ranking's cut is one of the candidates): in the
    preview on rotten_tomatoes the cuts were LoRA on q,k only, which the supernet itself measured at
    0.62-0.69 and real training stopped at the first rung. How far the measurement can be trusted
    (``studies/oneshot/proxy.md``, Spearman with real training over 12 random sub-networks): +0.91 on
    rotten_tomatoes, +0.18 on trec. The readouts are proposals; their real training verifies them.
    """
    specs = supernet.gates.slices
    generator = torch.Generator().manual_seed(seed)

    def draw() -> float:
        return float(torch.rand((), generator=generator))
    out: list[Readout] = []
    winner: tuple[int, ...] | None = None
    for cut in readout_budgets(result.slices, budget, k):
        cut_of_ranking = tuple(readout(specs, result.scores, cut)) if ranked else ()
        contenders = sorted(({tuple(filled_subnet(specs, cut, draw)) for _ in range(per_budget)}
                             | {cut_of_ranking} | ({winner} if winner else set())) - {()})
        if not contenders:
            continue
        for kept in contenders:
            if kept not in result.probes:
                result.probes[kept] = subnet_metric(run, supernet, kept)
        # ties: the smaller budget's readout, then the ranking's cut, then the lowest slices
        best = max(contenders, key=lambda kept: (result.probes[kept], kept == winner, kept == cut_of_ranking))
        if best == winner:
            continue
        winner = best
        sample = sample_of(space, session.arch, result.slices, list(best))
        out.append(Readout(cut, sample, sample.plan().num_params(session.arch), best, result.probes[best],
                           "ranking" if best == cut_of_ranking else "sampled"))
    return out


def subnet_metric(run: TrialRun, supernet: Supernet, kept: Sequence[int]) -> float:
    """Validation metric of the trained supernet with only the slices ``kept`` open."""
    supernet.fixed_openings = torch.zeros_like(supernet.gates.raw)
    supernet.fixed_openings[list(kept)] = 1.0
    try:
        return run.evaluate("validation").value
    finally:
        supernet.fixed_openings = None
