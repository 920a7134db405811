"""Autograd for the Triton LoRA kernels, with hand-written backwards that never form s·B A.

With xa = x Aᵀ (stored by the forward kernel) and g = dy B:

    dx = dy W + s g A      (fused linear: one kernel on dy, the base weight read tile by tile)
    dA = s gᵀ x            dB = s dyᵀ xa     (rank-r GEMMs over all tokens, left to cuBLAS)

:class:`LoRALinearFunction` is the fused linear (base weight frozen: no dW, no dbias).
:class:`LoRADeltaFunction` adds the update to a given y (the bottleneck kernel, act = identity); y's
gradient passes through unchanged.
"""

from __future__ import annotations

import torch

from autopeft.kernels._triton import load
from autopeft.kernels.lora_linear.frozen import FrozenLinear

_LINEAR = "autopeft.kernels.lora_linear.kernel"
_BOTTLENECK = "autopeft.kernels.bottleneck_adapter.kernel"


class LoRALinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lora_A, lora_B, frozen: FrozenLinear, scaling: float):
        # x: (..., d_in)  lora_A: (r, d_in)  lora_B: (d_out, r), all in frozen.compute_dtype
        kernel = load(_LINEAR)
        x2 = x.reshape(-1, frozen.in_features)
        if frozen.nf4 is None:
            wm, nf4, strides = frozen.weight.t(), None, None
        else:  # Wm[k, n] = W[n, k]: element n * d_in + k of the packed row-major weight
            wm, nf4, strides = frozen.weight, frozen.nf4, (1, frozen.in_features)
        out, xa = kernel.lora_linear(x2, wm, lora_A.t(), lora_B.t(), scaling, bias=frozen.bias, nf4=nf4,
                                     weight_strides=strides, n=frozen.out_features,
                                     store_mid=ctx.needs_input_grad[2])
        ctx.save_for_backward(x2, lora_A, lora_B, xa)
        ctx.frozen, ctx.scaling = frozen, scaling
        return out.view(*x.shape[:-1], frozen.out_features)

    @staticmethod
    def backward(ctx, dout):
        x2, lora_A, lora_B, xa = ctx.saved_tensors
        frozen, s, needs = ctx.frozen, ctx.scaling, ctx.needs_input_grad
        dy = dout.reshape(-1, frozen.out_features).to(frozen.compute_dtype)
        dx = g = None
        if needs[0]:
            if frozen.nf4 is None:
                wm, nf4, strides = frozen.weight, None, None
            else:  # Wm[k, n] = W[k, n]: element k * d_in + n
                wm, nf4, strides = frozen.weight, frozen.nf4, (frozen.in_features, 1)
            dx, g = load(_LINEAR).lora_linear(dy, wm, lora_B, lora_A, s, nf4=nf4, weight_strides=strides,
                                              n=frozen.in_features, store_mid=needs[1])
            dx = dx.view(*dout.shape[:-1], frozen.in_features)
        elif needs[1]:
            g = dy @ lora_B
        dxa = s * g if g is not None else None
        return dx, *_low_rank_grads(x2, dy, dxa, xa, s, lora_A.dtype), None, None


class LoRADeltaFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, lora_A, lora_B, scaling: float):
        # x: (..., d_in)  y: (..., d_out); the update runs in lora_A's dtype (x is cast in the kernel)
        kernel = load(_BOTTLENECK)
        x2, y2 = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        out, xa = kernel.bottleneck(x2, lora_A.t(), lora_B.t(), residual=y2, out_scale=scaling,
                                    out_dtype=y.dtype, store_mid=ctx.needs_input_grad[3])
        ctx.save_for_backward(x2, lora_A, lora_B, xa)
        ctx.scaling = scaling
        return out.view(y.shape)

    @staticmethod
    def backward(ctx, dout):
        x2, lora_A, lora_B, xa = ctx.saved_tensors
        s, needs = ctx.scaling, ctx.needs_input_grad
        dy = dout.reshape(-1, dout.shape[-1])
        dx = dxa = None
        if needs[0] or needs[2]:  # dx = dxa A with dxa = s (dy B), kept for dA
            dx, dxa = load(_BOTTLENECK).bottleneck(dy, lora_B, lora_A, backward=True, mid_scale=s,
                                                   compute_out=needs[0], store_mid=needs[2], out_dtype=x2.dtype)
        dx = dx.view(*dout.shape[:-1], x2.shape[-1]) if dx is not None else None
        return dx, dout if needs[1] else None, *_low_rank_grads(x2, dy, dxa, xa, s, lora_A.dtype), None


def _low_rank_grads(x2, dy, dxa, xa, s, dtype):
    """dA = dxaᵀ x and dB = s dyᵀ xa (dxa = s dy B, xa = x Aᵀ; None when not needed), in ``dtype``."""
    grad_a = dxa.to(dtype).t() @ x2.to(dtype) if dxa is not None else None
    grad_b = (s * dy.to(dtype)).t() @ xa.to(dtype) if xa is not None else None
    return grad_a, grad_b
