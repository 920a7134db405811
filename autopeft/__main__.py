import sys

from autopeft.cli.main import main

sys.exit(main())
