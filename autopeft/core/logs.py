"""Quiet third-party libraries: no progress bars from transformers/datasets, Optuna warnings only.

The CLI and the Python API call :func:`quiet_libraries` before a command runs. The libraries are imported
inside the function: configuring them is the only reason to import them here, and ``autopeft --help``
must not pay for it.
"""

from __future__ import annotations

import os


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets
    import optuna
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
