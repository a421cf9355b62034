"""``python -m adapters.demo_upstream``: the demo upstream as a process of its own."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence
from types import FrameType

from .draws import DEMO_TENANT
from .server import DemoUpstream


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m adapters.demo_upstream``: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m adapters.demo_upstream",
        description="Serve the FarmIQ upstream APIs (feed intake, feeding KPIs, telemetry, "
        "WeighVision) with generated sample data.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-day", type=int, default=24, help="feed intake records a day")
    parser.add_argument("--readings-per-day", type=int, default=288)
    parser.add_argument("--per-timestamp", type=int, default=3)
    parser.add_argument("--token", default=None, help="require this bearer token")
    args = parser.parse_args(argv)
    try:
        demo = DemoUpstream(
            seed=args.seed,
            per_day=args.per_day,
            readings_per_day=args.readings_per_day,
            per_timestamp=args.per_timestamp,
            token=args.token,
        )
    except ValueError as exc:
        parser.error(str(exc))
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    url = demo.start(args.host, args.port)
    print(f"demo upstream listening on {url} (tenant {DEMO_TENANT})", flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        demo.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
