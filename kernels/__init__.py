"""Fused kernels for the hot PEFT paths: Triton on CUDA, pure-torch references everywhere else.

One folder per op, each with its Triton kernel (``kernel.py``, imported lazily), its pure-torch
reference (``reference.py``) and its ``torch.autograd.Function`` with a hand-written backward
(``function.py``):

- ``lora_linear``: y = x Wᵀ + b + s (x Aᵀ) Bᵀ in one tiled GEMM (dense bf16/fp16/fp32 or NF4 base);
- ``bottleneck_adapter``: h + s up(act(down(h))) (serial) or y + s up(act(down(h))) (parallel), one
  row block per program; also LoRA's delta where the fused linear does not apply.

Methods call :mod:`.dispatch` (re-exported here), never Triton directly. (IA)³ has no kernel: see the
README's Kernels section for why it does not pay.

With the repository root on ``sys.path`` this folder shadows the PyPI package ``kernels``, which
transformers and bitsandbytes probe for at import time; imported under that name it must stay free of
side effects (importing autopeft from there would be circular), so it exports nothing then.
"""

if __name__ == "autopeft.kernels":
    from autopeft.kernels.dispatch import (
        ENV,
        Backend,
        Mode,
        activation_name,
        backend,
        bottleneck_adapter,
        kernel_mode,
        lora_delta,
        lora_linear,
        mode,
    )

    __all__ = ["ENV", "Backend", "Mode", "activation_name", "backend", "bottleneck_adapter", "kernel_mode",
               "lora_delta", "lora_linear", "mode"]
