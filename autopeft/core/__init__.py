"""The vocabulary every other part speaks: model architectures (where the blocks and sites are), plans,
parameter budgets, adapter directories, typed JSON records, user errors and machine faults.

Depends on nothing else in autopeft; everything else may depend on it.
"""
