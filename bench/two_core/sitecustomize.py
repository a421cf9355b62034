"""Issue 27's two-core experiment, loaded by every Python process started with this folder on
PYTHONPATH; it acts only in a ``reportsvc worker`` run with ``TWO_CORE_EXPERIMENT=1``
(two_core_main.py says what it does), or with ``TWO_CORE_EXPERIMENT=fetch`` the other
split, fetching in a child process (two_core_fetch.py). Not part of the product:
bench/worker.py --two-core, --two-core-fetch."""

import os
import sys

if os.environ.get("TWO_CORE_EXPERIMENT") == "1" and "worker" in sys.argv:
    import two_core_main

    two_core_main.install()
elif os.environ.get("TWO_CORE_EXPERIMENT") == "fetch" and "worker" in sys.argv:
    import two_core_fetch

    two_core_fetch.install()
