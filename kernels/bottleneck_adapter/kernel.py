"""Triton kernel: a rank-R bottleneck with a residual, one row block per program.

    forward:  z = x P + pb                       (M, R)  stored: the pre-activation, for backward
              out = res + s_out * (act(z) Q + qb)  (M, N)
    backward: dz = s_mid * (dy Q') * act'(z)      (M, R)  stored: dz, for the weight gradients
              out = res + s_out * dz P'           (M, K)

A program owns BLOCK_M rows. It streams its rows of x through the K loop once, keeps the (BLOCK_M, R)
bottleneck in registers, then streams Q and writes its rows of ``out`` N columns at a time: x, res and
out each cross memory once, and the (M, N) update is never written. Used for

- the bottleneck adapter (serial: res = x; parallel: res = the projection's output), P = W_downᵀ,
  Q = W_upᵀ; its backward is the same kernel with P = W_up, Q = W_down and res = dy (serial);
- LoRA on a site the fused linear kernel cannot take (a slice of a fused projection, DoRA, dropout):
  act = identity, P = Aᵀ, Q = Bᵀ, res = y, s_out = s.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autopeft.kernels._tl import ACTIVATIONS, activation, activation_grad, mma
from autopeft.kernels._triton import block_rank, dot_precision, interpreting

INTERPRET = interpreting()

# small tiles under the interpreter so that the tests' odd shapes span several blocks and hit every mask
_INTERPRET_META = {"BLOCK_M": 16, "BLOCK_K": 16, "BLOCK_N": 16}
_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_K": bk, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm, bk, bn, w, s in [(16, 128, 128, 4, 3), (32, 128, 128, 4, 3), (64, 64, 64, 4, 3),
                             (32, 64, 128, 4, 4), (64, 128, 128, 8, 3)]
]


@triton.jit
def _bottleneck_kernel(
    X, P, PB, Q, QB, RES, ZIN, MID, OUT,
    M, K, R, N,
    stride_xm, stride_xk, stride_pk, stride_pr, stride_qr, stride_qn,
    stride_rm, stride_rn, stride_om, stride_on,
    mid_scale, out_scale,
    ACT: tl.constexpr, BACKWARD: tl.constexpr, HAS_PB: tl.constexpr, HAS_QB: tl.constexpr,
    HAS_RES: tl.constexpr, STORE_MID: tl.constexpr, COMPUTE_OUT: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rr = tl.arange(0, BLOCK_R)
    row_ok = rm[:, None] < M
    rank_ok = rr[None, :] < R

    # z = x P (+ pb): (BLOCK_M, BLOCK_R), one pass over this block's rows of x
    z = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(X + rm[:, None] * stride_xm + rk[None, :] * stride_xk, mask=row_ok & (rk[None, :] < K), other=0.0)
        p = tl.load(P + rk[:, None] * stride_pk + rr[None, :] * stride_pr, mask=(rk[:, None] < K) & rank_ok, other=0.0)
        z = mma(x.to(p.dtype), p, z, UPCAST, PRECISION)
    if HAS_PB:
        z += tl.load(PB + rr, mask=rr < R, other=0.0).to(tl.float32)[None, :]

    mid_offsets = rm[:, None] * R + rr[None, :]  # ZIN / MID are contiguous (M, R) fp32
    if BACKWARD:  # z holds dy Q'; the bottleneck's gradient is s_mid * (dy Q') * act'(z_forward)
        if ACT != 0:
            z_fwd = tl.load(ZIN + mid_offsets, mask=row_ok & rank_ok, other=0.0)
            z = z * activation_grad(z_fwd, ACT)
        a = z * mid_scale
        if STORE_MID:
            tl.store(MID + mid_offsets, a, mask=row_ok & rank_ok)
    else:
        if STORE_MID:
            tl.store(MID + mid_offsets, z, mask=row_ok & rank_ok)
        a = activation(z, ACT) * mid_scale

    if COMPUTE_OUT:
        a = a.to(Q.dtype.element_ty)
        for n0 in range(0, N, BLOCK_N):
            rn = n0 + tl.arange(0, BLOCK_N)
            col_ok = rn[None, :] < N
            q = tl.load(Q + rr[:, None] * stride_qr + rn[None, :] * stride_qn, mask=(rr[:, None] < R) & col_ok,
                        other=0.0)
            acc = mma(a, q, tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), UPCAST, PRECISION)
            if HAS_QB:
                acc += tl.load(QB + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
            acc = acc * out_scale
            if HAS_RES:
                acc += tl.load(RES + rm[:, None] * stride_rm + rn[None, :] * stride_rn, mask=row_ok & col_ok,
                               other=0.0).to(tl.float32)
            tl.store(OUT + rm[:, None] * stride_om + rn[None, :] * stride_on, acc.to(OUT.dtype.element_ty),
                     mask=row_ok & col_ok)


_autotuned = None if INTERPRET else triton.autotune(configs=_CONFIGS, key=["K", "N", "R"])(_bottleneck_kernel)


def bottleneck(
    x: torch.Tensor, p: torch.Tensor, q: torch.Tensor, *,
    p_bias: torch.Tensor | None = None, q_bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None, activation: str = "none", mid_scale: float = 1.0,
    out_scale: float = 1.0, backward: bool = False, z_forward: torch.Tensor | None = None,
    store_mid: bool = True, compute_out: bool = True, out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Launch the kernel on 2-D operands; returns (out, mid).

    x: (M, K)  p: (K, R)  q: (R, N)  residual: (M, N)  ->  out: (M, N) in ``out_dtype``, mid: (M, R) fp32.
    ``backward``: mid = mid_scale * (x p) * act'(z_forward) instead of the forward's z = x p + p_bias.
    """
    (m, k), (_, r), n = x.shape, p.shape, q.shape[1]
    assert not (backward and activation != "none" and z_forward is None), "the backward needs z_forward"
    mid = torch.empty((m, r), device=x.device, dtype=torch.float32) if store_mid else None
    out = torch.empty((m, n), device=x.device, dtype=out_dtype or x.dtype) if compute_out else None
    dummy = x  # pointer for absent operands; never read (their constexpr flag is off)
    args = (
        x, p, p_bias if p_bias is not None else dummy, q, q_bias if q_bias is not None else dummy,
        residual if residual is not None else dummy, z_forward.contiguous() if z_forward is not None else dummy,
        mid if mid is not None else dummy, out if out is not None else dummy,
        m, k, r, n,
        x.stride(0), x.stride(1), p.stride(0), p.stride(1), q.stride(0), q.stride(1),
        *(residual.stride() if residual is not None else (0, 0)), *(out.stride() if out is not None else (0, 0)),
        float(mid_scale), float(out_scale),
    )
    flags = dict(
        ACT=ACTIVATIONS[activation], BACKWARD=backward, HAS_PB=p_bias is not None, HAS_QB=q_bias is not None,
        HAS_RES=residual is not None, STORE_MID=store_mid, COMPUTE_OUT=compute_out,
        UPCAST=INTERPRET, PRECISION=dot_precision(), BLOCK_R=block_rank(r),
    )
    if INTERPRET:
        _bottleneck_kernel[(triton.cdiv(m, _INTERPRET_META["BLOCK_M"]),)](*args, **flags, **_INTERPRET_META)
    else:
        _autotuned[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]),)](*args, **flags)
    return out, mid
