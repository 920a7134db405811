"""Choose, per call, between a Triton kernel and its pure-torch reference; methods call only this.

``AUTOPEFT_KERNELS`` selects the mode:

- ``auto`` (default): Triton when every tensor is on CUDA, Triton is installed and the op qualifies
  (fp16/bf16/fp32, rank <= 128, int32-addressable, not under ``torch.compile``); the reference otherwise,
  in particular on CPU (where it runs under the caller's autocast: ``--precision bf16`` is the faster
  CPU setting, through AMX).
- ``off``: always the reference.
- ``triton``: the kernel whenever the op qualifies, also on CPU tensors when ``TRITON_INTERPRET=1``
  (how the tests run the kernels without a GPU); a clear error if Triton cannot run at all.

The references are the exact expressions the methods computed before kernels existed, so the CPU path
is numerically unchanged. The fused LoRA linear (which replaces ``base(x)``) also needs dropout off
(p = 0 or eval) and a base it can read (:mod:`.lora_linear.frozen`); otherwise it falls back to
``base(x)`` plus :func:`lora_delta`, which may itself run the bottleneck kernel.
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn

from autopeft.core.errors import UserError
from autopeft.core.extras import require
from autopeft.kernels import _triton
from autopeft.kernels.bottleneck_adapter import reference as adapter_reference
from autopeft.kernels.bottleneck_adapter.function import BottleneckFunction
from autopeft.kernels.lora_linear import reference as lora_reference
from autopeft.kernels.lora_linear.frozen import frozen_linear
from autopeft.kernels.lora_linear.function import LoRADeltaFunction, LoRALinearFunction

ENV = "AUTOPEFT_KERNELS"
MAX_RANK = 128  # the (BLOCK_M, rank) bottleneck lives in registers
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_INT32 = 2**31 - 1


class Mode(enum.Enum):
    AUTO = "auto"
    OFF = "off"
    TRITON = "triton"


class Backend(enum.Enum):
    REFERENCE = "reference"
    TRITON = "triton"


def mode() -> Mode:
    value = os.environ.get(ENV, "auto").strip().lower()
    try:
        return Mode(value)
    except ValueError:
        raise UserError(f"{ENV}={value!r} is not a kernel mode; use one of auto, off, triton") from None


@contextlib.contextmanager
def kernel_mode(value: Mode | str) -> Iterator[None]:
    """Set ``AUTOPEFT_KERNELS`` for the duration of a block (tests and benchmarks compare both paths)."""
    previous = os.environ.get(ENV)
    os.environ[ENV] = Mode(value).value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous


def backend(*tensors: torch.Tensor | None) -> Backend:
    """Where an op on these tensors runs, before op-specific checks (dtypes, rank, base module)."""
    chosen = mode()
    if chosen is Mode.OFF or torch.compiler.is_compiling():
        return Backend.REFERENCE
    devices = {t.device.type for t in tensors if t is not None}
    if chosen is Mode.AUTO:
        usable = devices == {"cuda"} and _triton.triton_installed() and not _triton.interpreting()
        return Backend.TRITON if usable else Backend.REFERENCE
    require("kernels")
    if devices == {"cuda"}:
        return Backend.TRITON
    if devices == {"cpu"} and _triton.interpreting():
        _triton.check_interpreter()
        return Backend.TRITON
    raise UserError(f"{ENV}=triton needs CUDA tensors, or CPU tensors with TRITON_INTERPRET=1 "
                    f"(got devices {sorted(devices)}); unset {ENV} to use the reference")


def _kernel_ready(*tensors: torch.Tensor | None, rank: int) -> bool:
    present = [t for t in tensors if t is not None]
    return (
        0 < rank <= MAX_RANK
        and all(t.dtype in _DTYPES and t.numel() <= _INT32 for t in present)
        and present[0].numel() > 0
        and backend(*present) is Backend.TRITON
    )


def _compute_dtype(device: torch.device, default: torch.dtype) -> torch.dtype:
    kind = device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else default


def _is_identity(dropout: Callable[[torch.Tensor], torch.Tensor] | None) -> bool:
    if dropout is None or isinstance(dropout, nn.Identity):
        return True
    return isinstance(dropout, nn.Dropout) and (dropout.p == 0 or not dropout.training)


def lora_delta(x: torch.Tensor, y: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float,
               dropout: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """y + s * (dropout(x) Aᵀ) Bᵀ.  x: (..., d_in)  y: (..., d_out)  A: (r, d_in)  B: (d_out, r)."""
    if not _kernel_ready(x, y, lora_A, lora_B, rank=lora_A.shape[0]):
        return lora_reference.lora_delta(x, y, lora_A, lora_B, scaling, dropout)
    x = dropout(x) if dropout is not None else x
    dtype = _compute_dtype(x.device, lora_A.dtype)
    return LoRADeltaFunction.apply(x, y, lora_A.to(dtype), lora_B.to(dtype), scaling)


def lora_linear(x: torch.Tensor, base: nn.Module, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float,
                dropout: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """base(x) + s * (dropout(x) Aᵀ) Bᵀ, in one fused GEMM when the base allows it (see module doc)."""
    frozen = None
    if _is_identity(dropout) and _kernel_ready(x, lora_A, lora_B, rank=lora_A.shape[0]):
        frozen = frozen_linear(base, x)
    if frozen is None:
        return lora_delta(x, base(x), lora_A, lora_B, scaling, dropout)
    dtype = frozen.compute_dtype
    out = LoRALinearFunction.apply(x.to(dtype), lora_A.to(dtype), lora_B.to(dtype), frozen, scaling)
    return out.to(frozen.out_dtype)


_ACTIVATION_NAMES: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.SiLU: "silu", nn.Tanh: "tanh",
                                                 nn.Identity: "none"}
_TORCH_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda z: z, "relu": torch.relu, "gelu": nn.functional.gelu, "silu": nn.functional.silu,
    "tanh": torch.tanh}


def activation_name(act: nn.Module | str) -> str | None:
    """The kernel's name for an activation, or None when the kernel does not implement it."""
    if isinstance(act, str):
        return act if act in _TORCH_ACTIVATIONS else None
    if type(act) is nn.GELU:
        return "gelu" if act.approximate == "none" else None
    return _ACTIVATION_NAMES.get(type(act))


def bottleneck_adapter(h: torch.Tensor, down_weight: torch.Tensor, down_bias: torch.Tensor | None,
                       up_weight: torch.Tensor, up_bias: torch.Tensor | None, act: nn.Module | str,
                       scaling: float, residual: torch.Tensor | None = None) -> torch.Tensor:
    """Serial h + s * up(act(down(h))), or parallel residual + s * up(act(down(h))).

    h: (..., d)  down_weight: (m, d)  up_weight: (d, m)  residual: (..., d) or None (serial)
    """
    name = activation_name(act)
    ready = name is not None and _kernel_ready(h, down_weight, down_bias, up_weight, up_bias, residual,
                                               rank=down_weight.shape[0])
    if not ready:
        fn = _TORCH_ACTIVATIONS[act] if isinstance(act, str) else act
        return adapter_reference.bottleneck_adapter(h, down_weight, down_bias, up_weight, up_bias, fn, scaling,
                                                    residual)
    dtype = _compute_dtype(h.device, down_weight.dtype)
    return BottleneckFunction.apply(h, down_weight.to(dtype), down_bias, up_weight.to(dtype), up_bias, residual,
                                    name, scaling)
