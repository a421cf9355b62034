"""What a scrape of ``/metrics`` costs: issue 15's "under 5 ms at 1,000 jobs run".

Method. A fresh process fills its registry as 1,000 jobs would (every series they can make:
tests/unit/test_metrics.py's ``EXPOSITION_FILL``, which the suite holds to its size), makes
one exposition to warm up, then times ``--repeat`` more: the median CPU time of the scraping
thread (``time.thread_time``: what a scrape costs whatever else runs on the machine), the
fastest and the 90th percentile wall time, the exposition's bytes and its ``reportsvc_``
samples. A figure, not a test: the suite cannot judge a time on a machine of unknown speed.

    .venv/bin/python bench/metrics.py
    .venv/bin/python bench/metrics.py --smoke
"""

from __future__ import annotations

import json
import subprocess
import sys

from common import figure, on_path, parser

TIMING = """
import json, statistics, time
metrics.exposition()  # warm
cpu, wall = [], []
for _ in range(REPEAT):
    began, began_cpu = time.perf_counter(), time.thread_time()
    text = metrics.exposition()
    cpu.append(time.thread_time() - began_cpu)
    wall.append(time.perf_counter() - began)
wall.sort()
samples = sum(1 for line in text.splitlines() if line.startswith(b"reportsvc_"))
print(json.dumps({
    "cpu": statistics.median(cpu), "fastest": wall[0], "p90": wall[int(0.9 * (len(wall) - 1))],
    "bytes": len(text), "samples": samples,
}))
"""


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--jobs", type=int, default=1000, help="jobs whose series the registry holds")
    p.add_argument("--repeat", type=int, default=100, help="expositions timed")
    args = p.parse_args()
    if args.smoke:
        args.repeat = 5
    on_path()
    from tests.unit.test_metrics import EXPOSITION_FILL

    code = f"JOBS = {args.jobs}\nREPEAT = {args.repeat}\n{EXPOSITION_FILL}\n{TIMING}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    took = json.loads(done.stdout)
    figure("jobs", args.jobs)
    figure("expositions", args.repeat)
    figure("exposition_cpu_median_ms", 1000 * took["cpu"], "ms")
    figure("exposition_wall_fastest_ms", 1000 * took["fastest"], "ms")
    figure("exposition_wall_p90_ms", 1000 * took["p90"], "ms")
    figure("exposition_bytes", took["bytes"], "bytes")
    figure("exposition_reportsvc_samples", took["samples"])


if __name__ == "__main__":
    main()
