"""The supernet: every candidate of a space injected at once, each slice behind its budget gate.

:func:`build_supernet` injects one plan holding each unit's every method at its largest size (so a site
may carry LoRA and an adapter, or a serial and a parallel adapter, side by side) and hands it to a
:class:`Supernet`, which trains through the ordinary :class:`~autopeft.training.trial_run.TrialRun` (it has
the handle's interface): before every forward of the model, the gates' openings ``p`` (expected cost =
budget, :mod:`autopeft.oneshot.gates`) are spread over the inner dimensions of the modules (``inner_gate``
of LoRA, DoRA, bottleneck and prefix modules: rank dimension, bottleneck unit or prefix position ``d`` of a
method gets the opening of the slice holding ``d``; a prefix position's opening ``g`` weighs its attention
by ``g``, see :func:`autopeft.peft.attention.extend_with_prefix`), and after every optimizer step the
temperature follows its schedule. ``remove()`` takes the
supernet out; the base model is bitwise what it was (the injection handle's guarantee).

The scores learn with the adapters' optimizer as ``raw = score / SCORE_SCALE``, so that Adam's
per-step move of about ``lr`` in ``raw`` is ``SCORE_SCALE * lr`` in the score: structure decisions
move ~50x faster than weights, as DARTS-style searches give their architecture parameters their own,
larger learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from autopeft.core.arch import ModelArch
from autopeft.core.choices import SupernetTraining
from autopeft.core.errors import UserError
from autopeft.oneshot.candidates import Slice, candidates
from autopeft.oneshot.gates import BudgetGates, SliceSpec
from autopeft.oneshot.subnets import random_subnet
from autopeft.peft.inject import InjectionHandle, inject
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.space.search_space import SearchSpace

# modules with an ``inner_gate`` over their inner dimensions: rank, bottleneck width, prefix positions
INNER_GATED = ("lora", "dora", "adapter", "parallel_adapter", "prefix", "ptuning_v2")
# gated on their output, y + g (method(x, y) - y), by a forward hook, with their first slice's opening:
# the methods of one slice (no size), and DoRA, whose magnitude rescales the output whatever its rank
# (so that closed is the base). (IA)^3's input scaling (on a down projection) reads ``inner_gate``
# instead, as it changes the input, not the output.
OUTPUT_GATED = ("bitfit", "ia3", "ln_tuning", "dora")
GATED_METHODS = tuple(dict.fromkeys(INNER_GATED + OUTPUT_GATED))
SCORE_SCALE = 50.0
SCORES_KEY = "oneshot.scores"
TAU_KEY = "oneshot.tau"  # saved with the scores: a run resumed at step k continues at its temperature
TAU_START, TAU_END = 1.0, 0.05


def supernet_plan(slices: list[Slice]) -> Plan:
    """Each (unit, method) at its largest size."""
    largest: dict[tuple[str, str], Slice] = {}
    for s in slices:
        largest[(s.unit, s.method)] = s  # slices come smallest first
    return Plan(tuple(PlanEntry(s.method, s.layers, s.sites, s.choice().options) for s in largest.values()))


class Supernet:
    def __init__(self, handle: InjectionHandle, slices: list[Slice], budget: float,
                 tau: tuple[float, float] = (TAU_START, TAU_END), training: SupernetTraining = "gates") -> None:
        self.handle = handle
        self.training = training
        self.slices = slices
        self.gates = BudgetGates([SliceSpec(s.cost, s.parent, s.unit) for s in slices], budget, SCORE_SCALE)
        self.tau_start, self.tau_end = tau
        self.tau = self.tau_start
        # (module, the slice index of each inner dimension): module.inner_gate = p[that index]
        self._targets: list[tuple[nn.Module, torch.Tensor]] = []
        by_method: dict[tuple[str, str], list[Slice]] = {}
        for s in slices:
            by_method.setdefault((s.unit, s.method), []).append(s)
        self._hooks = []
        self._p: torch.Tensor | None = None  # this forward's openings (set by the model's pre-hook)
        self.fixed_openings: torch.Tensor | None = None
        for group in by_method.values():
            first = group[0]
            for layer in first.layers:
                for site in first.sites:
                    module = handle.modules[f"layers.{layer}.{site}.{first.method}"]
                    scales_input = hasattr(module, "transform_input")  # (IA)^3 on a down projection
                    if first.method in INNER_GATED or scales_input:
                        widths = torch.tensor([max(1, s.size - s.start) for s in group])
                        self._targets.append((module, torch.repeat_interleave(
                            torch.tensor([s.index for s in group]), widths)))
                    if first.method in OUTPUT_GATED and not scales_input:
                        self._hooks.append(module.register_forward_hook(self._output_gate(first.index)))
        self._hooks.append(handle.model.register_forward_pre_hook(self._open))

    # --- gates --------------------------------------------------------------------------------
    def openings(self) -> torch.Tensor:
        if self.fixed_openings is not None:  # a readout evaluated inside the supernet: its slices open, no others
            return self.fixed_openings
        if self.training == "subnets" and self.handle.model.training:
            # drawn from the global RNG, which the trial loop re-seeds from (seed, step) before every
            # step: a resumed run trains the same sub-networks
            kept = random_subnet(self.gates.slices, self.gates.budget, lambda: float(torch.rand(())))
            hard = torch.zeros_like(self.gates.raw, requires_grad=False)
            hard[kept] = 1.0
            return hard
        return self.gates(self.tau)

    def _open(self, _module: nn.Module, _args: Any) -> None:
        p = self._p = self.openings()
        for module, dims in self._targets:
            module.inner_gate = p[dims.to(p.device)]

    def _output_gate(self, index: int):
        def hook(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            y = args[1]  # the method's input output, forward(x, y)
            assert self._p is not None
            return y + (self._p[index] * (output - y)).to(y.dtype)
        return hook

    # --- the handle's interface, for TrialRun ------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        return self.handle.model

    @property
    def plan(self) -> Plan:
        return self.handle.plan

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        yield from self.handle.trainable_parameters()
        if self.training == "gates":
            yield SCORES_KEY, self.gates.raw

    def regularization(self) -> torch.Tensor | None:
        return self.handle.regularization()

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        self.handle.after_optimizer_step(step, total_steps)
        # geometric annealing from tau_start to tau_end over the run
        fraction = min(1.0, step / max(1, total_steps))
        self.tau = math.exp(math.log(self.tau_start) + fraction * (math.log(self.tau_end) - math.log(self.tau_start)))

    def state_dict(self, folded: bool = True) -> dict[str, torch.Tensor]:
        return {**self.handle.state_dict(folded), SCORES_KEY: self.gates.raw.detach(),
                TAU_KEY: torch.tensor(self.tau, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, torch.Tensor], source: str = "adapter") -> None:
        state = dict(state)
        tau = state.pop(TAU_KEY, None)
        if tau is not None:
            self.tau = float(tau)
        scores = state.pop(SCORES_KEY, None)
        if scores is not None:
            with torch.no_grad():
                self.gates.raw.copy_(scores)
        self.handle.load_state_dict(state, source)

    def num_adapter_params(self) -> int:
        return self.handle.num_adapter_params()

    def num_head_params(self) -> int:
        return self.handle.num_head_params()

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        for module, _ in self._targets:
            module.inner_gate = None
        self.handle.remove()

    # --- readout -----------------------------------------------------------------------------------
    def readout(self, budget: float) -> list[int]:
        return self.gates.readout(budget)


def build_supernet(model: nn.Module, arch: ModelArch, space: SearchSpace, budget: float,
                   train_head: bool = True, training: SupernetTraining = "gates") -> Supernet:
    slices = candidates(space, arch)
    unsupported = sorted({s.method for s in slices} - set(GATED_METHODS))
    if unsupported:
        # soft prompts: a virtual token's opening would have to reach every layer's attention mask
        raise UserError(f"--strategy oneshot: the supernet gates {', '.join(GATED_METHODS)}; space "
                        f"'{space.name}' also offers {', '.join(unsupported)}: use a space without them")
    handle = inject(model, supernet_plan(slices), arch, train_head=train_head)
    return Supernet(handle, slices, budget, training=training)
