"""The study directory: its layout, the Optuna storage, the lock that allows one search per directory,
and the read-only view that ``pareto``, ``show``, ``report`` and ``export`` use.
"""
