"""The analytic memory model behind :mod:`autopeft.memory.estimate`: bytes per stage of one training step.

Notation: B batch, T tokens per example, P_in prompt (virtual) tokens, N = B (T + P_in) tokens in the
blocks, H hidden, I MLP width, h query heads, h_kv key/value heads, d head size, S = T + P_in + P_l
keys in layer l (prefix length P_l), V vocabulary, a = bytes of an activation (2 under bf16 autocast,
4 in fp32), w = bytes of autocast's copy of a frozen weight (2 under bf16, 0 in fp32: fp32 saves the
weight itself).

**What backward keeps.** Autograd saves a tensor only if a gradient has to flow through the op that
needs it. A PEFT step needs gradients from the lowest layer with trainable parameters (or from the
embeddings, for prompts) upwards, so layers below save nothing. Requires-grad flags are propagated op by
op through each family's block (``_block``), so even the lowest trainable layer is exact: with LoRA on
``v`` only, the block's norm before attention saves nothing. Per op (measured on torch 2.13, verified
tensor by tensor against ``saved_tensors_hooks``):

- frozen projection with a grad-requiring input: its weight as the matmul computes it -> ``w * d_in *
  d_out`` (under bf16 autocast a bf16 *copy* per call: frozen weights are not in autocast's cache);
  quantized (bitsandbytes) projections save nothing of the weight;
- LayerNorm: input (fp32) + mean + rstd = 4 N H + 8 N; RMSNorm: 4 N H + 4 N;
- GELU / SiLU: input, a N I; GPT-2's tanh GELU (python formula) 4 a N I; SwiGLU's product 2 a N I;
- dropout (training mode): the mask, N x width x (input bytes on CPU, 1 byte (bool) on CUDA);
- attention, fused kernel (CUDA; CPU when attention dropout is 0): q and out a B h T d each, k and v
  a B h' S d each (h' = h_kv, or h when a mask is given: transformers then repeats k/v), logsumexp 4 B h T;
  math kernel (CPU with attention dropout): fp32 q, k, v and three (B, h, T, S) fp32 tensors
  (softmax output, dropout mask, dropped probabilities); an explicit mask adds B T S bytes;
- methods on sites: counted by running the method's module on fake tensors
  (:mod:`autopeft.memory.methods`), so any registered method is covered without a formula here.

**Peak.** Memory resident through the step (weights, trainable parameters, optimizer states, the batch)
plus the largest of: end of forward (all saved activations + the loss's temporaries), start of backward
(all saved + the head's gradient temporaries + parameter gradients), backward of the top trainable
block (saved + that block's gradient temporaries), and the optimizer step (gradients + its scratch).
The temporaries' multipliers (``_HEAD_*``, ``_BLOCK_*``) were calibrated against measured CPU peaks
(``studies/memory-estimator``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from autopeft.core.arch import ModelArch
from autopeft.memory.methods import site_method_cost
from autopeft.methods import Placement, get_method
from autopeft.peft.plan import Placement as PlanPlacement
from autopeft.peft.plan import Plan

# calibrated temporaries, in units named after each constant (see the module docstring)
_HEAD_FWD_LOGITS = 1.0  # x (B T V) logits in compute dtype alive with the fp32 copy and its log-softmax
_HEAD_BWD_LOGITS = 2.0  # x (B T V) fp32: gradient of the loss w.r.t. log-probabilities and logits
_BLOCK_BWD_SCORES = 2.0  # x (B h T S) probabilities' gradients in an eager/math attention backward
_BLOCK_BWD_HIDDEN = 2.0  # x (N I) activation-sized gradients in an MLP backward


@dataclass(frozen=True)
class ModelFacts:
    """What the memory model needs to know about a model beyond its block shapes."""

    arch: ModelArch
    task: str  # classification | causal-lm
    num_labels: int
    base_params: int  # unique parameters of the base (task head excluded; LM head included when untied)
    quantizable_params: int  # weights of the blocks' projections (what --quantize converts)
    head_params: int  # trainable classification head (0 for causal LM)
    hidden_dropout: float
    attention_dropout: float
    embedding_dropout: float
    activation: str  # gelu | gelu_new | silu
    pooler: bool  # BERT classification reads [CLS] through the pooler (a frozen H x H projection)
    pre_classifier: bool  # DistilBERT: a trainable H x H projection before the classifier
    embedding_norm: bool  # a LayerNorm on the embeddings (BERT, DistilBERT)


@dataclass(frozen=True)
class Shape:
    """Everything per-step the formulas need, resolved from the settings."""

    batch: int
    tokens: int  # T, real tokens per example
    prompt: int  # P_in, virtual tokens prepended
    act: int  # a
    weight_copy: int  # w
    autocast: bool
    cuda: bool
    padding: bool
    quantized: bool
    cached_weights: bool  # the trainer's one bf16 copy of the frozen projections (autopeft/peft/precision.py)
    fast_dropout: bool  # the trainer's CPU dropout x * keep * scale: a bool mask (autopeft/training/fastpath/step_kernels.py)
    eager_attention: bool  # the trainer's CPU eager attention for short batches (autopeft/training/fastpath/step_kernels.py)
    head_rows: bool = False  # the trainer's last block runs token 0 only after attention (autopeft/training/fastpath/head_rows.py)

    @property
    def seq(self) -> int:
        return self.tokens + self.prompt

    @property
    def n(self) -> int:
        return self.batch * self.seq

    @property
    def mlp_act(self) -> int:
        """Bytes of the MLP's activations: a bitsandbytes projection returns its input's dtype, so with a
        quantized base the MLP (fed by the fp32 residual stream's norm) runs in fp32."""
        return 4 if self.quantized else self.act

    def mask_bytes(self, input_bytes: int) -> int:
        """Bytes per element of a dropout mask: bool on CUDA and with the trainer's CPU dropout; torch's
        CPU dropout keeps a mask in the input's dtype."""
        return 1 if self.cuda or self.fast_dropout else input_bytes


@dataclass
class Ledger:
    """Bytes by breakdown line, and whether the current op's output needs a gradient."""

    lines: dict[str, float] = field(default_factory=dict)

    def add(self, line: str, nbytes: float) -> None:
        if nbytes:
            self.lines[line] = self.lines.get(line, 0.0) + nbytes

    @property
    def total(self) -> float:
        return sum(self.lines.values())


ACTIVATIONS = "activations"
WEIGHT_COPIES = "frozen weight copies"
METHOD_ACTIVATIONS = "method activations"


class StepModel:
    """The per-layer accounting for one (model, plan, settings); see the module docstring."""

    def __init__(self, facts: ModelFacts, plan: Plan, shape: Shape) -> None:
        self.facts = facts
        self.arch = facts.arch
        self.shape = shape
        self.placements = plan.placements(self.arch)
        self.by_layer: dict[int, list[PlanPlacement]] = {}
        self.prefix: dict[int, int] = {}
        self.input_methods: list[PlanPlacement] = []
        for p in self.placements:
            method = get_method(p.method)
            if method.placement is Placement.INPUT:
                self.input_methods.append(p)
            else:
                self.by_layer.setdefault(p.layer, []).append(p)
            if method.placement is Placement.ATTENTION:
                self.prefix[p.layer] = self.prefix.get(p.layer, 0) + int(getattr(p.config, "length", 0))

    # --- the forward's saved tensors ---------------------------------------------------------
    def saved(self) -> tuple[Ledger, list[float], bool]:
        """(ledger of saved bytes, saved bytes per layer, whether the blocks' output needs a gradient)."""
        ledger = Ledger()
        grad = bool(self.input_methods)
        if grad:
            self._embeddings(ledger)
        per_layer = []
        for layer in range(self.arch.num_layers):
            before = ledger.total
            grad = self._block(ledger, layer, grad)
            per_layer.append(ledger.total - before)
        return ledger, per_layer, grad

    def _embeddings(self, ledger: Ledger) -> None:
        s, f = self.shape, self.facts
        n, hidden = s.n, self.arch.hidden
        if f.embedding_norm:
            ledger.add(ACTIVATIONS, 4 * n * hidden + 8 * n)
        if f.embedding_dropout > 0:
            ledger.add(ACTIVATIONS, n * hidden * s.mask_bytes(4))

    def _block(self, ledger: Ledger, layer: int, grad: bool) -> bool:
        family = self.arch.family.name
        if family == "llama":
            return self._llama(ledger, layer, grad)
        if family == "gpt2":
            return self._gpt2(ledger, layer, grad)
        return self._bert(ledger, layer, grad, distil=family == "distilbert")

    def _llama(self, ledger: Ledger, layer: int, grad: bool) -> bool:
        s, n, inter = self.shape, self.shape.n, self._inter()
        normed = self._norm(ledger, layer, "ln_attn", grad, rms=True)
        qkv = self._projections(ledger, layer, ("q", "k", "v"), normed, x_fp32=True)
        attn = self._attention(ledger, layer, any(qkv))
        o = self._projections(ledger, layer, ("o",), attn, x_fp32=False)[0]
        residual = grad or o
        residual = self._norm(ledger, layer, "ln_mlp", residual, rms=True)
        gate, up = self._projections(ledger, layer, ("gate", "up"), residual, x_fp32=True)
        ledger.add(ACTIVATIONS, s.mlp_act * n * inter * ((2 if gate else 0) + (1 if up else 0)))
        down = self._projections(ledger, layer, ("down",), gate or up, x_fp32=False)[0]
        return residual or down

    def _gpt2(self, ledger: Ledger, layer: int, grad: bool) -> bool:
        s, n, hidden, inter = self.shape, self.shape.n, self.arch.hidden, self._inter()
        normed = self._norm(ledger, layer, "ln_attn", grad, rms=False)
        qkv = self._projections(ledger, layer, ("q", "k", "v"), normed, x_fp32=True)
        attn = self._attention(ledger, layer, any(qkv))
        o = self._projections(ledger, layer, ("o",), attn, x_fp32=False)[0]
        if o and self.facts.hidden_dropout > 0:
            ledger.add(ACTIVATIONS, n * hidden * s.mask_bytes(s.act))
        residual = grad or o
        normed = self._norm(ledger, layer, "ln_mlp", residual, rms=False)
        up = self._projections(ledger, layer, ("up",), normed, x_fp32=True)[0]
        if up:
            ledger.add(ACTIVATIONS, s.mlp_act * n * inter * (4 if self.facts.activation == "gelu_new" else 1))
        down = self._projections(ledger, layer, ("down",), up, x_fp32=False)[0]
        if down and self.facts.hidden_dropout > 0:
            ledger.add(ACTIVATIONS, n * hidden * s.mask_bytes(s.mlp_act))
        return residual or down

    def _bert(self, ledger: Ledger, layer: int, grad: bool, distil: bool) -> bool:
        s, hidden, inter = self.shape, self.arch.hidden, self._inter()
        qkv = self._projections(ledger, layer, ("q", "k", "v"), grad, x_fp32=True)
        attn = self._attention(ledger, layer, any(qkv))
        n = self._rows_after_attention(layer)
        o = self._projections(ledger, layer, ("o",), attn, x_fp32=False, rows=n)[0]
        if o and not distil and self.facts.hidden_dropout > 0:
            ledger.add(ACTIVATIONS, n * hidden * s.mask_bytes(s.act))
        residual = self._norm(ledger, layer, "ln_attn", grad or o, rms=False, rows=n)
        up = self._projections(ledger, layer, ("up",), residual, x_fp32=True, rows=n)[0]
        if up:
            ledger.add(ACTIVATIONS, s.mlp_act * n * inter)
        down = self._projections(ledger, layer, ("down",), up, x_fp32=False, rows=n)[0]
        if down and self.facts.hidden_dropout > 0:
            ledger.add(ACTIVATIONS, n * hidden * s.mask_bytes(s.mlp_act))
        return self._norm(ledger, layer, "ln_mlp", residual or down, rms=False, rows=n)

    def _rows_after_attention(self, layer: int) -> int:
        """Rows of the post-attention part of a block: B in the last block when it runs the head rows only."""
        s = self.shape
        head_rows = s.head_rows and s.prompt == 0 and layer == self.arch.num_layers - 1
        return s.batch if head_rows else s.n

    def _inter(self) -> int:
        return self.arch.sites["up"].out_features

    def _norm(self, ledger: Ledger, layer: int, site: str, grad: bool, rms: bool, rows: int | None = None) -> bool:
        """A norm on the fp32 residual stream; methods on norm sites make its output trainable."""
        n, hidden = rows or self.shape.n, self.arch.hidden
        if grad:
            ledger.add(ACTIVATIONS, 4 * n * hidden + (4 if rms else 8) * n)
        tuned = [p for p in self.by_layer.get(layer, []) if p.site == site]
        if tuned:  # a norm-site method: assumed to keep the norm's fp32 output once
            ledger.add(METHOD_ACTIVATIONS, 4 * n * hidden * len(tuned))
        return grad or bool(tuned)

    def _projections(self, ledger: Ledger, layer: int, sites: tuple[str, ...], grad: bool,
                     x_fp32: bool, rows: int | None = None) -> list[bool]:
        """Projections reading one input (``rows`` of it, default N); whether each output needs a gradient."""
        s, arch = self.shape, self.arch
        n = rows or s.n
        copied: set[str] = set()
        shared = 0.0
        out = []
        x_dtype = torch.float32 if (x_fp32 or not s.autocast) else torch.bfloat16
        for name in sites:
            site = arch.sites.get(name)
            if site is None:  # e.g. no gate outside Llama
                out.append(False)
                continue
            methods = [p for p in self.by_layer.get(layer, []) if p.site == name and p.linear is not None]
            if grad and site.path not in copied:
                copied.add(site.path)
                if not s.quantized and not (s.cached_weights and not self.reads_weight(layer, site.path)):
                    ledger.add(WEIGHT_COPIES, s.weight_copy * site.in_features * site.out_features)
            for p in methods:
                cost = site_method_cost(get_method(p.method), p.config, arch, site, autocast=s.autocast,
                                        x_dtype=x_dtype, x_requires_grad=grad)
                ledger.add(METHOD_ACTIVATIONS, cost.per_token * n + cost.constant)
                shared = max(shared, cost.shared_per_token)
            out.append(grad or bool(methods))
        ledger.add(METHOD_ACTIVATIONS, shared * n)
        return out

    def reads_weight(self, layer: int, path: str) -> bool:
        """A method on this projection reads the frozen weight (DoRA): the trainer keeps it fp32."""
        return any(p.linear is not None and p.linear.path == path and _binds(p, self.arch)
                   for p in self.by_layer.get(layer, []))

    def _attention(self, ledger: Ledger, layer: int, grad: bool) -> bool:
        prefix = self.prefix.get(layer, 0)
        grad = grad or prefix > 0  # prefix key/values are trainable
        if not grad:
            return False
        s, arch = self.shape, self.arch
        b, t, heads, d = s.batch, s.seq, arch.num_heads, arch.head_dim
        keys = t + prefix
        masked = s.padding or prefix > 0
        if s.eager_attention:  # q, k, v (k/v repeated to h heads) and the (B, h, T, S) probabilities
            nbytes = s.act * b * heads * d * (t + 2 * keys) + self._eager_probs_bytes() * b * heads * t * keys
        elif self._fused_attention():
            kv_heads = heads if masked else arch.num_kv_heads
            nbytes = s.act * b * heads * t * d * 2 + s.act * b * kv_heads * keys * d * 2 + 4 * b * heads * t
        else:  # math kernel: fp32 (upcast) q, k, v and three (B, h, T, S) tensors
            nbytes = 4 * b * heads * d * (t + 2 * keys) + 3 * 4 * b * heads * t * keys
        if prefix:
            nbytes += b * t * keys  # the extended bool mask of this layer
        ledger.add(ACTIVATIONS, nbytes)
        return True

    def _fused_attention(self) -> bool:
        return self.shape.cuda or self.facts.attention_dropout == 0

    def _eager_probs_bytes(self) -> int:
        """Bytes per (B, h, T, S) element eager attention saves: the softmax output, the dropout mask and
        the (dropped) probabilities the value matmul reads. Under autocast the trainer casts the mask to
        bf16 (:mod:`autopeft.peft.attention`), so softmax runs in bf16, except in Llama-style models, whose
        eager attention upcasts softmax to fp32 and casts its output back."""
        s, family = self.shape, self.arch.family.name
        dropout = self.facts.attention_dropout > 0
        if not s.autocast:
            return 4 + (s.mask_bytes(4) + 4 if dropout else 0)
        upcast = family == "llama"
        softmax = 4 if upcast else s.act
        read_by_matmul = s.act if dropout or upcast else 0  # else the softmax output itself
        return softmax + (s.mask_bytes(s.act) if dropout else 0) + read_by_matmul

    # --- after the blocks ----------------------------------------------------------------------
    def head(self, grad: bool) -> tuple[Ledger, float, float]:
        """(saved bytes of the head and loss, forward temporaries at the loss, backward temporaries)."""
        s, f, arch = self.shape, self.facts, self.arch
        ledger = Ledger()
        b, t, hidden = s.batch, s.tokens, arch.hidden
        rows = b * t
        if f.task == "causal-lm":
            if grad:
                self._final_norm(ledger, rows)
                ledger.add(WEIGHT_COPIES, s.weight_copy * arch.vocab_size * hidden)  # never quantized
                shifted = b * (t - 1) * arch.vocab_size
                ledger.add(ACTIVATIONS, 4 * shifted)  # log-softmax output (fp32)
                logits = rows * arch.vocab_size
                fwd = _HEAD_FWD_LOGITS * s.act * logits + 4 * shifted
                bwd = _HEAD_BWD_LOGITS * 4 * shifted
                return ledger, fwd, bwd
            return ledger, 0.0, 0.0
        labels = f.num_labels
        if arch.family.name in ("gpt2", "llama"):  # a score projection on every position, then the last
            if grad:
                self._final_norm(ledger, rows)
            ledger.add(ACTIVATIONS, s.act * rows * hidden)  # the trainable score's input
        elif f.pooler:
            if grad:
                ledger.add(WEIGHT_COPIES, s.weight_copy * hidden * hidden)
                ledger.add(ACTIVATIONS, s.act * b * hidden)  # tanh output
            ledger.add(ACTIVATIONS, b * hidden * (s.mask_bytes(4) + s.act))  # dropout mask, classifier input
        else:  # DistilBERT: trainable pre-classifier, ReLU, dropout, classifier
            ledger.add(ACTIVATIONS, b * hidden * (s.act * 3 + s.mask_bytes(s.act)))
        ledger.add(ACTIVATIONS, 4 * b * labels)
        return ledger, 0.0, 4.0 * b * labels

    def _final_norm(self, ledger: Ledger, rows: int) -> None:
        rms = self.arch.family.name == "llama"
        ledger.add(ACTIVATIONS, 4 * rows * self.arch.hidden + (4 if rms else 8) * rows)

    def block_backward_temporaries(self) -> float:
        """Gradient temporaries of one block's backward (the top one, where little has been freed)."""
        s, arch = self.shape, self.arch
        keys = s.seq + max(self.prefix.values(), default=0)
        fused = self._fused_attention() and not s.eager_attention
        # the trainer's eager attention keeps the probabilities (and their gradients) in the compute dtype
        probs = s.act if s.eager_attention else 4
        scores = 0.0 if fused else probs * s.batch * arch.num_heads * s.seq * keys
        # with the head rows only, the top block's input gradient is materialised full-size (zeros except the
        # head rows: the rows' selection's backward) next to the one flowing back through attention
        # (and, for a padded batch the trainer packs, its packed copy: autopeft/peft/unpad.py)
        selected = 0
        if self._rows_after_attention(arch.num_layers - 1) < s.n:
            selected = 4 * s.n * arch.hidden * (2 if s.padding else 1)
        return _BLOCK_BWD_SCORES * scores + _BLOCK_BWD_HIDDEN * s.mlp_act * s.n * self._inter() + selected


def _binds(placement: PlanPlacement, arch: ModelArch) -> bool:
    """Whether the method's module reads the frozen weight it sits on (has ``bind``, e.g. DoRA)."""
    key = (placement.method, repr(placement.config))
    if key not in _BINDS:
        try:
            from torch._subclasses.fake_tensor import FakeTensorMode

            with FakeTensorMode():
                module = get_method(placement.method).build(placement.config, arch, placement.linear)
            _BINDS[key] = hasattr(module, "bind")
        except Exception:
            _BINDS[key] = False
    return _BINDS[key]


_BINDS: dict[tuple[str, str], bool] = {}


def trainable_tensors(plan_placements: list[PlanPlacement], arch: ModelArch) -> list[int]:
    """Sizes of the trainable parameters, as far as a plan's counts tell (one tensor per placement)."""
    return [get_method(p.method).num_params(p.config, arch, p.linear) for p in plan_placements]
