"""Training and evaluating an AdapterFusion (:mod:`autopeft.peft.fusion`) on a session, like a plan's run."""

from __future__ import annotations

from typing import Any

import torch

from autopeft.peft.fusion import Source, fuse, fusion_state, sources_from_saved
from autopeft.training.config import TrainConfig
from autopeft.training.session import Metrics, Session, TrialOutcome
from autopeft.training.trial_run import TrialRun


def train_fused(session: Session, sources: list[Source], config: TrainConfig) -> TrialOutcome:
    """Train the fusion layers and a fresh head (seeded like :func:`~autopeft.training.trial_run.start_run`), evaluate on validation.

    ``config.prefix_cache`` must be "off": the activation cache keys on a plan's first layer, and a
    fusion's layers are not a plan's.
    """
    if config.prefix_cache != "off":
        raise ValueError("fusion runs need TrainConfig(prefix_cache='off')")
    torch.manual_seed(config.seed)
    session.reset_head(config.seed)
    handle = fuse(session.model, session.arch, sources, train_head=session.task == "classification")
    with TrialRun(session, handle, config) as run:
        run.advance(config.steps)
        return run.outcome(run.evaluate("validation"))


def evaluate_fused(session: Session, config: dict[str, Any], state: dict[str, torch.Tensor], split: str,
                   train_config: TrainConfig) -> Metrics:
    """Metrics of a saved fused directory on ``split`` (what ``autopeft eval`` runs for a fusion)."""
    sources = sources_from_saved(config, state)
    with fuse(session.model, session.arch, sources, train_head=session.task == "classification") as handle:
        handle.load_state_dict({k: v.to(session.device) for k, v in fusion_state(state).items()},
                               source="fused adapter")
        return session.evaluate(split, train_config)
