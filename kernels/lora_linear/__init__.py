"""Fused LoRA linear (dense or NF4 base) and LoRA delta: kernel, reference, autograd function."""
