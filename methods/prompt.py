"""Prompt tuning (Lester et al., 2021): a trainable soft prompt prepended to the input embeddings.

P virtual-token embeddings Z (P, d) are put in front of the embedded input, [Z ; E(x)] (B, P + T, d),
and the model runs on P + T positions (machinery and position conventions: ``autopeft.peft.prompting``;
the virtual positions are dropped after the last block, so heads and LM logits see T positions).
Site ``input``; the plan entry's layers do not apply. Parameters: P * d.

Initialisation (``init``): ``vocab`` copies the input embeddings of P token ids drawn uniformly from the
vocabulary with a generator seeded by ``seed`` (Lester et al.'s sampled-vocabulary init, HF peft's
SAMPLE_VOCAB); ``random`` draws N(0, sigma^2) with sigma the std of the model's token embeddings (peft's
RANDOM uses nn.Embedding's N(0, 1), far off the embeddings' scale).
Not the identity at initialisation: the virtual tokens are attended to by every real token.

HF peft mapping (PROMPT_TUNING): ``input.prompt.prompt`` == peft ``prompt_encoder.default.embedding.weight``;
both prepend to the word embeddings before position embeddings are added, so outputs at the real
tokens are peft's outputs at positions P..P+T-1.

The module (``SoftPrompt``) is in :mod:`autopeft.methods.modules.prompt`.
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
class PromptConfig:
    length: int = 8
    init: Literal["vocab", "random"] = "vocab"
    seed: int = 0  # of the sampled vocabulary tokens / random values

    def __post_init__(self) -> None:
        positive("length", self.length)


@register
class PromptTuning:
    name = "prompt"
    summary = "soft prompt prepended to the input embeddings (init: vocabulary tokens or random)"
    placement = Placement.INPUT
    stage = 0
    config_cls = PromptConfig
    sites = (INPUT_SITE,)
    identity_at_init = False

    def num_params(self, config: PromptConfig, arch: ModelArch, site: None) -> int:
        return config.length * arch.hidden

    def build(self, config: PromptConfig, arch: ModelArch, site: None) -> nn.Module:
        from autopeft.methods.modules.prompt import SoftPrompt

        return SoftPrompt(arch.hidden, config.length, config.init, config.seed)
