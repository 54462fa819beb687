"""`python -m tools.sim`: the same as `taskledger sim`."""

import sys

from tools.sim.cli import main

sys.exit(main())
