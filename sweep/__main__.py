"""`python -m sweep ...`: see sweep/cli.py."""

import sys

from sweep.cli import main

sys.exit(main())
