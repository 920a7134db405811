"""The search: settings, what it optimises, sampling a plan from a space, rungs and Pareto-aware
promotion, the workers of each backend (Optuna, Ray), liveness and interrupts, the final stage.

(Named ``searching`` rather than ``search`` because ``autopeft.search(...)`` is the Python API function:
a sub-package of that name would replace the function as soon as it was imported.)
"""
