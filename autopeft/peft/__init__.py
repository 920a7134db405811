"""PEFT mechanics on a loaded model: inject a plan (the methods of :mod:`autopeft.methods`) and take it
out again, merge, prefixes through transformers' attention interface, soft prompts, quantized bases,
bf16 frozen projections, padding-free blocks, presets, AdapterFusion.

Depends on :mod:`autopeft.core`, :mod:`autopeft.methods` and :mod:`autopeft.kernels`; knows nothing of
training loops, searches or studies.
"""
