"""Autograd for the Triton bottleneck adapter, with a hand-written backward.

With g = dy W_up (M, m), dz = s * g * act'(z) and a = act(z) for the stored pre-activation z:

    dh = dy (serial) + dz W_down    dresidual = dy (parallel)
    dW_up = s * dyᵀ a    db_up = s * Σ_rows dy    dW_down = dzᵀ h    db_down = Σ_rows dz

The kernel computes dh and dz in one pass over dy (see ``kernel``); the four weight gradients are skinny
GEMMs / reductions over all tokens, left to cuBLAS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autopeft.kernels._triton import load

_KERNEL = "autopeft.kernels.bottleneck_adapter.kernel"
_TORCH_ACTIVATIONS = {"none": lambda z: z, "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}


class BottleneckFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, down_weight, down_bias, up_weight, up_bias, residual, activation: str, scaling: float):
        # h: (..., d)  down_weight: (m, d)  up_weight: (d, m)  residual: (..., d) or None (serial)
        kernel = load(_KERNEL)
        x = h.reshape(-1, h.shape[-1])
        base = x if residual is None else residual.reshape(-1, residual.shape[-1])
        out, z = kernel.bottleneck(x, down_weight.t(), up_weight.t(), p_bias=down_bias, q_bias=up_bias,
                                   residual=base, activation=activation, out_scale=scaling,
                                   out_dtype=base.dtype)
        ctx.save_for_backward(x, down_weight, up_weight, z)
        ctx.activation, ctx.scaling, ctx.serial = activation, scaling, residual is None
        ctx.has_biases = (down_bias is not None, up_bias is not None)
        ctx.bias_dtypes = (getattr(down_bias, "dtype", None), getattr(up_bias, "dtype", None))
        return out.view((h if residual is None else residual).shape)

    @staticmethod
    def backward(ctx, dout):
        x, down_weight, up_weight, z = ctx.saved_tensors
        kernel = load(_KERNEL)
        dy = dout.reshape(-1, dout.shape[-1])
        needs = ctx.needs_input_grad
        dx, dz = kernel.bottleneck(dy, up_weight, down_weight, residual=dy if ctx.serial else None,
                                   activation=ctx.activation, mid_scale=ctx.scaling, backward=True, z_forward=z,
                                   compute_out=needs[0], out_dtype=x.dtype)
        cd = down_weight.dtype
        grads = [dx.view(dout.shape) if dx is not None else None, None, None, None, None,
                 dout if needs[5] else None, None, None]
        if needs[1]:
            grads[1] = dz.to(cd).t() @ x.to(cd)
        if needs[2] and ctx.has_biases[0]:
            grads[2] = dz.sum(0).to(ctx.bias_dtypes[0])
        if needs[3]:
            a = _TORCH_ACTIVATIONS[ctx.activation](z).to(cd)
            grads[3] = (ctx.scaling * dy.to(cd)).t() @ a
        if needs[4] and ctx.has_biases[1]:
            grads[4] = (ctx.scaling * dy.float().sum(0)).to(ctx.bias_dtypes[1])
        return tuple(grads)
