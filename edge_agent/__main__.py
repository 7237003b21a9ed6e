"""``python -m edge_agent`` is ``edge-agent``."""

import sys

from edge_agent.entry import main

sys.exit(main())
