"""Triton device functions shared by the kernels (imported by the kernel modules, so lazily too)."""

from __future__ import annotations

import triton
import triton.language as tl

from autopeft.kernels._triton import interpreting

INTERPRET = interpreting()

# activation codes shared with the launchers
NONE, RELU, GELU, SILU, TANH = 0, 1, 2, 3, 4
ACTIVATIONS = {"none": NONE, "relu": RELU, "gelu": GELU, "silu": SILU, "tanh": TANH}


@triton.jit
def mma(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """acc + a @ b with fp32 accumulation; UPCAST works around the interpreter's bf16 dot (see _triton)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def activation(z, ACT: tl.constexpr):
    """act(z) in fp32; gelu is the exact (erf) form, as nn.GELU()."""
    if ACT == 1:
        z = tl.maximum(z, 0.0)
    elif ACT == 2:
        z = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    elif ACT == 3:
        z = z * tl.sigmoid(z)
    elif ACT == 4:
        z = 2.0 * tl.sigmoid(2.0 * z) - 1.0
    return z


@triton.jit
def activation_grad(z, ACT: tl.constexpr):
    """d act(z) / dz in fp32 (relu: 1 where z > 0, as torch)."""
    if ACT == 1:
        g = tl.where(z > 0.0, 1.0, 0.0)
    elif ACT == 2:
        g = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476)) + z * 0.3989422804014327 * tl.exp(-0.5 * z * z)
    elif ACT == 3:
        sig = tl.sigmoid(z)
        g = sig * (1.0 + z * (1.0 - sig))
    elif ACT == 4:
        t = 2.0 * tl.sigmoid(2.0 * z) - 1.0
        g = 1.0 - t * t
    else:
        g = tl.full(z.shape, 1.0, tl.float32)
    return g
