"""Rungs: the training lengths at which plans are compared (fidelity = optimizer steps).

Rungs grow geometrically from ``--min-steps`` by a factor ``--eta`` and end at ``--max-steps``
(full fidelity)::

    r_i = round(min_steps * eta**i)   while r_i < max_steps,   then max_steps

except that a rung closer to ``max_steps`` than a factor ``sqrt(eta)`` is dropped (the first rung
never is): e.g. ``min 50, max 150, eta 3`` -> (50, 150); ``min 17, max 150, eta 3`` -> (17, 51, 150);
``min 8, max 25, eta 3`` -> (8, 25), not (8, 24, 25); ``min = max`` -> one rung, i.e. no early stopping. Every run uses the learning-rate schedule of
``max_steps`` whatever rung it stops at, so a plan continued to the next rung is exactly the run it
would have been had it trained to full length at once (see :mod:`autopeft.training.trial_run`).
"""

from __future__ import annotations

from autopeft.core.errors import UserError


def rung_steps(min_steps: int, max_steps: int, eta: float) -> tuple[int, ...]:
    if max_steps < 1:
        raise UserError(f"--max-steps must be >= 1, got {max_steps}")
    if not 1 <= min_steps <= max_steps:
        raise UserError(f"--min-steps must be between 1 and --max-steps ({max_steps}), got {min_steps}")
    if not 1 < eta < float("inf"):
        raise UserError(f"--eta must be a number > 1 (the factor between rungs), got {eta}")
    rungs: list[int] = []
    value = float(min_steps)
    while round(value) < max_steps:
        if not rungs or round(value) > rungs[-1]:
            rungs.append(round(value))
        value *= eta
    if len(rungs) > 1 and rungs[-1] * eta ** 0.5 > max_steps:
        rungs.pop()  # a rung just below the top (24 before 25) would decide nothing new
    rungs.append(max_steps)
    return tuple(rungs)


def default_min_steps(max_steps: int, eta: float) -> int:
    """One rung below full fidelity: ``max_steps / eta`` (two rungs in all)."""
    return max(1, round(max_steps / eta))
