"""Fused bottleneck adapter (serial and parallel forms): kernel, reference, autograd function."""
