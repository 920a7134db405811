"""The study directory: its layout, the Optuna storage, the lock that allows one search per directory,
and the read-only view that ``pareto``, ``show``, ``report`` and ``export`` use.

:mod:`.layout` names every path in a study directory once (:class:`~.layout.StudyLayout`); the writer
(:mod:`.files`), the reader (:mod:`.view`), the lock (:mod:`.lock`) and everything above ask it for paths.
"""
