"""Measuring the real peak memory of one training step, to check :mod:`autopeft.memory.estimate` against.

What is measured is *allocated tensor memory* (what ``torch.cuda.max_memory_allocated`` reports on
CUDA), never process RSS:

- on CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``;
- on CPU, torch's profiler with ``profile_memory=True`` records every allocation and free of the CPU
  allocator (tensor storages and kernels' scratch buffers alike); the running sum of those events,
  in time order, peaks at the step's peak.

Both report the peak *above* what was allocated when the step started; :func:`resident_bytes` counts
what the model and the batch already hold (unique storages), and the two add up to the step's peak.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn as nn


def resident_bytes(model: nn.Module, extra: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the unique storages behind the model's parameters and buffers and ``extra`` tensors."""
    seen: dict[int, int] = {}
    tensors = [*model.parameters(), *model.buffers(), *extra]
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
    return sum(seen.values())


def peak_during(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak of newly allocated bytes (above the allocation level at the start) while ``fn()`` runs."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()  # type: ignore[union-attr]
              if e.name() == "[memory]" and e.device_type().name == "CPU"]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for event in events:
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def quantization_constants(model: nn.Module) -> list[torch.Tensor]:
    """bitsandbytes' per-block constants (absmax, code, nested state): attributes, not parameters."""
    out: list[torch.Tensor] = []
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        while state is not None:
            out += [t for t in (getattr(state, "absmax", None), getattr(state, "code", None),
                                getattr(state, "offset", None)) if isinstance(t, torch.Tensor)]
            state = getattr(state, "state2", None)
        scale = getattr(p, "SCB", None)
        if isinstance(scale, torch.Tensor):
            out.append(scale)
    return out


def measure_training_step(model: nn.Module, plan, task: str, batch_size: int, seq_len: int,
                          precision: str = "bf16", seed: int = 0, short_rows: int = 0) -> int:
    """Peak allocated bytes of one steady-state training step of ``plan`` with autopeft's trainer.

    Builds a :class:`~autopeft.training.session.Session` on a synthetic split of ``batch_size`` examples of
    ``seq_len`` tokens (the last one a token shorter, so every batch is padded like real data; with
    ``short_rows`` = m, the last m rows are half as long: a batch the trainer runs padding-free), runs
    one warm-up step (which creates the optimizer's states), then measures the second step:
    resident bytes (model, adapter, head, optimizer states, quantization constants, the trainer's bf16
    weight copies) + the step's peak.
    """
    from autopeft.core.arch import arch_from_config
    from autopeft.training.config import TrainConfig
    from autopeft.training.data import TokenizedSplit
    from autopeft.training.session import Session
    from autopeft.training.trial_run import start_run

    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    def length(i: int) -> int:
        if i >= batch_size - short_rows:
            return max(1, seq_len // 2)
        return seq_len - (i == batch_size - 1 and batch_size > 1)

    rows = [torch.randint(3, vocab, (length(i),), generator=generator).tolist() for i in range(batch_size)]
    labels = [i % 2 for i in range(batch_size)] if task == "classification" else None
    split = TokenizedSplit(rows, labels, 0)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    session = Session(model, arch_from_config(model.config), task, {"train": split, "validation": split},  # type: ignore[arg-type]
                      pad_token_id=pad)
    config = TrainConfig(steps=3, batch_size=batch_size, precision=precision, seed=seed)  # type: ignore[arg-type]
    with start_run(session, plan, config) as run:
        run.advance(1)
        states = [t for state in (run.optimizer.state.values() if run.optimizer else [])
                  for t in state.values() if isinstance(t, torch.Tensor)]
        device = next(model.parameters()).device
        resident = resident_bytes(model, [*states, *quantization_constants(model)])
        # the trainer's session-long bf16 copies of frozen projections (autopeft/peft/precision.py), if any
        frozen = getattr(session, "frozen", None)
        resident += frozen.nbytes() if frozen is not None and hasattr(frozen, "nbytes") else 0
        return resident + peak_during(lambda: run.advance(2), device)
