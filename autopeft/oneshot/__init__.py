"""One-shot structure search (issue #19): every candidate of a space in one supernet behind budget gates.

- :mod:`~autopeft.oneshot.candidates`: the space's units, methods and sizes as nested slices with exact costs;
- :mod:`~autopeft.oneshot.gates`: S3Delta's shifted global sigmoid with an exact expected budget, and the
  greedy readout of a plan at any budget from one ranking.

Still to come (see the issue): the gated supernet modules, its training run, ``--strategy oneshot``.
"""
