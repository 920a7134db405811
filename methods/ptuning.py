"""P-tuning (Liu et al., 2021, "GPT understands, too"): virtual tokens produced by a prompt encoder.

P trainable embeddings E (P, d), E ~ N(0, 1), go through an encoder whose output Z (P, d) is prepended to the input
embeddings like a soft prompt (``autopeft.peft.prompting``; site ``input``, the entry's layers do not apply):

- ``mlp``:  Z = W_3 relu(W_2 relu(W_1 E^T + b_1) + b_2) + b_3,  W_1: (m, d), W_2: (m, m), W_3: (d, m)
- ``lstm``: Z = MLP(BiLSTM_2(E)),  a 2-layer bidirectional LSTM of hidden size m, then
  Linear(2m, 2m) -> relu -> Linear(2m, d)

with m = ``hidden``: the architecture of HF peft's PromptEncoder (P_TUNING). Virtual tokens are
prepended (as in peft), not interleaved with the input as in the paper's templates.
Parameters (all trainable, counted exactly): P d plus the encoder's,
mlp: (d + 1) m + (m + 1) m + (m + 1) d;
lstm: 2 [4m (d + m) + 8m] + 2 [4m (2m + m) + 8m] + (2m + 1) 2m + (2m + 1) d.
The count while training is the plan's count and what the budget caps. The encoder only eases
optimisation: the adapter file stores Z itself (``input.ptuning.prompt``, via ``folded_tensors``) and
loading folds the module into that plain prompt, so inference never runs the encoder.
Not the identity at initialisation (every real token attends to the virtual tokens).
The module (``PromptEncoder``) is in :mod:`autopeft.methods.modules.ptuning`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from autopeft.core.arch import INPUT_SITE
from autopeft.methods.base import Placement, positive, register

if TYPE_CHECKING:
    import torch.nn as nn

    from autopeft.core.arch import ModelArch


@dataclass(frozen=True)
class PTuningConfig:
    length: int = 8
    encoder: Literal["mlp", "lstm"] = "mlp"
    hidden: int = 128  # m, the encoder's hidden size

    def __post_init__(self) -> None:
        positive("length", self.length)
        positive("hidden", self.hidden)


def encoder_params(config: PTuningConfig, d: int) -> int:
    m = config.hidden
    if config.encoder == "mlp":
        return (d + 1) * m + (m + 1) * m + (m + 1) * d
    lstm = 2 * (4 * m * (d + m) + 8 * m) + 2 * (4 * m * (2 * m + m) + 8 * m)  # 2 layers x 2 directions
    return lstm + (2 * m + 1) * 2 * m + (2 * m + 1) * d


@register
class PTuning:
    name = "ptuning"
    summary = "virtual tokens produced by a prompt encoder (MLP or LSTM), prepended to the input embeddings"
    placement = Placement.INPUT
    stage = 0
    config_cls = PTuningConfig
    sites = (INPUT_SITE,)
    identity_at_init = False

    def num_params(self, config: PTuningConfig, arch: ModelArch, site: None) -> int:
        return config.length * arch.hidden + encoder_params(config, arch.hidden)

    def build(self, config: PTuningConfig, arch: ModelArch, site: None) -> nn.Module:
        from autopeft.methods.modules.ptuning import PromptEncoder

        return PromptEncoder(arch.hidden, config.length, config.encoder, config.hidden)
