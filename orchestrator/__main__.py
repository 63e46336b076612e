"""``python -m orchestrator ...`` = the ``orchestrate`` command."""

import sys

from orchestrator.cli import main

sys.exit(main())
