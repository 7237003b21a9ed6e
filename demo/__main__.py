"""``python -m demo``: the same as ``thermopipe-demo`` and ``scripts/demo``."""

import sys

from demo.cli import main

sys.exit(main())
