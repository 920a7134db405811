"""Speed-ups of a training step that change no result: each has an equality test against the plain step.
"""
