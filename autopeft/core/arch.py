"""Model families: where the transformer blocks are and what is inside them.

Everything autopeft injects is addressed as ``(layer index, site)``. A *linear site* is a projection
inside a block (``q k v o`` in attention, ``up gate down`` in the MLP; ``in`` is an alias of ``up``).
Some families fuse projections (GPT-2's ``c_attn`` holds q|k|v side by side); such a site is a
*slice* of its module's output, so a method on ``q`` only touches columns ``[0, d)``.

A *norm site* is one of the two norms of a block (``ln_attn``: the attention's norm, ``ln_mlp``: the MLP's;
before or after the sublayer depending on the family). The model-level site ``input`` (the input
embeddings) is not in any block.

Two entry points:
- :func:`arch_from_config` gives the shapes of every site from a ``transformers`` config alone, which
  is what exact parameter counting needs (no model is built);
- :func:`ModelArch.block_module` / :func:`ModelArch.site_module` find the real modules in a built model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from autopeft.core.errors import UserError

if TYPE_CHECKING:
    import torch.nn as nn

FamilyName = Literal["bert", "distilbert", "gpt2", "llama"]
LINEAR_SITES: tuple[str, ...] = ("q", "k", "v", "o", "up", "gate", "down")
SITE_ALIASES = {"in": "up", "query": "q", "key": "k", "value": "v", "out": "o"}
NORM_SITES: tuple[str, ...] = ("ln_attn", "ln_mlp")
INPUT_SITE = "input"  # the input embeddings: soft prompts are prepended there


@dataclass(frozen=True)
class LinearSite:
    """A linear projection inside one block.

    ``path`` is relative to the block. ``out_slice`` selects this site's columns of a fused module's
    output as ``(index, parts)``: part ``index`` of ``parts`` equal chunks (``(0, 1)`` = not fused).
    """

    path: str
    in_features: int
    out_features: int
    bias: bool
    out_slice: tuple[int, int] = (0, 1)
    name: str = ""  # canonical site name (q, k, v, o, up, gate, down), filled in by arch_from_config

    @property
    def columns(self) -> tuple[int, int]:
        index, parts = self.out_slice
        width = self.out_features // parts
        return index * width, (index + 1) * width

    @property
    def width(self) -> int:
        start, stop = self.columns
        return stop - start


@dataclass(frozen=True)
class NormSite:
    """A norm inside one block (LayerNorm, or RMSNorm without bias); ``path`` is relative to the block."""

    path: str
    width: int
    bias: bool
    name: str = ""

    @property
    def num_params(self) -> int:
        return self.width * (2 if self.bias else 1)


@dataclass(frozen=True)
class FamilySpec:
    name: FamilyName
    model_types: tuple[str, ...]
    blocks_path: str  # relative to ``model.base_model``
    attention_path: str  # relative to a block: the module handed to the attention function
    embeddings_path: str  # relative to ``model.base_model``
    is_causal: bool
    mlp_path: str  # relative to a block: the module whose input is the MLP's input
    norm_paths: tuple[str, str]  # relative to a block: the norms of sites ln_attn, ln_mlp
    # relative to a block: the module whose forward(attention output, residual) starts the block's per-token
    # rest, for classifiers that read token 0 (autopeft/training/fastpath/head_rows.py); None: not supported for the family
    head_rows_path: str | None = None


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec("bert", ("bert", "roberta", "xlm-roberta"), "encoder.layer", "attention.self", "embeddings", False,
               "intermediate", ("attention.output.LayerNorm", "output.LayerNorm"), "attention.output"),
    FamilySpec("distilbert", ("distilbert",), "transformer.layer", "attention", "embeddings", False,
               "ffn", ("sa_layer_norm", "output_layer_norm")),
    FamilySpec("gpt2", ("gpt2",), "h", "attn", "wte", True, "mlp", ("ln_1", "ln_2")),
    FamilySpec("llama", ("llama", "mistral", "qwen2", "qwen3"), "layers", "self_attn", "embed_tokens", True,
               "mlp", ("input_layernorm", "post_attention_layernorm")),
)


def supported_families() -> str:
    return ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES)


def family_of(model_type: str) -> FamilySpec:
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise UserError(
        f"unsupported architecture '{model_type}'; supported families: {supported_families()}"
    )


@dataclass(frozen=True)
class ModelArch:
    """Shapes of one model, derived from its config. Identical for every block."""

    family: FamilySpec
    num_layers: int
    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    sites: dict[str, LinearSite] = field(default_factory=dict)
    norms: dict[str, NormSite] = field(default_factory=dict)
    max_positions: int | None = None  # longest input (virtual tokens included) for absolute positions

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def site(self, name: str) -> LinearSite:
        name = SITE_ALIASES.get(name, name)
        if name not in self.sites:
            raise UserError(
                f"site '{name}' does not exist in {self.family.name} models; "
                f"available: {', '.join(self.sites)}"
            )
        return self.sites[name]

    def norm(self, name: str) -> NormSite:
        if name not in self.norms:
            raise UserError(
                f"norm site '{name}' does not exist in {self.family.name} models; available: {', '.join(self.norms)}"
            )
        return self.norms[name]

    def resolve_layers(self, layers: list[int] | tuple[int, ...]) -> tuple[int, ...]:
        out = []
        for layer in layers:
            index = layer + self.num_layers if layer < 0 else layer
            if not 0 <= index < self.num_layers:
                raise UserError(f"layer {layer} is out of range for a model with {self.num_layers} layers")
            out.append(index)
        return tuple(sorted(set(out)))

    # --- navigation in a built model -------------------------------------------------------
    def blocks(self, model: nn.Module) -> nn.ModuleList:
        import torch.nn as nn

        blocks = _get(_base(model), self.family.blocks_path)
        assert isinstance(blocks, nn.ModuleList), type(blocks)
        return blocks

    def block_module(self, model: nn.Module, layer: int, path: str) -> nn.Module:
        return _get(self.blocks(model)[layer], path)

    def attention_module(self, model: nn.Module, layer: int) -> nn.Module:
        return self.block_module(model, layer, self.family.attention_path)

    def embeddings(self, model: nn.Module) -> nn.Module:
        return _get(_base(model), self.family.embeddings_path)


def _base(model: nn.Module) -> nn.Module:
    import torch.nn as nn

    base = getattr(model, "base_model", model)
    return base if isinstance(base, nn.Module) else model


def _get(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


def arch_from_config(config) -> ModelArch:
    """Shapes of every site of a model, from its ``transformers`` config only."""
    family = family_of(getattr(config, "model_type", "?"))
    if family.name == "bert":
        hidden, heads, inter = config.hidden_size, config.num_attention_heads, config.intermediate_size
        layers, kv_heads, head_dim = config.num_hidden_layers, heads, hidden // heads
        sites = {
            "q": LinearSite("attention.self.query", hidden, hidden, True),
            "k": LinearSite("attention.self.key", hidden, hidden, True),
            "v": LinearSite("attention.self.value", hidden, hidden, True),
            "o": LinearSite("attention.output.dense", hidden, hidden, True),
            "up": LinearSite("intermediate.dense", hidden, inter, True),
            "down": LinearSite("output.dense", inter, hidden, True),
        }
    elif family.name == "distilbert":
        hidden, heads, inter = config.dim, config.n_heads, config.hidden_dim
        layers, kv_heads, head_dim = config.n_layers, heads, hidden // heads
        sites = {
            "q": LinearSite("attention.q_lin", hidden, hidden, True),
            "k": LinearSite("attention.k_lin", hidden, hidden, True),
            "v": LinearSite("attention.v_lin", hidden, hidden, True),
            "o": LinearSite("attention.out_lin", hidden, hidden, True),
            "up": LinearSite("ffn.lin1", hidden, inter, True),
            "down": LinearSite("ffn.lin2", inter, hidden, True),
        }
    elif family.name == "gpt2":
        hidden, heads = config.n_embd, config.n_head
        inter = config.n_inner or 4 * hidden
        layers, kv_heads, head_dim = config.n_layer, heads, hidden // heads
        sites = {
            "q": LinearSite("attn.c_attn", hidden, 3 * hidden, True, (0, 3)),
            "k": LinearSite("attn.c_attn", hidden, 3 * hidden, True, (1, 3)),
            "v": LinearSite("attn.c_attn", hidden, 3 * hidden, True, (2, 3)),
            "o": LinearSite("attn.c_proj", hidden, hidden, True),
            "up": LinearSite("mlp.c_fc", hidden, inter, True),
            "down": LinearSite("mlp.c_proj", inter, hidden, True),
        }
    else:  # llama-style decoders
        hidden, heads, inter = config.hidden_size, config.num_attention_heads, config.intermediate_size
        layers = config.num_hidden_layers
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        attn_bias = bool(getattr(config, "attention_bias", False))
        # Qwen2 has q/k/v biases but no o bias, and no attention_bias flag.
        qkv_bias = attn_bias or config.model_type == "qwen2"
        mlp_bias = bool(getattr(config, "mlp_bias", False))
        sites = {
            "q": LinearSite("self_attn.q_proj", hidden, heads * head_dim, qkv_bias),
            "k": LinearSite("self_attn.k_proj", hidden, kv_heads * head_dim, qkv_bias),
            "v": LinearSite("self_attn.v_proj", hidden, kv_heads * head_dim, qkv_bias),
            "o": LinearSite("self_attn.o_proj", heads * head_dim, hidden, attn_bias),
            "gate": LinearSite("mlp.gate_proj", hidden, inter, mlp_bias),
            "up": LinearSite("mlp.up_proj", hidden, inter, mlp_bias),
            "down": LinearSite("mlp.down_proj", inter, hidden, mlp_bias),
        }
    sites = {name: replace(site, name=name) for name, site in sites.items()}
    norm_bias = family.name != "llama"  # LayerNorm has a bias; Llama-style RMSNorm has none
    norms = {name: NormSite(path, hidden, norm_bias, name) for name, path in zip(NORM_SITES, family.norm_paths, strict=True)}
    return ModelArch(
        family=family,
        num_layers=layers,
        hidden=hidden,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=config.vocab_size,
        sites=sites,
        norms=norms,
        max_positions=_max_positions(config, family),
    )


def _max_positions(config, family: FamilySpec) -> int | None:
    if family.name == "llama":
        return None  # rotary positions: no table to run out of
    limit = config.max_position_embeddings
    if config.model_type in ("roberta", "xlm-roberta"):  # positions start after the padding index
        limit -= (config.pad_token_id or 0) + 1
    return limit
