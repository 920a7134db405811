"""How one training step runs: every switch of the trainer's step, decided in one place.

:func:`step_recipe` turns a :class:`~autopeft.training.config.TrainConfig` and the device into a
:class:`StepRecipe`. The trainer (:mod:`autopeft.training.trial_run`, and evaluation in
:mod:`autopeft.training.session`) executes exactly this record, and the memory estimator
(:mod:`autopeft.memory.estimate`) models exactly this record. A new trainer mechanism is a new field here;
``tests/test_memory.py`` then fails until the estimator declares how that field affects memory
(:data:`autopeft.memory.estimate.RECIPE_MEMORY`), so the estimate cannot silently fall out of step with
the trainer.

The mechanisms (each with an equality test against the plain step; see the modules):

- ``autocast_bf16``: forward and backward under bf16 autocast, fp32 master weights and optimizer;
- ``frozen_bf16_copies``: one bf16 copy of every frozen projection for the session, instead of
  autocast's per-call casts (:mod:`autopeft.peft.precision`);
- ``eager_attention_max_length``: on CPU, batches up to this many tokens run the family's eager attention
  with a bf16 mask (:mod:`autopeft.training.fastpath.step_kernels`); 0 = the model's own (SDPA);
- ``cpu_kernels``: on CPU, dropout through a uint8 mask multiply and softmax through the fp32 kernel;
- ``unpad`` / ``pack_multiple``: padding-free blocks, packed row counts rounded up to a multiple
  (:mod:`autopeft.peft.unpad`);
- ``head_rows``: a first-token classifier's last block runs only the head's rows after attention
  (:mod:`autopeft.training.fastpath.head_rows`);
- ``prefix_cache``: the hidden states below a plan's first layer come from a cache
  (:mod:`autopeft.training.fastpath.activation_cache`);
- ``compile``: ``torch.compile`` of the model for the run.

Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from autopeft.core.choices import DeviceType, Precision, PrefixCache
from autopeft.training.config import TrainConfig

#: CPU training steps up to this many tokens run eager attention (studies/step-speed: faster than SDPA's
#: backward at MiniLM's sizes); longer ones keep SDPA, since eager materialises (B, H, T, T) scores
EAGER_MAX_LENGTH = 256
# Packed row counts are rounded up to a multiple of this, per device type. On CPU, torch runs bf16 matmuls
# through oneDNN, which JIT-compiles a kernel per (M, K, N) shape and keeps ~1,000 of them: with the exact
# real-token count as M, nearly every step brought new shapes for its ~50 matmuls, and compiling them
# (and first-touching the memory they took, ~1,700 page faults per step) cost ~25% of a MiniLM trial's
# training time (studies/step-speed/pack_multiple.json). Rounding to 32 leaves a handful of shapes, all
# cached after a few steps, for at most 31 filler rows (~4% more rows at ~430 real tokens). Other devices
# (CUDA) take tensor-core friendly multiples of 8.
PACK_MULTIPLE: dict[str, int] = {"cpu": 32}
DEFAULT_PACK_MULTIPLE = 8


@dataclass(frozen=True)
class StepRecipe:
    device: DeviceType
    autocast_bf16: bool
    frozen_bf16_copies: bool
    eager_attention_max_length: int
    cpu_kernels: bool
    unpad: bool
    pack_multiple: int
    head_rows: bool
    prefix_cache: PrefixCache
    compile: bool

    @property
    def precision(self) -> Precision:
        """What the step computes in: what ``--precision auto`` resolved to, recorded next to what was asked."""
        return "bf16" if self.autocast_bf16 else "fp32"

    def eager_attention(self, width: int) -> bool:
        """Whether a training batch ``width`` tokens wide runs eager attention."""
        return width <= self.eager_attention_max_length

    @classmethod
    def plain(cls, device: DeviceType, autocast_bf16: bool) -> StepRecipe:
        """A plain autocast training loop with the model's own attention: what other trainers run."""
        return cls(device=device, autocast_bf16=autocast_bf16, frozen_bf16_copies=False,
                   eager_attention_max_length=0, cpu_kernels=False, unpad=False,
                   pack_multiple=DEFAULT_PACK_MULTIPLE, head_rows=False, prefix_cache="off", compile=False)


def uses_bf16(precision: str, device: str, native_bf16: bool) -> bool:
    """Whether a run at ``precision`` autocasts to bf16: ``auto`` where the device computes bf16 natively;
    ``bf16`` on any CPU (emulated where not native: slow, but what was asked) or a GPU that has it."""
    if precision == "auto":
        return native_bf16
    return precision == "bf16" and (device == "cpu" or native_bf16)


def step_recipe(config: TrainConfig, device: str, native_bf16: bool = True) -> StepRecipe:
    """The step autopeft's trainer runs for ``config`` on a ``device`` ("cpu" or "cuda") that computes bf16
    natively or not (:func:`autopeft.training.session.native_bf16`)."""
    cpu = device == "cpu"
    bf16 = uses_bf16(config.precision, device, native_bf16)
    return StepRecipe(
        device="cpu" if cpu else "cuda",
        autocast_bf16=bf16,
        frozen_bf16_copies=bf16,
        eager_attention_max_length=EAGER_MAX_LENGTH if cpu else 0,
        cpu_kernels=cpu,
        unpad=config.unpad,
        pack_multiple=PACK_MULTIPLE.get(device, DEFAULT_PACK_MULTIPLE),
        head_rows=config.head_rows,
        prefix_cache=config.prefix_cache,
        compile=config.compile,
    )
