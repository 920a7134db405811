"""Training and evaluating one plan: datasets and their splits, base models, the token cache, the
session that keeps a base model loaded across trials, a trial's resumable run, and the fast path
(``fastpath/``: head rows, the frozen-prefix activation cache, step kernels).

Depends on :mod:`autopeft.core` and :mod:`autopeft.peft`; knows nothing of searches or studies.
"""
