"""``python -m forkyard``: the command line."""

import sys

from forkyard.cli import main

sys.exit(main())
