"""Time autopeft's Triton kernels against their torch references and HF peft's LoRA layers (CUDA).

For each op at realistic shapes (default: 4096 tokens, hidden 4096, LoRA rank 16, adapter size 64,
bf16 autocast with fp32 adapter weights, as ``--precision bf16`` trains) it measures the forward and
the forward + backward (gradients of x and of the adapter weights) with ``triton.testing.do_bench``
(median ms), the peak memory of one forward + backward, and the kernel's max relative error against the
reference. Rows:

    lora_linear   dense bf16 base    triton | reference (base(x) + torch delta) | peft (lora.Linear)
    lora_linear   NF4 base           triton | reference (Linear4bit + delta)    | peft (lora.bnb.Linear4bit)
    lora_delta    y + s (x Aᵀ) Bᵀ     triton | reference
    adapter       serial, parallel   triton | reference

Writes ``--out`` (CSV) and ``machine.json`` next to it. Without CUDA it says so and exits 0.
``--smoke`` runs the same harness on tiny shapes on the CPU through the Triton interpreter (set
``TRITON_INTERPRET=1`` in the environment) to check the script itself; its timings mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent


@dataclass
class Row:
    op: str
    variant: str
    impl: str
    tokens: int
    hidden: int
    rank: int
    dtype: str
    fwd_ms: float
    fwd_bwd_ms: float
    peak_mib: float
    max_rel_err: float  # vs the reference's output (0 for the reference itself)


@dataclass
class Setup:
    device: torch.device
    dtype: torch.dtype
    tokens: int
    hidden: int
    rank: int
    size: int
    warmup: int
    rep: int


def bench_ms(fn: Callable[[], object], setup: Setup) -> float:
    if setup.device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=setup.warmup, rep=setup.rep, return_mode="median"))
    fn()  # smoke: wall clock of a couple of calls
    start = time.perf_counter()
    for _ in range(2):
        fn()
    return (time.perf_counter() - start) / 2 * 1e3


def measure(op: str, variant: str, impl: str, setup: Setup, forward: Callable[[torch.Tensor], torch.Tensor],
            x: torch.Tensor, params: list[torch.Tensor], reference_out: torch.Tensor | None) -> tuple[Row, torch.Tensor]:
    """Time ``forward(x)`` and its backward (x and ``params`` need gradients) under bf16 autocast."""
    autocast = torch.autocast(setup.device.type, dtype=setup.dtype)
    leaves = [x, *params]

    def fwd():
        with torch.no_grad(), autocast:
            return forward(x)

    def fwd_bwd():
        for t in leaves:
            t.grad = None
        with autocast:
            out = forward(x)
        out.backward(grad_out)

    with autocast:
        out = forward(x)
    grad_out = torch.randn_like(out)
    fwd_ms, fwd_bwd_ms = bench_ms(fwd, setup), bench_ms(fwd_bwd, setup)
    peak = 0.0
    if setup.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fwd_bwd()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    out = out.detach().float()
    error = 0.0 if reference_out is None else ((out - reference_out).abs().max() / reference_out.abs().max()).item()
    row = Row(op, variant, impl, setup.tokens, setup.hidden, setup.rank, str(setup.dtype).removeprefix("torch."),
              round(fwd_ms, 4), round(fwd_bwd_ms, 4), round(peak, 1), error)
    print(f"{op:12s} {variant:9s} {impl:9s} fwd {fwd_ms:9.3f} ms  fwd+bwd {fwd_bwd_ms:9.3f} ms  "
          f"peak {peak:8.1f} MiB  err {error:.1e}", flush=True)
    return row, out


def _lora_weights(setup: Setup, d_in: int, d_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(setup.rank, d_in, generator=g) / d_in**0.5).to(setup.device).requires_grad_()
    b = (torch.randn(d_out, setup.rank, generator=g) * 0.02).to(setup.device).requires_grad_()
    return a, b


def _peft_layer(base: nn.Module, a: torch.Tensor, b: torch.Tensor, quantized: bool) -> nn.Module:
    from peft import LoraConfig
    from peft.tuners import lora

    config = LoraConfig(r=a.shape[0], lora_alpha=2 * a.shape[0])
    if quantized:
        from peft.tuners.lora.bnb import Linear4bit as cls
    else:
        cls = lora.Linear
    layer = cls(base, "default", config=config, r=a.shape[0], lora_alpha=2 * a.shape[0])
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(a)
        layer.lora_B["default"].weight.copy_(b)
    return layer.to(a.device)


def _nf4_base(setup: Setup, weight: torch.Tensor) -> nn.Module:
    import bitsandbytes as bnb

    base = bnb.nn.Linear4bit(setup.hidden, setup.hidden, bias=False, compute_dtype=setup.dtype, quant_type="nf4")
    base.weight = bnb.nn.Params4bit(weight.float().cpu(), requires_grad=False, quant_type="nf4")
    if setup.device.type == "cuda":
        return base.to(setup.device)
    base.weight = base.weight._quantize("cpu")
    return base


def bench_lora_linear(setup: Setup, quantized: bool) -> list[Row]:
    from autopeft import kernels

    d = setup.hidden
    g = torch.Generator().manual_seed(1)
    weight = (torch.randn(d, d, generator=g) / d**0.5).to(setup.device, setup.dtype)
    if quantized:
        base = _nf4_base(setup, weight)
    else:
        base = nn.Linear(d, d, bias=False, device=setup.device, dtype=setup.dtype)
        base.weight.data.copy_(weight)
    base.requires_grad_(False)
    a, b = _lora_weights(setup, d, d)
    x = torch.randn(setup.tokens, d, generator=g).to(setup.device, setup.dtype).requires_grad_()
    variant, rows = "nf4" if quantized else "dense", []

    def ours(x):
        return kernels.lora_linear(x, base, a, b, 2.0)

    with kernels.kernel_mode("off"):
        row, reference = measure("lora_linear", variant, "reference", setup, ours, x, [a, b], None)
    rows.append(row)
    with kernels.kernel_mode("triton"):
        rows.append(measure("lora_linear", variant, "triton", setup, ours, x, [a, b], reference)[0])
    peft_layer = _peft_layer(base, a, b, quantized)
    peft_params = [p for p in peft_layer.parameters() if p.requires_grad]
    rows.append(measure("lora_linear", variant, "peft", setup, peft_layer, x, peft_params, reference)[0])
    return rows


def bench_lora_delta(setup: Setup) -> list[Row]:
    from autopeft import kernels

    d = setup.hidden
    g = torch.Generator().manual_seed(2)
    a, b = _lora_weights(setup, d, d)
    x = torch.randn(setup.tokens, d, generator=g).to(setup.device, setup.dtype).requires_grad_()
    y = torch.randn(setup.tokens, d, generator=g).to(setup.device, setup.dtype)

    def delta(x):
        return kernels.lora_delta(x, y, a, b, 2.0)

    with kernels.kernel_mode("off"):
        row, reference = measure("lora_delta", "-", "reference", setup, delta, x, [a, b], None)
    with kernels.kernel_mode("triton"):
        return [row, measure("lora_delta", "-", "triton", setup, delta, x, [a, b], reference)[0]]


def bench_adapter(setup: Setup, parallel: bool) -> list[Row]:
    from autopeft import kernels

    d, m = setup.hidden, setup.size
    g = torch.Generator().manual_seed(3)
    down, up = nn.Linear(d, m).to(setup.device), nn.Linear(m, d).to(setup.device)
    with torch.no_grad():
        up.weight.normal_(std=0.02)
    x = torch.randn(setup.tokens, d, generator=g).to(setup.device, setup.dtype).requires_grad_()
    residual = torch.randn(setup.tokens, d, generator=g).to(setup.device, setup.dtype) if parallel else None
    variant = "parallel" if parallel else "serial"

    def adapter(h):
        return kernels.bottleneck_adapter(h, down.weight, down.bias, up.weight, up.bias, nn.ReLU(), 1.0, residual)

    params = [*down.parameters(), *up.parameters()]
    with kernels.kernel_mode("off"):
        row, reference = measure("adapter", variant, "reference", setup, adapter, x, params, None)
    with kernels.kernel_mode("triton"):
        return [row, measure("adapter", variant, "triton", setup, adapter, x, params, reference)[0]]


def machine(device: torch.device) -> dict:
    import triton

    record = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
              "torch": torch.__version__, "triton": triton.__version__,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if device.type == "cuda":
        record |= {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda}
    for package in ("bitsandbytes", "peft"):
        with contextlib.suppress(ImportError):
            record[package] = __import__(package).__version__
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="bottleneck adapter size")
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--warmup", type=int, default=25, help="do_bench warm-up (ms)")
    parser.add_argument("--rep", type=int, default=200, help="do_bench measuring time (ms)")
    parser.add_argument("--out", type=Path, default=None,
                        help="CSV path (default: studies/kernels/results.csv; with --smoke a temp file)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes on CPU via TRITON_INTERPRET=1, to check this script (timings meaningless)")
    args = parser.parse_args(argv)
    if args.smoke:
        if os.environ.get("TRITON_INTERPRET") != "1":
            print("--smoke needs TRITON_INTERPRET=1 in the environment (set before Python starts)")
            return 2
        device = torch.device("cpu")
        args.out = args.out or Path(tempfile.gettempdir()) / "autopeft-kernels-smoke" / "results.csv"
        args.tokens, args.hidden, args.rank, args.size = 37, 64, 4, 8
    elif not torch.cuda.is_available():
        print("no CUDA device (torch.cuda.is_available() is False): the kernels benchmark needs a GPU; "
              "nothing was measured")
        return 0
    else:
        device = torch.device("cuda")
    args.out = args.out or HERE / "results.csv"
    setup = Setup(device, {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype], args.tokens, args.hidden,
                  args.rank, args.size, args.warmup, args.rep)
    rows = (bench_lora_linear(setup, quantized=False) + bench_lora_linear(setup, quantized=True)
            + bench_lora_delta(setup) + bench_adapter(setup, parallel=False) + bench_adapter(setup, parallel=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    (args.out.parent / "machine.json").write_text(json.dumps(machine(device), indent=2) + "\n")
    print(f"wrote {args.out} ({len(rows)} rows) and {args.out.parent / 'machine.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
