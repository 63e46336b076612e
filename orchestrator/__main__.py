"""``python -m orchestrator ...`` = the ``orchestrate`` command."""

import sys

from orchestrator.cli.app import main

sys.exit(main())
