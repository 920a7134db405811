"""Soak test of a resumable search (issue #10): kill a real ``autopeft search`` at random moments, resume it
with the same command each time, and check that nothing finished is ever lost, changed or trained twice.

The entry point of the documented command; the soak itself is the ``soaklib`` package next to this file,
whose docstring carries the design (kill targets and moments, what is checked after every run and at the end).

    .venv/bin/python studies/reliability/soak.py                         # tiny offline assets, ~3-5 min
    .venv/bin/python studies/reliability/soak.py --kills 30 --time-limit 1800 --seed 7
    .venv/bin/python studies/reliability/soak.py --real                  # minilm + rotten_tomatoes (~1 h)
"""

import sys

from soaklib.cli import main

if __name__ == "__main__":
    sys.exit(main())
