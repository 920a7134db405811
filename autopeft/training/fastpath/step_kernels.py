"""Which kernels a training step uses, chosen from measurements on CPU (see ``studies/step-speed``).

- **Attention.** On CPU, PyTorch's SDPA picks its flash kernel when there is no attention dropout, and
  that kernel's *backward* is slow for short sequences: profiling a MiniLM LoRA step (batch 16 x 64)
  put 38% of the step in ``_scaled_dot_product_flash_attention_for_cpu_backward``; SDPA's math path
  cost less, transformers' eager attention (``softmax(QK^T/sqrt(d) + mask) V``, the same function)
  least. So training steps on CPU with at most ``EAGER_MAX_LENGTH`` tokens (:mod:`autopeft.training.step`)
  run the family's eager
  attention, with the padding mask in bf16 so that the scores stay bf16 under autocast
  (``autopeft_train_eager``, :mod:`autopeft.peft.attention`; it also carries prefix methods), switched
  through ``config._attn_implementation`` for the step only. Evaluation keeps the model's own implementation
  (SDPA's forward is fast). Longer sequences keep SDPA: eager materialises (B, H, T, T) scores.
  CUDA keeps SDPA (flash / memory-efficient kernels).
- **Dropout.** ``torch.nn.functional.dropout`` draws one Bernoulli sample per element from torch's
  MT19937 (~6 ns/element on this CPU): 20% of a MiniLM step. :class:`CpuStepKernels` (a
  ``TorchFunctionMode``, active only during a CPU training step, so no library code is patched) draws
  64 random bits per ``random_`` call and reads them as four 16-bit uniforms ``u``: an element is
  dropped when ``u + 2^15 < round(p * 2^16)``, i.e. with probability ``p' = round(p * 2^16) / 2^16``
  (0.1 -> 0.1000061), and kept ones are scaled by ``1 / (1 - p')`` (the mask read as uint8, one
  multiply each way; ``where`` and bool casts are unvectorised on CPU) — several times faster; seeded
  from torch's generator like ``dropout``.
- **Softmax.** CPU softmax of a bf16 tensor (the eager attention's probabilities under autocast) runs a
  slower kernel than converting to fp32, running the fp32 kernel and rounding back: 1.0-2.7 ms vs
  0.6-0.9 ms for a MiniLM batch's (16, 12, T, T) scores with T from 40 to 63, the same at T = 33 and 64
  (``studies/step-speed/softmax.json``). Both accumulate in fp32 and round to bf16: the results are equal
  but for a rare last-bit difference (~1 element in 10^5). :func:`bf16_softmax` does the latter, and its
  backward is torch's own (from the bf16 output, which is all it saves, as the native op).
- **Optimizer.** AdamW with ``foreach=True`` (one multi-tensor kernel per op instead of a Python loop
  over the trainable tensors); state and master weights stay fp32.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from autopeft.peft.attention import TRAIN_EAGER, register_prefix_attention

_EAGER_FROM = ("sdpa", "eager", "autopeft_sdpa", "autopeft_eager")


@contextmanager
def training_attention(model: nn.Module, eager: bool) -> Iterator[None]:
    """For one training step: the eager attention when ``eager`` (the recipe's choice for this batch)."""
    config = model.config
    current = getattr(config, "_attn_implementation", None)
    if not eager or current not in _EAGER_FROM:
        yield
        return
    register_prefix_attention()
    config._attn_implementation = TRAIN_EAGER
    try:
        yield
    finally:
        config._attn_implementation = current


_LEVELS = 1 << 15
_LEVELS2 = 1 << 16


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout with probability round(p * 2^16) / 2^16, from 16-bit uniforms (see module doc)."""
    threshold = round(p * _LEVELS2)
    if threshold == 0:
        return x
    if threshold >= _LEVELS2:
        return torch.zeros_like(x)
    n = x.numel()
    # 64 uniform bits per random_ draw, read as four int16 uniforms on [-2^15, 2^15)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), 2**63 - 1)
    keep = (bits.view(torch.int16)[:n] >= threshold - _LEVELS).view(x.shape)  # P(drop) = threshold / 2^16
    return _MaskScale.apply(x, keep, _LEVELS2 / (_LEVELS2 - threshold))


class _MaskScale(torch.autograd.Function):
    """``where(keep, x, 0) * scale`` (same values) without ``where``: on CPU ``where`` and bool -> float
    conversions are scalar loops (~3 ms per MiniLM attention-probability tensor), while the same mask
    read as uint8 converts and multiplies vectorised (~0.3 ms each). Saves only the bool mask (1 byte
    per element, as :mod:`autopeft.memory.model` counts it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return (x * keep.view(torch.uint8).to(x.dtype)).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return (grad * keep.view(torch.uint8).to(grad.dtype)).mul_(ctx.scale), None, None


class _Bf16Softmax(torch.autograd.Function):
    """softmax(x) of a bf16 ``x`` through the fp32 kernel (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int) -> torch.Tensor:
        y = torch.softmax(x.float(), dim).to(x.dtype)
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (y,) = ctx.saved_tensors
        return torch._softmax_backward_data(grad, y, ctx.dim, y.dtype), None


def bf16_softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    return _Bf16Softmax.apply(x, dim)


class CpuStepKernels(TorchFunctionMode):
    """While active: training-mode ``F.dropout`` -> :func:`fast_dropout`, bf16 ``F.softmax`` -> :func:`bf16_softmax`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout:
            x = args[0]
            p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            training = kwargs.get("training", args[2] if len(args) > 2 else True)
            inplace = kwargs.get("inplace", args[3] if len(args) > 3 else False)
            if training and not inplace and p > 0:
                return fast_dropout(x, p)
        elif func is F.softmax:
            x = args[0]
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            dtype = kwargs.get("dtype", args[3] if len(args) > 3 else None)
            if x.dtype == torch.bfloat16 and x.device.type == "cpu" and dim is not None and dtype is None:
                return bf16_softmax(x, dim)
        return func(*args, **kwargs)


def cpu_step_kernels(enabled: bool):
    """The dropout and softmax of a training step: :class:`CpuStepKernels` when ``enabled`` (the recipe's
    ``cpu_kernels``: on CPU), torch's own otherwise."""
    return CpuStepKernels() if enabled else nullcontext()


def make_optimizer(params: list[nn.Parameter], lr: float, weight_decay: float,
                   head: list[nn.Parameter] | None = None, head_lr_scale: float = 1.0) -> torch.optim.Optimizer | None:
    """AdamW over ``params``; with ``head_lr_scale != 1`` the ``head`` parameters (a subset of ``params``)
    form a second group whose ``lr_scale`` multiplies the scheduled lr (``group["lr_scale"]``). At scale 1
    everything is one group: exactly the optimizer of a run without the option."""
    if not params:
        return None
    head_ids = {id(p) for p in head or ()} if head_lr_scale != 1.0 else set()
    groups = [{"params": [p for p in params if id(p) not in head_ids], "lr_scale": 1.0},
              {"params": [p for p in params if id(p) in head_ids], "lr_scale": head_lr_scale}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=weight_decay, foreach=True)
