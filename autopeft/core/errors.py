"""User-facing errors: one line, naming the input at fault and the fix.

The CLI prints a :class:`UserError` as ``error: <message>`` and exits with code 2; anything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in what the user gave us (a flag, a file, a dataset), not a bug in autopeft."""
