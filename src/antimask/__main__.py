"""`python -m antimask` is the `antimask` command."""

import sys

from antimask.cli import main

sys.exit(main())
