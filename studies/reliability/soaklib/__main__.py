"""``python -m soaklib`` (from studies/reliability): the same as ``studies/reliability/soak.py``."""

import sys

from .cli import main

sys.exit(main())
