"""Triton kernel: a frozen linear layer and its LoRA update in one tiled GEMM.

    out = x Wm + s * (x P) Q + bias        x: (M, K)  Wm: (K, N)  P: (K, R)  Q: (R, N)

Forward: Wm = Wᵀ, P = Aᵀ, Q = Bᵀ, and mid = x Aᵀ is stored for dB. The input gradient is the same
kernel on dy with Wm = W, P = B, Q = A: dx = dy W + s (dy B) A, and mid = dy B is stored for dA.

Each program owns one (BLOCK_M, BLOCK_N) output tile. Its K loop feeds the same x tile to the base MMA
and to the rank-R MMA, so x is read once, and the rank-R product lands in the epilogue: the (N, K)
update s·B A is never formed. The extra work is about R / BLOCK_N of the base GEMM (16 / 128 = 12.5%).

W is dense (any strides, so W and Wᵀ are one buffer) or NF4: bitsandbytes' packed nibbles (two per
byte, high nibble first, row-major over W's (N, K) shape) with one absmax per ``blocksize`` consecutive
elements, dequantised tile by tile in registers as code[nibble] * absmax.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autopeft.kernels._tl import mma
from autopeft.kernels._triton import block_rank, dot_precision, interpreting

INTERPRET = interpreting()

# small tiles under the interpreter so that the tests' odd shapes span several tiles and hit every mask
_INTERPRET_META = {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2}
_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in [(128, 128, 32, 8, 3), (128, 128, 64, 8, 3), (64, 128, 32, 4, 4),
                             (128, 64, 32, 4, 4), (128, 256, 32, 8, 3), (64, 64, 64, 4, 3)]
]


@triton.jit
def _lora_linear_kernel(
    X, W, ABSMAX, CODE, P, Q, BIAS, OUT, MID,
    M, N, K, R,
    stride_xm, stride_xk, stride_wk, stride_wn, stride_pk, stride_pr, stride_qr, stride_qn,
    stride_om, stride_on,
    scale, blocksize,
    NF4: tl.constexpr, HAS_BIAS: tl.constexpr, STORE_MID: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # grouped tile order: GROUP_M row tiles sweep the same W columns while they are in L2
    pid = tl.program_id(0)
    num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    first_m = (pid // (GROUP_M * num_n)) * GROUP_M
    group_rows = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_n)) % group_rows
    pid_n = (pid % (GROUP_M * num_n)) // group_rows

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rr = tl.arange(0, BLOCK_R)
    row_ok, col_ok = rm[:, None] < M, rn[None, :] < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    mid = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(X + rm[:, None] * stride_xm + rk[None, :] * stride_xk, mask=row_ok & (rk[None, :] < K), other=0.0)
        w_ok = (rk[:, None] < K) & col_ok
        if NF4:  # element (k, n) of Wm is element idx of W's row-major (N_w, K_w) storage
            idx = rk[:, None].to(tl.int64) * stride_wk + rn[None, :].to(tl.int64) * stride_wn
            byte = tl.load(W + idx // 2, mask=w_ok, other=0)
            nibble = tl.where(idx % 2 == 0, byte >> 4, byte & 15).to(tl.int32)
            absmax = tl.load(ABSMAX + idx // blocksize, mask=w_ok, other=0.0)
            w = (tl.load(CODE + nibble) * absmax).to(x.dtype)
        else:
            w = tl.load(W + rk[:, None] * stride_wk + rn[None, :] * stride_wn, mask=w_ok, other=0.0)
        p = tl.load(P + rk[:, None] * stride_pk + rr[None, :] * stride_pr, mask=(rk[:, None] < K) & (rr[None, :] < R),
                    other=0.0)
        acc = mma(x, w, acc, UPCAST, PRECISION)
        mid = mma(x, p, mid, UPCAST, PRECISION)

    q = tl.load(Q + rr[:, None] * stride_qr + rn[None, :] * stride_qn, mask=(rr[:, None] < R) & col_ok, other=0.0)
    acc = mma((mid * scale).to(q.dtype), q, acc, UPCAST, PRECISION)
    if HAS_BIAS:
        acc += tl.load(BIAS + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    tl.store(OUT + rm[:, None] * stride_om + rn[None, :] * stride_on, acc.to(OUT.dtype.element_ty), mask=row_ok & col_ok)
    if STORE_MID and pid_n == 0:  # one column of tiles writes the (M, R) bottleneck, unscaled
        tl.store(MID + rm[:, None] * R + rr[None, :], mid, mask=row_ok & (rr[None, :] < R))


_autotuned = None if INTERPRET else triton.autotune(configs=_CONFIGS, key=["N", "K", "R"])(_lora_linear_kernel)


def lora_linear(
    x: torch.Tensor, weight: torch.Tensor, p: torch.Tensor, q: torch.Tensor, scale: float, *,
    bias: torch.Tensor | None = None, nf4: tuple[torch.Tensor, torch.Tensor, int] | None = None,
    weight_strides: tuple[int, int] | None = None, n: int | None = None, store_mid: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch on 2-D operands; returns (out (M, N) in x's dtype, mid (M, R) fp32 or None).

    Dense: ``weight`` is the (K, N) matrix Wm (any strides). NF4: ``weight`` is the packed uint8 buffer,
    ``nf4 = (absmax fp32, code fp32, blocksize)``, ``weight_strides`` the element strides of Wm in W's
    row-major storage and ``n`` the output width.
    """
    m, k = x.shape
    r = p.shape[1]
    if nf4 is None:
        n = weight.shape[1]
        weight_strides = weight.stride()
        absmax, code, blocksize = x, x, 1  # unread placeholders
    else:
        absmax, code, blocksize = nf4
    assert n is not None and weight_strides is not None
    out = torch.empty((m, n), device=x.device, dtype=x.dtype)
    mid = torch.empty((m, r), device=x.device, dtype=torch.float32) if store_mid else None
    args = (
        x, weight, absmax, code, p, q, bias if bias is not None else x, out, mid if mid is not None else x,
        m, n, k, r,
        x.stride(0), x.stride(1), *weight_strides, p.stride(0), p.stride(1), q.stride(0), q.stride(1),
        out.stride(0), out.stride(1), float(scale), blocksize,
    )
    flags = dict(NF4=nf4 is not None, HAS_BIAS=bias is not None, STORE_MID=store_mid, UPCAST=INTERPRET,
                 PRECISION=dot_precision(), BLOCK_R=block_rank(r))
    if INTERPRET:
        meta = _INTERPRET_META
        grid = (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)
        _lora_linear_kernel[grid](*args, **flags, **meta)
    else:
        _autotuned[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)](*args, **flags)
    return out, mid
