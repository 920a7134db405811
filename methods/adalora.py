"""AdaLoRA (Zhang et al., 2023): an SVD-form low-rank update whose ranks are pruned by importance.

    y = W x + b + s * P (Λ ⊙ (Q dropout(x))),   Q: (r, d_in), Λ: (r,), P: (d_out, r),  s = alpha / r

with r = ``init_r``. Every triplet (P_i, λ_i, Q_i) is one rank. During training, after every optimizer
step (``after_optimizer_step``), one :class:`RankBudget` shared by *all* AdaLoRA modules of the plan
scores the triplets and zeroes λ of the least important ones, so that the total rank kept across all
sites falls from Σ init_r to the target Σ target_r — sites compete for rank globally:

- importance of every entry: I = |w ⊙ ∂L/∂w|, smoothed Ī ← β1 Ī + (1-β1) I, uncertainty
  Ū ← β2 Ū + (1-β2) |I - Ī|, score s(w) = Ī ⊙ Ū; a triplet scores s(λ_i) + mean_j s(Q_ij) + mean_j s(P_ji);
- the budget follows the paper's cubic schedule: Σ init_r for the first ``tinit`` steps, then
  b(t) = target + (init - target) (1 - (t - t_i)/(T - t_f - t_i))^3, re-masking every ``delta_t`` steps,
  the target at step T - t_f, after which the final pattern is re-applied every step (``tfinal``);
  ``tinit``, ``tfinal`` and ``delta_t`` are fractions of the run's T steps;
- the orthogonality regulariser R = w_orth * mean over all P and Q of ||P^T P - I||_F, ||Q Q^T - I||_F
  (``regularization``, added to the loss by the trainer).

Pruned ranks stay in the adapter (λ_i = 0, ``rank_mask`` records which): the parameter count is that of
the full initial rank, r * (d_in + d_out + 1) per site, fixed before training like every other method.

HF peft mapping (``AdaLoraConfig``): ``init_r``/``target_r``/``beta1``/``beta2``/``orth_reg_weight`` are the
same; ``tinit``/``tfinal``/``deltaT`` are step counts there (round(fraction * T) here); Q, Λ, P are peft's
``lora_A`` (r, d_in), ``lora_E`` (r, 1) and ``lora_B`` (d_out, r); peft scales by alpha / (r + 1e-5),
autopeft by alpha / r (a 1e-6 relative difference). Initialisation as in peft: Λ = 0 (identity at init),
P, Q ~ N(0, 0.02²). Steps are 1-based here (the step count after the optimizer step), so the target
budget is reached at the run's last step even with ``tfinal = 0``.

The modules (``SVDDelta``, and ``RankBudget``, the budget they share) are in :mod:`autopeft.methods.modules.adalora`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopeft.methods.base import Placement, positive, register

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from autopeft.core.arch import LinearSite, ModelArch


@dataclass(frozen=True)
class AdaLoRAConfig:
    init_r: int = 12
    target_r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    tinit: float = 0.1
    tfinal: float = 0.2
    delta_t: float = 0.02
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5

    def __post_init__(self) -> None:
        positive("init_r", self.init_r)
        positive("target_r", self.target_r)
        positive("alpha", self.alpha)
        if self.target_r > self.init_r:
            raise ValueError(f"target_r ({self.target_r}) must be <= init_r ({self.init_r})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tinit < 0 or self.tfinal < 0 or self.tinit + self.tfinal >= 1:
            raise ValueError(f"tinit and tfinal are fractions of the run with tinit + tfinal < 1, "
                             f"got {self.tinit} and {self.tfinal}")
        if not 0 < self.delta_t <= 1:
            raise ValueError(f"delta_t is a fraction of the run in (0, 1], got {self.delta_t}")
        for name in ("beta1", "beta2"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.orth_reg_weight < 0:
            raise ValueError(f"orth_reg_weight must be >= 0, got {self.orth_reg_weight}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.init_r

    def schedule_key(self) -> tuple[float, ...]:
        return (self.tinit, self.tfinal, self.delta_t, self.beta1, self.beta2, self.orth_reg_weight)


@register
class AdaLoRA:
    name = "adalora"
    summary = "SVD-form LoRA whose ranks are pruned by importance towards a global target rank"
    placement = Placement.LINEAR
    stage = 0
    config_cls = AdaLoRAConfig
    sites = None
    identity_at_init = True

    def num_params(self, config: AdaLoRAConfig, arch: ModelArch, site: LinearSite | None) -> int:
        assert site is not None
        return config.init_r * (site.in_features + site.width + 1)

    def build(self, config: AdaLoRAConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        from autopeft.methods.modules.adalora import SVDDelta

        assert site is not None
        return SVDDelta(site.in_features, site.width, config)

    def link(self, modules: list[nn.Module]) -> None:
        """One rank budget for all AdaLoRA modules of the plan; their schedules must agree."""
        from autopeft.methods.modules.adalora import link

        link(modules)

    def merge(self, module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from autopeft.methods.modules.adalora import merge_svd

        return merge_svd(module, weight, bias)


def __getattr__(name: str) -> Any:
    """The modules (torch), for callers that import them from here; they live in the modules file."""
    if name in ("SVDDelta", "RankBudget"):
        from autopeft.methods.modules import adalora

        return getattr(adalora, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
