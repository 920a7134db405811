"""One module per ``autopeft`` subcommand.

Each module defines ``register(subparsers)``, which adds its parser and sets ``handler`` (a function
``(args) -> exit code``) with ``set_defaults``. Modules import only the standard library at import
time, so ``autopeft --help`` stays fast; heavy imports happen inside the handlers.
"""

#: the order in which subcommands appear in ``autopeft --help``
COMMAND_MODULES: tuple[str, ...] = ("search", "worker", "pareto", "eval", "methods", "plan", "train", "show", "report", "export",
                                   "spaces", "space", "fuse", "estimate")
