"""Tiny sessions for the fast-trial tests (tests/test_fast_*.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from autopeft.core.arch import arch_from_config
from autopeft.testing import tiny_model
from autopeft.training.data import TokenizedSplit
from autopeft.training.session import Session
from autopeft.training.trial_run import start_run


@pytest.fixture(autouse=False)
def one_thread():
    """Tiny models gain nothing from threads, and a busy machine makes OpenMP's barriers very slow."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_classification(n: int, seed: int) -> TokenizedSplit:
    """Label = whether token 7 occurs; lengths 3..17 so that padding and bucketing matter."""
    g = torch.Generator().manual_seed(seed)
    ids, labels = [], []
    for i in range(n):
        length = int(torch.randint(3, 18, (1,), generator=g))
        row = torch.randint(10, 97, (length,), generator=g).tolist()
        if i % 2:
            row[int(torch.randint(0, length, (1,), generator=g))] = 7
        ids.append(row)
        labels.append(i % 2)
    return TokenizedSplit(ids, labels, 0)


def no_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    if hasattr(model.config, "attention_dropout"):
        model.config.attention_dropout = 0.0
    for module in model.modules():  # Llama keeps the attention dropout as a float on the module
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
    return model


def toy_session(family: str = "bert", task: str = "classification", dropout: bool = True, n_train: int = 80,
                **kwargs) -> Session:
    model = tiny_model(family, task, num_labels=2)
    if not dropout:
        no_dropout(model)
    if task == "classification":
        splits = {"train": toy_classification(n_train, 0), "validation": toy_classification(40, 1),
                  "test": toy_classification(24, 2)}
    else:
        g = torch.Generator().manual_seed(0)
        rows = [torch.randint(1, 97, (int(torch.randint(5, 17, (1,), generator=g)),), generator=g).tolist()
                for _ in range(24)]
        splits = {name: TokenizedSplit(rows, None, 0) for name in ("train", "validation", "test")}
    return Session(model, arch_from_config(model.config), task, splits, pad_token_id=0, **kwargs)


def base_state(session: Session) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in session.model.state_dict().items()}


def first_step(session: Session, plan, config, probe: nn.Module):
    """Step 0 through the trainer's code path: (loss, gradients, the (dim 0, dim 1) shapes of ``probe``'s
    first input on each call, the batch)."""
    from autopeft.peft.unpad import active_packing

    shapes: list[torch.Size] = []
    hook = probe.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append((args[0] if args else kwargs["hidden_states"]).shape[:2]),
        with_kwargs=True)
    try:
        with start_run(session, plan, config) as run:
            batch = next(session.train_batches(config))
            session.model.train()
            loss, regularization = run.step_loss(batch)
            (loss if regularization is None else loss + regularization).backward()
            session.model.eval()
            assert active_packing() is None
            return loss.detach(), {n: p.grad.clone() for n, p in run._named if p.grad is not None}, shapes, batch
    finally:
        hook.remove()
