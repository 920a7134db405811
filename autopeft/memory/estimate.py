"""Peak training memory of a plan, before training it: ``estimate_memory(config, plan, settings)``.

The estimate is analytic (see :mod:`autopeft.memory.model` for the formulas) and fast (milliseconds
once a method's activation profile is cached), so the search can call it for every sampled plan.
It predicts what ``torch.cuda.max_memory_allocated`` reports for a steady-state training step of
autopeft's trainer (after the first step, when the optimizer's states exist), and lists the CUDA
context apart, since torch's allocator does not see it::

    peak = weights + trainable + optimizer states + batch                       (resident)
         + max(saved activations + loss temporaries,                           (end of forward)
               saved activations + gradient temporaries + gradients,           (start of backward)
               gradients + optimizer scratch)                                   (optimizer step)

Public API: :class:`MemorySettings`, :func:`estimate_memory` -> :class:`MemoryEstimate`,
:func:`estimate_plan_bytes` (one number, for the search), :func:`~autopeft.core.units.parse_memory` / :func:`~autopeft.core.units.format_bytes`.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from autopeft.core.arch import ModelArch, arch_from_config
from autopeft.core.choices import DeviceType, OptimizerName, Precision, Quantization, TaskKind
from autopeft.core.errors import UserError
from autopeft.memory.model import ModelFacts, Shape, StepModel
from autopeft.peft.plan import Plan
from autopeft.training.config import TrainConfig
from autopeft.training.fastpath.head_rows import head_rows_supported
from autopeft.training.step import StepRecipe, step_recipe

TaskName = Literal["auto", TaskKind]

#: How the estimate models each field of the trainer's step (:class:`~autopeft.training.step.StepRecipe`).
#: tests/test_memory.py checks that every field is here, and that each field said to be modelled changes
#: the estimate of a probe step when it is switched; a new trainer option must be added here to pass.
RECIPE_MEMORY: dict[str, tuple[bool, str]] = {
    "device": (True, "cuda: the CUDA context, foreach AdamW temporaries, fused attention; cpu: none of them"),
    "autocast_bf16": (True, "2-byte activations and autocast's bf16 copies of weights"),
    "frozen_bf16_copies": (True, "one resident bf16 copy of each frozen projection, no per-call copies"),
    "eager_attention_max_length": (True, "eager attention keeps (B, h, T, S) probabilities for backward"),
    "cpu_kernels": (True, "dropout keeps a 1-byte mask (uint8 multiply) per dropped activation"),
    "head_rows": (True, "the last block keeps B rows after attention instead of B*T"),
    "unpad": (False, "bounded: a packed step keeps at most the padded step's rows, and MAX_FILLED_SHARE caps "
                     "the packing's temporaries (tests/test_memory.py: the padded estimate bounds a packed step)"),
    "pack_multiple": (False, "bounded as unpad: filler rows are padding rows the padded estimate counts"),
    "prefix_cache": (False, "not in a step: the session's activation cache is capped at "
                            "ActivationCache's byte limit (1 GiB by default) and lives across trials"),
    "compile": (False, "not modelled: off by default (measured not to pay for short trials)"),
}

CUDA_CONTEXT_BYTES = 500 * 2**20  # CUDA context + kernels, outside torch's allocator (driver-dependent)
_BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes keeps fp32 states for smaller tensors
_QUANT_BYTES = {  # bytes per quantized weight, constants included
    "nf4": 0.5 + (1 + 4 / 256) / 64,  # 4-bit codes; per block of 64 an 8-bit absmax (+ fp32 per 256 blocks)
    "fp4": 0.5 + (1 + 4 / 256) / 64,
    "int8": 1.0,  # plus an fp32 scale per output row, added separately
}


@dataclass(frozen=True)
class MemorySettings:
    """How a plan is trained, as far as memory is concerned.

    ``dtype`` is the compute precision: ``bf16`` = autopeft's default, bf16 autocast with fp32 master
    weights (base and trainable weights stay fp32); ``fp32`` = everything fp32. ``task='auto'`` means
    causal-lm for decoders (GPT-2, Llama) and classification for encoders. ``padding``: batches
    contain padding, so attention receives an explicit mask (true of almost every real batch).
    ``trainer_kernels``: model autopeft's own trainer, which under bf16 keeps one bf16 copy of every
    frozen projection for the session (``autopeft/peft/precision.py``) and on CPU runs eager attention for
    batches of at most 256 tokens and a dropout that keeps bool masks (``autopeft/training/fastpath/step_kernels.py``);
    ``False`` = a plain autocast loop with the model's SDPA attention (what other trainers do).
    """

    batch_size: int = 16
    seq_len: int = 64
    dtype: Precision = "bf16"
    quantize: Quantization = "none"
    optimizer: OptimizerName = "adamw"
    gradient_checkpointing: bool = False
    device: DeviceType = "cuda"
    task: TaskName = "auto"
    num_labels: int = 2
    padding: bool = True
    trainer_kernels: bool = True
    recipe: StepRecipe | None = None  # the trainer's own step (a session's ``recipe(config)``), if known

    def step(self) -> StepRecipe:
        """The step being estimated: ``recipe`` when given, else the one autopeft's trainer runs for
        ``dtype`` on ``device`` (``trainer_kernels``) or a plain autocast loop."""
        if self.recipe is not None:
            return self.recipe
        if not self.trainer_kernels:
            return StepRecipe.plain(self.device, autocast_bf16=self.dtype == "bf16")
        return step_recipe(TrainConfig(precision=self.dtype), self.device)

    def __post_init__(self) -> None:
        for name, kind in (("dtype", Precision), ("quantize", Quantization), ("optimizer", OptimizerName),
                           ("device", DeviceType), ("task", TaskName)):
            value = getattr(self, name)
            if value not in get_args(kind):
                raise UserError(f"memory setting {name}={value!r} is not supported; choose one of "
                                f"{', '.join(get_args(kind))}")
        for name in ("batch_size", "seq_len", "num_labels"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"memory setting {name} must be >= 1, got {getattr(self, name)}")
        if self.seq_len < 2:
            raise UserError(f"memory setting seq_len must be >= 2, got {self.seq_len}")
        if self.recipe is not None and (self.recipe.device != self.device
                                        or self.recipe.autocast_bf16 != (self.dtype == "bf16")):
            raise ValueError(f"memory settings device={self.device} dtype={self.dtype} contradict the step "
                             f"recipe {self.recipe}")


@dataclass(frozen=True)
class MemoryLine:
    name: str
    bytes: int
    detail: str = ""


@dataclass(frozen=True)
class MemoryEstimate:
    """``total_bytes`` = ``allocated_bytes`` (what torch's allocator peaks at) + ``overhead_bytes``."""

    total_bytes: int
    allocated_bytes: int
    overhead_bytes: int
    phase: str  # forward | backward | optimizer: where the peak falls
    lines: tuple[MemoryLine, ...]
    settings: MemorySettings

    def line(self, name: str) -> int:
        return sum(line.bytes for line in self.lines if line.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"total_bytes": self.total_bytes, "allocated_bytes": self.allocated_bytes,
                "overhead_bytes": self.overhead_bytes, "phase": self.phase,
                "breakdown": [asdict(line) for line in self.lines], "settings": asdict(self.settings)}


# --- model facts -------------------------------------------------------------------------------

def facts_from_config(config, task: str = "auto", num_labels: int = 2) -> ModelFacts:
    """Facts from a ``transformers`` config; parameter counts come from a meta-device build (no memory)."""
    arch = arch_from_config(config)
    task = _resolve_task(arch, task)
    return _facts_cached(config.to_json_string(use_diff=False), task, num_labels)


@functools.lru_cache(maxsize=32)
def _facts_cached(config_json: str, task: str, num_labels: int) -> ModelFacts:
    import json

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from autopeft.peft.adapters import count_base_params

    data = json.loads(config_json)
    data.pop("quantization_config", None)
    config = AutoConfig.for_model(**data)
    config.num_labels = num_labels
    arch = arch_from_config(config)
    cls = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    with torch.device("meta"):
        model = cls.from_config(config)
    base = count_base_params(model)
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    family = arch.family.name
    dropout = {
        "bert": ("hidden_dropout_prob", "attention_probs_dropout_prob", "hidden_dropout_prob"),
        "distilbert": ("dropout", "attention_dropout", "dropout"),
        "gpt2": ("resid_pdrop", "attn_pdrop", "embd_pdrop"),
        "llama": (None, "attention_dropout", None),
    }[family]
    hidden, attention, embedding = (float(getattr(config, k, 0.0) or 0.0) if k else 0.0 for k in dropout)
    return ModelFacts(
        arch=arch, task=task, num_labels=num_labels, base_params=base,
        quantizable_params=_projection_weights(arch), head_params=total - base if task == "classification" else 0,
        hidden_dropout=hidden, attention_dropout=attention, embedding_dropout=embedding,
        activation=str(getattr(config, "activation_function", getattr(config, "hidden_act", "gelu"))),
        pooler=family == "bert" and task == "classification", pre_classifier=family == "distilbert",
        embedding_norm=family in ("bert", "distilbert"),
    )


def facts_from_arch(arch: ModelArch, task: str = "auto", num_labels: int = 2) -> ModelFacts:
    """Facts from shapes alone (the families' usual dropout and activations; position embeddings unknown)."""
    task = _resolve_task(arch, task)
    family = arch.family.name
    hidden = arch.hidden
    blocks = sum(s.in_features * s.out_features + (s.out_features if s.bias else 0)
                 for s in {s.path: s for s in arch.sites.values()}.values()) + 4 * hidden
    base = arch.num_layers * blocks + arch.vocab_size * hidden
    head = {"bert": hidden * hidden + hidden, "distilbert": hidden * hidden + hidden}.get(family, 0)
    head += hidden * num_labels + (num_labels if family in ("bert", "distilbert") else 0)
    drop = 0.0 if family == "llama" else 0.1
    return ModelFacts(
        arch=arch, task=task, num_labels=num_labels, base_params=base, quantizable_params=_projection_weights(arch),
        head_params=head if task == "classification" else 0, hidden_dropout=drop, attention_dropout=drop,
        embedding_dropout=drop, activation={"gpt2": "gelu_new", "llama": "silu"}.get(family, "gelu"),
        pooler=family == "bert" and task == "classification", pre_classifier=family == "distilbert",
        embedding_norm=family in ("bert", "distilbert"),
    )


def _resolve_task(arch: ModelArch, task: str) -> str:
    if task == "auto":
        return "causal-lm" if arch.family.is_causal else "classification"
    if task == "causal-lm" and not arch.family.is_causal:
        raise UserError(f"{arch.family.name} is an encoder; causal-lm needs a decoder (gpt2 or llama family)")
    return task


def _projection_weights(arch: ModelArch) -> int:
    modules = {s.path: s for s in arch.sites.values()}.values()
    return arch.num_layers * sum(s.in_features * s.out_features for s in modules)


def _projection_rows(arch: ModelArch) -> int:
    return arch.num_layers * sum(s.out_features for s in {s.path: s for s in arch.sites.values()}.values())


# --- the estimate ------------------------------------------------------------------------------

def estimate_memory(arch_or_config: Any, plan: Plan, settings: MemorySettings | None = None) -> MemoryEstimate:
    """Peak memory of one training step of ``plan``; ``arch_or_config`` is a transformers config
    (exact), :class:`~autopeft.memory.model.ModelFacts`, or a :class:`~autopeft.core.arch.ModelArch`
    (parameter counts and dropout from family defaults)."""
    settings = settings or MemorySettings()
    if isinstance(arch_or_config, ModelFacts):
        facts = arch_or_config
    elif isinstance(arch_or_config, ModelArch):
        facts = facts_from_arch(arch_or_config, settings.task, settings.num_labels)
    else:
        facts = facts_from_config(arch_or_config, settings.task, settings.num_labels)
    return _estimate(facts, plan, settings)


def _estimate(facts: ModelFacts, plan: Plan, settings: MemorySettings) -> MemoryEstimate:
    arch = facts.arch
    recipe = settings.step()
    bf16 = recipe.autocast_bf16
    quantized = settings.quantize != "none"
    prompt = sum(int(getattr(p.config, "length", 0)) for p in _input_placements(plan, arch))
    shape = Shape(batch=settings.batch_size, tokens=settings.seq_len, prompt=prompt, act=2 if bf16 else 4,
                  weight_copy=2 if bf16 else 0, autocast=bf16, cuda=recipe.device == "cuda",
                  padding=settings.padding, quantized=quantized,
                  cached_weights=recipe.frozen_bf16_copies,
                  fast_dropout=recipe.cpu_kernels,
                  eager_attention=recipe.eager_attention(settings.seq_len),
                  head_rows=recipe.head_rows and head_rows_supported(facts.arch, facts.task))
    model = StepModel(facts, plan, shape)
    lines: list[MemoryLine] = []

    # resident through the step
    lines += _weight_lines(facts, settings)
    if shape.cached_weights and not quantized:
        cached = sum(2 * _site_weights(p) for p in _cached_projections(model))
        lines.append(MemoryLine("base weights (bf16 copies)", cached,
                                "the trainer's bf16 copies of the frozen projections"))
    adapter = plan.num_params(arch)
    trainable = adapter + facts.head_params
    lines.append(MemoryLine("trainable parameters", 4 * trainable,
                            f"{adapter:,} adapter + {facts.head_params:,} head, fp32"))
    states, scratch = _optimizer_bytes(settings.optimizer, model, trainable, shape.cuda)
    lines.append(MemoryLine("optimizer states", states, settings.optimizer))
    b, t = settings.batch_size, settings.seq_len
    batch = 2 * 8 * b * t + (8 * b if facts.task == "classification" else 0)
    if settings.padding:
        batch += b * shape.seq * shape.seq  # the 4-D bool attention mask, shared by all layers
    lines.append(MemoryLine("batch and attention mask", batch))
    resident = sum(line.bytes for line in lines)

    # what the forward keeps for backward
    saved, per_layer, grad = model.saved()
    saved_blocks = saved.total
    if settings.gradient_checkpointing and per_layer and max(per_layer) > 0:
        kept = sum(4 * shape.n * arch.hidden for x in per_layer if x > 0)
        saved_blocks = kept + max(per_layer)  # inputs of checkpointed blocks + one block recomputed
        saved.lines = {"activations (checkpointed)": saved_blocks}
    head, head_fwd, head_bwd = model.head(grad)
    activations = saved_blocks + head.total
    for name, nbytes in {**_merge(saved.lines, head.lines)}.items():
        lines.append(MemoryLine(f"saved {name}", int(nbytes), "kept for backward"))
    grads = 4 * trainable
    block_bwd = model.block_backward_temporaries() if any(per_layer) else 0.0
    phases = {
        "forward": activations + head_fwd,
        "backward": activations + max(head_bwd, block_bwd) + grads,
        "optimizer": grads + scratch,
    }
    phase = max(phases, key=phases.__getitem__)
    transient = phases[phase] - (activations if phase != "optimizer" else 0)
    if phase != "optimizer":
        transient -= grads if phase == "backward" else 0
        lines.append(MemoryLine("gradients", grads if phase == "backward" else 0, "fp32, of trainable parameters"))
    else:
        lines = [line for line in lines if not line.name.startswith("saved ")]
        lines.append(MemoryLine("gradients", grads, "fp32, of trainable parameters"))
        transient -= grads
    lines.append(MemoryLine("transient workspace", int(transient), f"temporaries at the {phase} peak"))
    allocated = int(resident + phases[phase])
    overhead = CUDA_CONTEXT_BYTES if shape.cuda else 0
    lines.append(MemoryLine("framework overhead", overhead,
                            "CUDA context, outside torch's allocator" if shape.cuda else "none on CPU"))
    return MemoryEstimate(allocated + overhead, allocated, overhead, phase, tuple(lines), settings)


def _cached_projections(model: StepModel) -> list:
    """(layer, site) projections the trainer holds in bf16: all, except those a method reads (DoRA)."""
    modules = {s.path: s for s in model.arch.sites.values()}
    return [site for layer in range(model.arch.num_layers) for path, site in modules.items()
            if not model.reads_weight(layer, path)]


def _site_weights(site) -> int:
    return site.in_features * site.out_features


def _merge(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0.0) + value
    return out


def _input_placements(plan: Plan, arch: ModelArch):
    from autopeft.methods import Placement, get_method

    return [p for p in plan.placements(arch) if get_method(p.method).placement is Placement.INPUT]


def _weight_lines(facts: ModelFacts, settings: MemorySettings) -> list[MemoryLine]:
    if settings.quantize == "none":
        return [MemoryLine("base weights (fp32)", 4 * facts.base_params, f"{facts.base_params:,} parameters")]
    quantized = facts.quantizable_params
    qbytes = _QUANT_BYTES[settings.quantize] * quantized
    if settings.quantize == "int8":
        qbytes += 4 * _projection_rows(facts.arch)
    rest = facts.base_params - quantized
    return [MemoryLine(f"base weights ({settings.quantize})", int(qbytes),
                       f"{quantized:,} projection weights, quantization constants included"),
            MemoryLine("base weights (fp32)", 4 * rest, f"{rest:,} embeddings, norms, biases")]


def _optimizer_bytes(name: str, model: StepModel, trainable: int, cuda: bool) -> tuple[int, int]:
    """(states resident after the first step, scratch of one step)."""
    from autopeft.memory.model import trainable_tensors

    sizes = trainable_tensors(model.placements, model.arch)
    head = model.facts.head_params
    if head:
        sizes.append(head)
    largest = max(sizes, default=0)
    if name == "sgd":
        return 0, 0
    if name == "adamw8bit":
        big = sum(s for s in sizes if s >= _BNB_MIN_8BIT_SIZE)
        states = int(2 * big * (1 + 4 / 256) + 8 * (trainable - big))
        return states, 4 * largest
    # torch AdamW: exp_avg and exp_avg_sq; foreach (CUDA) keeps one list of temporaries, for-loop one tensor
    return 8 * trainable, 4 * (trainable if cuda else largest)


# --- for the search ----------------------------------------------------------------------------

def estimate_plan_bytes(prepared_or_arch: Any, plan: Plan, settings: MemorySettings | None = None,
                        **overrides: Any) -> int:
    """Estimated peak bytes (``total_bytes``, overhead included) of training ``plan``.

    ``prepared_or_arch``: a :class:`~autopeft.training.pipeline.Prepared` (its model config, task, label count
    and ``max_length`` fill the settings' ``task``, ``num_labels`` and ``seq_len``), a transformers
    config, :class:`ModelFacts` or :class:`~autopeft.core.arch.ModelArch`. ``overrides`` replace fields of
    ``settings`` (default :class:`MemorySettings`), e.g. ``batch_size=16, dtype="bf16"``.
    Raises :class:`UserError` for invalid settings.
    """
    from dataclasses import replace

    settings = settings or MemorySettings()
    source = prepared_or_arch
    loaded = getattr(prepared_or_arch, "loaded", None)
    if loaded is not None:  # a pipeline.Prepared
        derived = {"task": prepared_or_arch.data.task, "num_labels": max(2, prepared_or_arch.num_labels),
                   "seq_len": prepared_or_arch.options.max_length}
        settings = replace(settings, **{k: v for k, v in derived.items() if k not in overrides})
        source = loaded.model.config
    if overrides:
        settings = replace(settings, **overrides)
    return estimate_memory(source, plan, settings).total_bytes
