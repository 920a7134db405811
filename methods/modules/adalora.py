"""AdaLoRA's modules (the method, its config, schedule and count: :mod:`autopeft.methods.adalora`).

``SVDDelta`` is one site's update s * P (Λ ⊙ (Q dropout(x))); ``RankBudget`` is the rank budget all of a plan's
``SVDDelta`` s share. Both read their schedule from the ``config`` they are given, an
:class:`~autopeft.methods.adalora.AdaLoRAConfig` (by attribute: this file does not import the method file,
which imports it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from autopeft.core.errors import UserError


class SVDDelta(nn.Module):
    def __init__(self, in_features: int, out_features: int, config: Any) -> None:
        super().__init__()
        r = config.init_r
        self.lora_A = nn.Parameter(torch.randn(r, in_features) * 0.02)  # Q: right singular vectors
        self.lora_E = nn.Parameter(torch.zeros(r))  # Λ: singular values
        self.lora_B = nn.Parameter(torch.randn(out_features, r) * 0.02)  # P: left singular vectors
        self.register_buffer("rank_mask", torch.ones(r))  # 1 = rank kept; saved with the adapter
        for name in ("A", "E", "B"):  # importance EMAs (Ī, Ū): training state, not saved
            shape = getattr(self, f"lora_{name}").shape
            self.register_buffer(f"_ipt_{name}", torch.zeros(shape), persistent=False)
            self.register_buffer(f"_unc_{name}", torch.zeros(shape), persistent=False)
        self.config = config
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.budget: RankBudget | None = None  # set by AdaLoRA.link; plain attribute, not a submodule

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x: (..., d_in) -> (..., r) -> (..., d_out)
        hidden = (self.dropout(x).to(self.lora_A.dtype) @ self.lora_A.T) * self.lora_E
        return y + (hidden @ self.lora_B.T * self.scaling).to(y.dtype)

    def delta_weight(self) -> torch.Tensor:
        """s * P diag(Λ) Q: the (d_out, d_in) update this module adds to the site's weight."""
        return self.scaling * (self.lora_B @ (self.lora_A * self.lora_E[:, None]))

    def regularization(self) -> torch.Tensor:
        a, b = self.lora_A.float(), self.lora_B.float()
        eye = torch.eye(a.shape[0], device=a.device)
        norms = torch.linalg.matrix_norm(a @ a.T - eye) + torch.linalg.matrix_norm(b.T @ b - eye)
        matrices = 2 * (len(self.budget.modules) if self.budget is not None else 1)
        return self.config.orth_reg_weight * norms / matrices

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        if self.budget is not None:
            self.budget.step(step, total_steps)

    # --- importance ---------------------------------------------------------------------------
    @torch.no_grad()
    def update_importance(self, beta1: float, beta2: float) -> None:
        for name in ("A", "E", "B"):
            p = getattr(self, f"lora_{name}")
            if p.grad is None:
                continue
            ipt = (p * p.grad).abs()
            avg, unc = getattr(self, f"_ipt_{name}"), getattr(self, f"_unc_{name}")
            avg.mul_(beta1).add_((1 - beta1) * ipt)
            unc.mul_(beta2).add_((1 - beta2) * (ipt - avg).abs())

    def triplet_scores(self) -> torch.Tensor:
        """(r,) score of each rank: s(λ_i) + mean_j s(Q_ij) + mean_j s(P_ji)."""
        score = {n: getattr(self, f"_ipt_{n}") * getattr(self, f"_unc_{n}") for n in ("A", "E", "B")}
        return score["E"] + score["A"].mean(dim=1) + score["B"].mean(dim=0)

    def reset_importance(self) -> None:
        for buffer_name, buffer in self.named_buffers():
            if buffer_name.startswith(("_ipt_", "_unc_")):
                buffer.zero_()

    @torch.no_grad()
    def apply_mask(self, keep: torch.Tensor | None = None) -> None:
        if keep is not None:
            self.rank_mask.copy_(keep.to(self.rank_mask.dtype))
        self.lora_E.mul_(self.rank_mask)


class RankBudget:
    """The rank budget shared by every AdaLoRA module of one injected plan (global allocation)."""

    def __init__(self, modules: list[SVDDelta]) -> None:
        self.modules = modules
        self.config = modules[0].config
        self.init_budget = sum(m.config.init_r for m in modules)
        self.target_budget = sum(m.config.target_r for m in modules)
        self.last_step = 0

    def phases(self, total_steps: int) -> tuple[int, int, int]:
        """(t_init, t_final, delta_t) in steps for a run of ``total_steps``."""
        c = self.config
        return (round(c.tinit * total_steps), round(c.tfinal * total_steps),
                max(1, round(c.delta_t * total_steps)))

    def budget(self, step: int, total_steps: int) -> tuple[int, bool]:
        """(total rank allowed, whether to re-mask) after optimizer step ``step`` (1-based)."""
        t_init, t_final, delta_t = self.phases(total_steps)
        if step <= t_init:
            return self.init_budget, False
        if step >= total_steps - t_final:
            return self.target_budget, True
        span = max(1, total_steps - t_final - t_init)
        remaining = 1 - (step - t_init) / span
        budget = int((self.init_budget - self.target_budget) * remaining ** 3 + self.target_budget)
        return budget, step % delta_t == 0

    def step(self, step: int, total_steps: int) -> None:
        """Update importance and re-allocate ranks; runs once per step whichever module calls it."""
        if step == self.last_step:
            return
        self.last_step = step
        _, t_final, _ = self.phases(total_steps)
        final_step = total_steps - t_final
        if step > final_step:  # final phase: keep the final pattern (the optimizer may revive λ)
            for m in self.modules:
                m.apply_mask()
            return
        if step < final_step:
            for m in self.modules:
                m.update_importance(self.config.beta1, self.config.beta2)
        budget, remask = self.budget(step, total_steps)
        if remask:
            self.mask_to(budget)
        if step == final_step:
            for m in self.modules:
                m.reset_importance()

    @torch.no_grad()
    def mask_to(self, budget: int) -> None:
        """Keep the ``budget`` highest-scoring ranks over all modules (ties at the threshold are pruned)."""
        scores = [m.triplet_scores() for m in self.modules]
        prune = self.init_budget - budget
        if prune <= 0:
            return
        threshold = torch.kthvalue(torch.cat(scores).float().cpu(), prune).values.item()
        for m, s in zip(self.modules, scores, strict=True):
            m.apply_mask(s > threshold)

    def ranks(self) -> list[int]:
        return [int(m.rank_mask.sum().item()) for m in self.modules]


def link(modules: list[nn.Module]) -> None:
    """One rank budget for all AdaLoRA modules of the plan; their schedules must agree."""
    svd = [m for m in modules if isinstance(m, SVDDelta)]
    keys = {m.config.schedule_key() for m in svd}
    if len(keys) > 1:
        raise UserError("all adalora entries of a plan share one rank budget: give them the same "
                        "tinit, tfinal, delta_t, beta1, beta2 and orth_reg_weight")
    budget = RankBudget(svd)
    for m in svd:
        m.budget = budget


def merge_svd(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    assert isinstance(module, SVDDelta)
    return weight + module.delta_weight().to(weight), bias
