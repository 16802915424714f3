"""`python -m antimask` is the `antimask` command."""

import sys

from antimask.cli import main

if __name__ == "__main__":  # worker processes (forkserver/spawn) import this module without running it
    sys.exit(main())
