"""``python -m reportsvc``: the ``reportsvc`` console script, for where the script is not on
the PATH (a venv not activated, ``python -m`` in a container's healthcheck)."""

import sys

from entrypoints.cli import main

sys.exit(main())
