"""Quantized base models (QLoRA, Dettmers et al., 2023): the frozen projections in 4 or 8 bits.

``--quantize nf4|fp4|int8`` replaces every linear site of every transformer block (q k v o up gate down,
GPT-2's fused ``c_attn`` as one module) by a bitsandbytes module after the model is loaded:

- ``nf4`` / ``fp4``: ``Linear4bit`` (4-bit NormalFloat or float, blocks of 64 weights with an fp32
  absmax each), computing in fp32 (bf16 under ``--precision bf16`` autocast);
- ``int8``: ``Linear8bitLt`` (LLM.int8() row-wise absmax, outlier threshold 0: all int8).

Embeddings, norms, the pooler and the task head stay in full precision. The frozen weights are never
trained, so every method built on the projections' outputs works unchanged (LoRA, LoRA-FA, VeRA,
AdaLoRA, (IA)^3, BitFit, adapters: ``AdaptedLinear`` wraps the quantized module); methods that read the
frozen weight (DoRA's row norms) use :func:`dequantized_weight`. Merging into a quantized base is refused.
The trainable parameter count of a plan does not depend on quantization, and the base model's parameter
count (for budgets in %) is taken before quantizing.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from autopeft.core.arch import ModelArch
from autopeft.core.choices import QUANTIZATIONS
from autopeft.core.errors import UserError


def check_quantization(value: str) -> None:
    if value not in QUANTIZATIONS:
        raise UserError(f"--quantize {value!r} is not supported; choose one of {', '.join(QUANTIZATIONS)}")


def is_quantized(module: nn.Module) -> bool:
    """A bitsandbytes module (checked by its class's package, so bitsandbytes is never imported here)."""
    return type(module).__module__.startswith("bitsandbytes")


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """The (d_out, d_in) fp32 weight a quantized projection computes with."""
    import bitsandbytes as bnb

    weight = module.weight
    if isinstance(module, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()
    if isinstance(module, bnb.nn.Linear8bitLt):
        scales = weight.SCB if weight.SCB is not None else module.state.SCB  # moved to state by a forward
        return weight.data.float() * scales.float()[:, None] / 127
    raise TypeError(f"not a quantized projection: {type(module).__name__}")


def _dense(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(d_out, d_in) weight and bias of a Linear or of GPT-2's Conv1D (which stores (d_in, d_out))."""
    if isinstance(module, nn.Linear):
        return module.weight.data, module.bias.data if module.bias is not None else None
    if type(module).__name__ == "Conv1D":
        return module.weight.data.T, module.bias.data
    raise UserError(f"cannot quantize a {type(module).__name__} projection (expected Linear or Conv1D)")


def quantized_linear(module: nn.Module, kind: str) -> nn.Module:
    """A bitsandbytes copy of ``module`` (weights quantized on the CPU)."""
    import bitsandbytes as bnb

    weight, bias = _dense(module)
    d_out, d_in = weight.shape
    weight = weight.float().contiguous()
    if kind == "int8":
        q = bnb.nn.Linear8bitLt(d_in, d_out, bias=bias is not None, has_fp16_weights=False, threshold=0.0)
        q.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        q = bnb.nn.Linear4bit(d_in, d_out, bias=bias is not None, compute_dtype=torch.float32, quant_type=kind)
        q.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type=kind)
        # bitsandbytes repacks a 4-bit weight in place at its first CPU inference call (eval mode, no grad)
        # into an AVX512-bf16 layout that fails on small shapes (d=32) and that training-mode calls and
        # dequantize_4bit (DoRA) do not expect; autopeft alternates training and evaluation, so keep one layout
        q.support_avx512bf16_for_cpu = False
    if bias is not None:
        q.bias = nn.Parameter(bias.float().clone(), requires_grad=False)
    return q.to("cpu")  # bitsandbytes quantizes when the weight is moved to a device


def quantize_model(model: nn.Module, arch: ModelArch, kind: str) -> int:
    """Replace every block's linear sites by ``kind``-quantized modules, in place; returns how many."""
    check_quantization(kind)
    if kind == "none":
        return 0
    paths = sorted({site.path for site in arch.sites.values()})
    count = 0
    for block in arch.blocks(model):
        for path in paths:
            parent_path, _, child = path.rpartition(".")
            parent = block.get_submodule(parent_path) if parent_path else block
            original = getattr(parent, child)
            if not is_quantized(original):
                setattr(parent, child, quantized_linear(original, kind))
                count += 1
    return count
