"""Every Triton kernel against its pure-torch reference, run by the Triton interpreter on the CPU.

``AUTOPEFT_KERNELS=triton`` + ``TRITON_INTERPRET=1`` forces the kernels; ``AUTOPEFT_KERNELS=off`` the
references. Shapes are small and odd (batch 3, seq 17, hidden 40, rank 3) and the interpreter's tiles
are 16-32 wide, so every kernel runs several row/column tiles, several K steps and every mask. Each
case compares the forward and every gradient, as max |kernel - reference| / max |reference| under a
per-dtype tolerance, and checks in the autograd graph that the kernel's Function really ran.

Triton reads ``TRITON_INTERPRET`` when it is imported (and bitsandbytes/transformers import it early),
so the interpreter cases (``@interpreter_case``) run together in one fresh process,
``TRITON_INTERPRET=1 python tests/test_kernels.py [CASE ...]``; each is reported as its own test here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable

import pytest
import torch
import torch.nn as nn

from autopeft import kernels
from autopeft.core.errors import UserError
from autopeft.peft.inject import inject
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.testing import tiny_batch, tiny_model

BATCH, SEQ, HIDDEN, OUT, RANK = 3, 17, 40, 56, 3
TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}
CASES: dict[str, Callable[[], None]] = {}
_RESULT_MARK = "KERNEL-CASES "


def interpreter_case(*params: tuple) -> Callable:
    """Register a case for the interpreter process, once per parameter tuple (like parametrize)."""
    def register(fn: Callable) -> Callable:
        for args in params or [()]:
            label = "-".join(str(a).replace("torch.", "") for a in args)
            CASES[f"{fn.__name__}[{label}]" if args else fn.__name__] = lambda fn=fn, args=args: fn(*args)
        return fn
    return register


def _randn(*shape, seed, dtype=torch.float32, scale=1.0, grad=True):
    t = (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)
    return t.requires_grad_(grad)


def _graph(out: torch.Tensor) -> set[str]:
    """Names of the autograd nodes behind ``out`` (a custom Function F shows up as ``FBackward``)."""
    names, stack, seen = set(), [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(f for f, _ in node.next_functions)
    return names


def _run(mode, fn, tensors):
    with kernels.kernel_mode(mode):
        leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]
        out = fn(*leaves)
        out.backward(_randn(*out.shape, seed=99, dtype=out.dtype, grad=False))
    return out, [out.detach()] + [t.grad for t in leaves if t.requires_grad]


def assert_kernel_matches(fn, tensors, dtype, function: str):
    """Forward and all gradients of ``fn`` with the kernels forced vs the references."""
    _, expected = _run("off", fn, tensors)
    out, got = _run("triton", fn, tensors)
    assert f"{function}Backward" in _graph(out), f"{function} did not run"
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        assert g is not None and g.dtype == e.dtype and g.shape == e.shape, i
        error = ((g.float() - e.float()).abs().max() / e.float().abs().max()).item()
        assert error <= TOL[dtype], f"output {i} (0 = forward, then gradients): relative error {error:.2e}"


def _lora(dtype_in=torch.float32):
    x = _randn(BATCH, SEQ, HIDDEN, seed=1, dtype=dtype_in)
    a = _randn(RANK, HIDDEN, seed=2, scale=HIDDEN**-0.5)
    b = _randn(OUT, RANK, seed=3, scale=0.5)
    return x, a, b


def _base(kind: str, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(4)
    if kind == "conv1d":  # GPT-2's projection, weight stored (d_in, d_out)
        from transformers.pytorch_utils import Conv1D

        base = Conv1D(OUT, HIDDEN)
        nn.init.normal_(base.bias)
    else:
        base = nn.Linear(HIDDEN, OUT)
    return base.to(dtype).requires_grad_(False)


@interpreter_case(("linear", torch.float32), ("linear", torch.bfloat16), ("linear", torch.float16),
                  ("conv1d", torch.float32))
def fused_lora_linear_matches_reference(kind, dtype):
    base = _base(kind, dtype)
    x, a, b = _lora(dtype)
    assert_kernel_matches(lambda x, a, b: kernels.lora_linear(x, base, a, b, 2.0), [x, a, b], dtype,
                          "LoRALinearFunction")


def _nf4_linear(compute_dtype: torch.dtype) -> nn.Module:
    import bitsandbytes as bnb

    base = bnb.nn.Linear4bit(HIDDEN, OUT, compute_dtype=compute_dtype, quant_type="nf4")
    weight = torch.randn(OUT, HIDDEN, generator=torch.Generator().manual_seed(5))
    base.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")._quantize("cpu")
    base.bias.requires_grad_(False)
    assert base.weight.quant_state.nested  # bitsandbytes' default: absmax itself quantised (8-bit)
    return base


@interpreter_case()
def nf4_tiles_decode_exactly_as_bitsandbytes():
    """x = I and B = 0 make the fused output W_dequantᵀ + b: any nibble/absmax slip shows bit for bit."""
    from autopeft.kernels.lora_linear.reference import dequantize_nf4

    base = _nf4_linear(torch.float32)
    with kernels.kernel_mode("triton"):
        out = kernels.lora_linear(torch.eye(HIDDEN), base, torch.zeros(RANK, HIDDEN), torch.zeros(OUT, RANK), 1.0)
    torch.testing.assert_close(out, dequantize_nf4(base).T + base.bias, rtol=0, atol=0)


@interpreter_case((torch.float32,), (torch.bfloat16,))
def fused_lora_linear_on_nf4_base_matches_reference(dtype_in):
    base = _nf4_linear(torch.bfloat16)  # QLoRA: NF4 storage, bf16 compute, output in x's dtype
    x, a, b = _lora(dtype_in)
    assert_kernel_matches(lambda x, a, b: kernels.lora_linear(x, base, a, b, 2.0), [x, a, b], torch.bfloat16,
                          "LoRALinearFunction")


@interpreter_case((torch.float32,), (torch.bfloat16,))
def lora_delta_matches_reference(dtype):
    x, a, b = _lora(dtype)
    y = _randn(BATCH, SEQ, OUT, seed=6, dtype=dtype)
    assert_kernel_matches(lambda x, y, a, b: kernels.lora_delta(x, y, a, b, 0.75), [x, y, a, b], dtype,
                          "LoRADeltaFunction")


@interpreter_case(("serial", "relu", torch.float32), ("serial", "gelu", torch.float32),
                  ("serial", "silu", torch.float32), ("serial", "tanh", torch.float32),
                  ("serial", "gelu", torch.bfloat16), ("parallel", "relu", torch.float32),
                  ("parallel", "silu", torch.bfloat16))
def bottleneck_adapter_matches_reference(form, act, dtype):
    h = _randn(BATCH, SEQ, HIDDEN, seed=7, dtype=dtype)
    tensors = [h, _randn(RANK, HIDDEN, seed=8, scale=0.5), _randn(RANK, seed=9), _randn(HIDDEN, RANK, seed=10),
               _randn(HIDDEN, seed=11)]
    if form == "parallel":
        tensors.append(_randn(BATCH, SEQ, HIDDEN, seed=12, dtype=dtype))
    module = {"relu": nn.ReLU(), "gelu": nn.GELU(), "silu": nn.SiLU(), "tanh": nn.Tanh()}[act]

    def adapter(h, wd, bd, wu, bu, residual=None):
        return kernels.bottleneck_adapter(h, wd, bd, wu, bu, module, 0.5, residual=residual)

    assert_kernel_matches(adapter, tensors, dtype, "BottleneckFunction")


@interpreter_case()
def unsupported_cases_fall_back():
    x, a, b = _lora()
    with kernels.kernel_mode("triton"):
        # dropout on the LoRA input only: base(x) + the delta kernel
        out = kernels.lora_linear(x, _base("linear", torch.float32), a, b, 2.0, nn.Dropout(0.1).train())
        assert {"LoRADeltaFunctionBackward", "AddmmBackward0"} <= _graph(out)
        trainable = _base("linear", torch.float32).requires_grad_(True)  # the fused kernel computes no dW
        assert "LoRALinearFunctionBackward" not in _graph(kernels.lora_linear(x, trainable, a, b, 2.0))
        h, wd, wu = _randn(2, HIDDEN, seed=1), _randn(RANK, HIDDEN, seed=2), _randn(HIDDEN, RANK, seed=3)
        tanh_gelu = kernels.bottleneck_adapter(h, wd, None, wu, None, nn.GELU(approximate="tanh"), 1.0)
        assert "BottleneckFunctionBackward" not in _graph(tanh_gelu)


@interpreter_case()
def methods_route_through_the_dispatcher():
    """A LoRA + adapter plan on a tiny BERT: the kernels run inside the model and match the references."""
    model = tiny_model("bert")
    plan = Plan((PlanEntry("lora", (0,), ("q", "v"), {"r": RANK}), PlanEntry("adapter", (0,), ("down",), {"size": 5})))
    handle = inject(model, plan, train_head=False)
    with torch.no_grad():
        for _, p in handle.adapter_parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
    batch = tiny_batch(length=SEQ)
    results = {}
    for mode in ("off", "triton"):
        with kernels.kernel_mode(mode):
            model.zero_grad()
            logits = model(**batch).logits
            logits.square().sum().backward()
        results[mode] = (logits.detach(), {n: p.grad.clone() for n, p in handle.adapter_parameters()})
        if mode == "triton":
            assert {"LoRALinearFunctionBackward", "BottleneckFunctionBackward"} <= _graph(logits)
    torch.testing.assert_close(results["triton"][0], results["off"][0], rtol=1e-4, atol=1e-5)
    for name, grad in results["off"][1].items():
        torch.testing.assert_close(results["triton"][1][name], grad, rtol=1e-4, atol=1e-5, msg=name)


# --- in the pytest process -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def interpreter_results() -> dict[str, str | None]:
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "AUTOPEFT_KERNELS"} | {"TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT_MARK)]
    assert proc.returncode == 0 and lines, f"interpreter process failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len(_RESULT_MARK):])


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_under_interpreter(interpreter_results, case):
    error = interpreter_results[case]
    assert error is None, error


def test_dispatcher_picks_reference_on_cpu_and_kernel_when_forced(monkeypatch):
    x = torch.zeros(2, 3)
    monkeypatch.delenv("AUTOPEFT_KERNELS", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr("autopeft.kernels._triton.check_interpreter", lambda: None)  # Triton is imported already
    assert kernels.mode() is kernels.Mode.AUTO
    assert kernels.backend(x) is kernels.Backend.REFERENCE  # auto never interprets: CPU means reference
    monkeypatch.setenv("AUTOPEFT_KERNELS", "triton")
    assert kernels.backend(x) is kernels.Backend.TRITON
    monkeypatch.setenv("AUTOPEFT_KERNELS", "off")
    assert kernels.backend(x) is kernels.Backend.REFERENCE
    monkeypatch.setenv("AUTOPEFT_KERNELS", "triton")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(UserError, match="TRITON_INTERPRET=1"):
        kernels.backend(x)
    monkeypatch.setenv("AUTOPEFT_KERNELS", "fast")
    with pytest.raises(UserError, match="auto, off, triton"):
        kernels.backend(x)


def test_late_interpreter_setting_is_a_clear_error(monkeypatch):
    import triton.language  # noqa: F401  (imported without the interpreter, as in any normal process)

    monkeypatch.setenv("AUTOPEFT_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(UserError, match="after Triton was imported"):
        kernels.backend(torch.zeros(1))


def test_reference_path_is_the_methods_original_expression(monkeypatch):
    """On CPU the methods compute bit for bit what they computed before the dispatcher existed."""
    monkeypatch.delenv("AUTOPEFT_KERNELS", raising=False)
    x, a, b = _lora()
    y = _randn(BATCH, SEQ, OUT, seed=6, dtype=torch.bfloat16, grad=False)
    expected = y + ((x.to(a.dtype) @ a.T @ b.T) * 0.75).to(y.dtype)
    assert torch.equal(kernels.lora_delta(x, y, a, b, 0.75), expected)
    h = _randn(BATCH, SEQ, HIDDEN, seed=7, dtype=torch.bfloat16, grad=False)
    down, up = nn.Linear(HIDDEN, RANK), nn.Linear(RANK, HIDDEN)
    expected = h + (up(nn.GELU()(down(h.float()))) * 0.5).to(h.dtype)
    assert torch.equal(kernels.bottleneck_adapter(h, down.weight, down.bias, up.weight, up.bias, nn.GELU(), 0.5),
                       expected)


if __name__ == "__main__":  # the interpreter process: run the named cases (default: all), print the results
    results = {}
    for name in sys.argv[1:] or list(CASES):
        try:
            CASES[name]()
            results[name] = None
        except Exception:
            results[name] = traceback.format_exc()
    print(_RESULT_MARK + json.dumps(results))
    sys.exit(0)
