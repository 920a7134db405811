"""One plan's training run, taken in pieces: advance, evaluate, checkpoint, resume.

Multi-fidelity search trains a plan to a rung (say 50 steps), compares it with other plans, and may
later continue it to the next rung. For the continued run to be *the same run*, everything a step
depends on is a function of the step index, not of the history of the process:

- the learning rate is ``lr * schedule(step)`` with linear warm-up over ``warmup_ratio * steps`` and
  linear decay to 0 at ``config.steps`` (the run's full length, whatever rung it is at);
- the batch at step ``t`` is batch ``t`` of the seeded data order (:meth:`Session.train_batches`);
- the torch RNG (dropout) is re-seeded from ``(seed, t)`` before step ``t``;
- AdamW's moments and step counts are part of the checkpoint.

So ``advance(50); checkpoint(); ... resume(); advance(150)`` equals ``advance(150)`` bitwise on CPU
(tested). A :class:`Checkpoint` is one safetensors file: the adapter and head weights (the handle's
state dict), the optimizer's tensors as ``optim.<param>.<key>``, and JSON metadata (step, losses).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from autopeft.core.errors import UserError
from autopeft.peft.inject import HEAD_PREFIX, InjectionHandle, inject
from autopeft.peft.plan import Plan
from autopeft.peft.unpad import unpadded
from autopeft.training.config import TrainConfig
from autopeft.training.fastpath.activation_cache import FrozenPrefix, first_trained_layer
from autopeft.training.fastpath.head_rows import head_rows_only
from autopeft.training.fastpath.step_kernels import cpu_step_kernels, make_optimizer, training_attention
from autopeft.training.session import Metrics, Session, TrialOutcome

CHECKPOINT_FORMAT = 1
_OPTIM = "optim."


def lr_factor(step: int, total_steps: int, warmup_ratio: float) -> float:
    """Multiplier of the base learning rate for the optimizer step with 0-based index ``step``."""
    warmup = max(1, int(warmup_ratio * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63 - 1)


@dataclass
class Checkpoint:
    step: int
    state: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    step_times: list[float] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        """Atomically write one safetensors file (temporary file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {**{k: v.contiguous() for k, v in self.state.items()},
                   **{_OPTIM + k: v.contiguous() for k, v in self.optimizer.items()}}
        meta = {"format": str(CHECKPOINT_FORMAT), "step": str(self.step), "losses": json.dumps(self.losses),
                "train_seconds": repr(self.train_seconds), "step_times": json.dumps(self.step_times)}
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        path = Path(path)
        try:
            tensors = load_file(str(path))
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"checkpoint {path} is corrupted or truncated ({exc})") from None
        if int(meta.get("format", "0")) != CHECKPOINT_FORMAT:
            raise UserError(f"checkpoint {path} has format {meta.get('format')!r}; this autopeft reads "
                            f"format {CHECKPOINT_FORMAT}")
        state = {k: v for k, v in tensors.items() if not k.startswith(_OPTIM)}
        optimizer = {k[len(_OPTIM):]: v for k, v in tensors.items() if k.startswith(_OPTIM)}
        return cls(int(meta["step"]), state, optimizer, json.loads(meta["losses"]), float(meta["train_seconds"]),
                   json.loads(meta.get("step_times", "[]")))


class TrialRun:
    """A plan injected into the session's model, with its optimizer; ``close()`` removes the plan."""

    def __init__(self, session: Session, handle: InjectionHandle, config: TrainConfig) -> None:
        self.session = session
        self.handle = handle
        self.config = config
        self.recipe = session.recipe(config)  # every switch of the step, as the memory estimator sees it
        self.step = 0
        self.losses: list[float] = []
        self.step_times: list[float] = []
        self.train_seconds = 0.0
        self._named = list(handle.trainable_parameters())
        self._params = [p for _, p in self._named]
        for param in self._params:  # the head is shared by all trials: no gradient left by an earlier one
            param.grad = None
        head = [p for name, p in self._named if name.startswith(HEAD_PREFIX)]
        self.optimizer = make_optimizer(self._params, config.lr, config.weight_decay, head, config.head_lr_scale)
        # the plan's first layer k: the hidden states entering it come from the session's cache
        self.prefix_layer = first_trained_layer(handle.plan, session.arch)
        self.prefix = FrozenPrefix(session, self.prefix_layer if config.cache_dtype else 0, config.cache_dtype)
        if self.recipe.compile:  # the plan's modules are in place: compile this structure (undone by close())
            session.model.compile(dynamic=True)

    # --- training -------------------------------------------------------------------------
    def advance(self, to_step: int, progress: Callable[[int, float], None] | None = None) -> None:
        """Train until ``to_step`` optimizer steps are done (at most ``config.steps``)."""

        config, session = self.config, self.session
        to_step = min(to_step, config.steps)
        if to_step <= self.step:
            return
        batches = session.train_batches(config, skip=self.step)
        session.model.train()
        try:
            with session.frozen.cast(self.recipe.frozen_bf16_copies):
                self._advance(to_step, batches, progress)
        finally:
            session.model.eval()

    def step_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The training forward of one batch (the model in train mode): loss and the plan's regulariser.

        Cached frozen prefix, CPU attention kernels and dropout, padding-free blocks, a last block on the
        head's rows only: see the modules."""
        recipe, session = self.recipe, self.session
        width = batch["input_ids"].shape[1]
        with session.autocast(recipe.autocast_bf16):
            hidden = self.prefix.train_hidden("train", batch["index"].tolist(), width) if self.prefix.active else None
            with (self.prefix.feeding(hidden), training_attention(session.model, recipe.eager_attention(width)),
                  cpu_step_kernels(recipe.cpu_kernels),
                  unpadded(session.model, session.arch, batch["attention_mask"], recipe.pack_multiple,
                           enabled=recipe.unpad),
                  head_rows_only(session.model, session.arch, batch["attention_mask"], session.task,
                                 enabled=recipe.head_rows)):
                loss = session.loss(batch)
            return loss, self.handle.regularization()

    def _advance(self, to_step: int, batches, progress: Callable[[int, float], None] | None) -> None:
        from autopeft.training.session import DivergedError

        config = self.config
        while self.step < to_step:
            t0 = time.perf_counter()
            step = self.step
            torch.manual_seed(step_seed(config.seed, step))
            batch = next(batches)
            loss, regularization = self.step_loss(batch)
            if not torch.isfinite(loss):
                raise DivergedError(f"training loss is {loss.item()} at step {step}")
            if self.optimizer is not None:
                factor = lr_factor(step, config.steps, config.warmup_ratio)
                for group in self.optimizer.param_groups:  # a checkpoint from before head_lr_scale has no lr_scale
                    group["lr"] = config.lr * group.get("lr_scale", 1.0) * factor
                (loss if regularization is None else loss + regularization).backward()
                torch.nn.utils.clip_grad_norm_(self._params, config.max_grad_norm)
                self.optimizer.step()
                self.handle.after_optimizer_step(step + 1, config.steps)
                self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.losses.append(loss.item())
            elapsed = time.perf_counter() - t0
            self.step_times.append(elapsed)
            self.train_seconds += elapsed
            if progress is not None:
                progress(self.step, self.losses[-1])

    def evaluate(self, split: str = "validation") -> Metrics:
        return self.session.evaluate(split, self.config, prefix_layer=self.prefix_layer)

    # --- results --------------------------------------------------------------------------
    @property
    def train_loss(self) -> float:
        """Mean training loss over the last 10% of the steps done."""
        if not self.losses:
            return float("nan")
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return sum(tail) / len(tail)

    @property
    def median_step_time(self) -> float:
        times = sorted(self.step_times[1:] or self.step_times)
        return times[len(times) // 2] if times else 0.0

    def state(self) -> dict[str, torch.Tensor]:
        """Adapter and head weights, detached copies on the CPU (what ``adapter.safetensors`` holds)."""
        return {k: v.detach().cpu().clone() for k, v in self.handle.state_dict().items()}

    def outcome(self, validation: Metrics) -> TrialOutcome:
        return TrialOutcome(
            plan=self.handle.plan, config=self.config, validation=validation, train_loss=self.train_loss,
            adapter_params=self.handle.num_adapter_params(), head_params=self.handle.num_head_params(),
            duration_s=self.train_seconds, step_time_s=self.median_step_time, state=self.state(),
        )

    # --- checkpoints ----------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        optimizer: dict[str, torch.Tensor] = {}
        if self.optimizer is not None:
            for name, param in self._named:
                for key, value in self.optimizer.state.get(param, {}).items():
                    if isinstance(value, torch.Tensor):
                        optimizer[f"{name}.{key}"] = value.detach().cpu().clone()
        state = {k: v.detach().cpu().clone() for k, v in self.handle.state_dict(folded=False).items()}
        return Checkpoint(self.step, state, optimizer, list(self.losses), self.train_seconds,
                          list(self.step_times))

    def restore(self, checkpoint: Checkpoint) -> None:
        device = self.session.device
        self.handle.load_state_dict({k: v.to(device) for k, v in checkpoint.state.items()}, source="checkpoint")
        if self.optimizer is not None and checkpoint.optimizer:
            for name, param in self._named:
                keys = {k[len(name) + 1:]: v for k, v in checkpoint.optimizer.items()
                        if k.startswith(name + ".") and "." not in k[len(name) + 1:]}
                if keys:
                    self.optimizer.state[param] = {
                        k: (v.to(device) if k != "step" else v) for k, v in keys.items()}
        self.step = checkpoint.step
        self.losses = list(checkpoint.losses)
        self.train_seconds = checkpoint.train_seconds
        self.step_times = list(checkpoint.step_times)

    # --- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        if self.recipe.compile:
            self.session.model._compiled_call_impl = None  # what nn.Module.compile() set
        self.handle.remove()

    def __enter__(self) -> TrialRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_run(session: Session, plan: Plan, config: TrainConfig) -> TrialRun:
    """Inject ``plan`` (with a freshly seeded head) and return its run at step 0; ``close()`` removes it."""
    torch.manual_seed(config.seed)
    session.reset_head(config.seed)
    handle = inject(session.model, plan, session.arch, train_head=session.task == "classification")
    return TrialRun(session, handle, config)


def resume_run(session: Session, plan: Plan, config: TrainConfig, checkpoint: Checkpoint) -> TrialRun:
    """A run restored from ``checkpoint`` (adapter, head, optimizer state, step)."""
    run = start_run(session, plan, config)
    try:
        run.restore(checkpoint)
    except BaseException:
        run.close()
        raise
    return run


def train_plan(session: Session, plan: Plan, config: TrainConfig,
               progress: Callable[[int, float], None] | None = None) -> TrialOutcome:
    """Train ``plan`` for ``config.steps`` steps, evaluate on validation, remove it again."""
    with start_run(session, plan, config) as run:
        run.advance(config.steps, progress)
        return run.outcome(run.evaluate("validation"))
