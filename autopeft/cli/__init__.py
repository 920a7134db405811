"""The ``autopeft`` command line: ``main`` dispatches to one module per subcommand in ``commands/``."""
