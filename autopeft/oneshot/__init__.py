"""One-shot structure search (issue #19): every candidate of a space in one supernet behind budget gates.

- :mod:`~autopeft.oneshot.candidates`: the space's units, methods and sizes as nested slices with exact costs;
- :mod:`~autopeft.oneshot.gates`: S3Delta's shifted global sigmoid with an exact expected budget, and the
  greedy readout of a plan at any budget from one ranking;
- :mod:`~autopeft.oneshot.subnets`: hard sub-networks within a budget: random ones to train on
  (``--supernet subnets``) and random budget-filling ones for the readouts to be chosen among;
- :mod:`~autopeft.oneshot.supernet`: the candidates injected at once, each slice's opening applied to its
  module (inner dimensions of LoRA, DoRA, adapters and prefixes; the output of BitFit, LN tuning, (IA)^3);
- :mod:`~autopeft.oneshot.run`: one training run of the supernet (checkpointed) and its readouts, each the
  best sub-network measured inside it at its budget.

``autopeft search --strategy oneshot|oneshot+bayes`` (:mod:`autopeft.searching.oneshot_stage`) trains the
readouts as ordinary trials. Soft prompts and spaces with masks are refused (see the supernet).
"""
