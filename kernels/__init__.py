"""Fused kernels for hot PEFT paths (Triton on CUDA, pure-torch references elsewhere).

Empty until the kernels issue lands; importable as ``autopeft.kernels``.
"""
