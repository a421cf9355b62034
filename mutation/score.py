"""Print the mutation score of reportcore after `mutmut run` (the end of `make mutate`).

The score counts behaviour-changing mutants only: those listed in equivalents.toml (next to
this file) cannot change what any caller sees, each with the reason, and are left out. A listed
mutant that a test now kills, or that no longer exists, is reported so that the list stays true.
Exit status 1 when the score is under ``--min`` percent (98 unless told).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).parent
KILLED = {"killed", "timeout", "caught by type check"}
NOT_RUN = {"not checked", "skipped"}


def statuses(mutmut: str) -> dict[str, str]:
    """Every mutant mutmut knows of and its status, as `mutmut results --all true` prints."""
    out = subprocess.run(
        [mutmut, "results", "--all", "true"], check=True, capture_output=True, text=True
    ).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name.startswith("reportcore."):
            found[name] = status
    return found


def equivalents(path: Path) -> dict[str, str]:
    """The equivalent mutants and why each cannot change behaviour."""
    entries = tomllib.loads(path.read_text("utf-8")).get("equivalent", [])
    listed: dict[str, str] = {}
    for entry in entries:
        if not entry.get("why", "").strip():
            raise SystemExit(f"{path}: {entry.get('mutant')} is listed without a reason")
        listed[entry["mutant"]] = entry["why"]
    return listed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutmut", default=str(Path(sys.executable).parent / "mutmut"))
    parser.add_argument("--min", type=float, default=98.0, help="lowest passing score, percent")
    args = parser.parse_args()

    found = statuses(args.mutmut)
    listed = equivalents(HERE / "equivalents.toml")
    run = {k: s for k, s in found.items() if s not in NOT_RUN}
    counted = {k: s for k, s in run.items() if k not in listed}
    killed = sum(s in KILLED for s in counted.values())
    missed = sorted(k for k, s in counted.items() if s not in KILLED)

    by_status = collections.Counter(counted[k] for k in missed)
    for name in missed:
        print(f"  {counted[name]}: {name}   (mutmut show {name})")
    stale = sorted(k for k in listed if k in run and run[k] in KILLED)
    gone = sorted(k for k in listed if k not in found) if len(run) == len(found) else []
    for name in stale:
        print(f"  listed as equivalent but killed now (drop it from equivalents.toml): {name}")
    for name in gone:
        print(f"  listed as equivalent but no longer generated (code moved?): {name}")

    score = 100.0 * killed / len(counted) if counted else 100.0
    print(
        f"mutants: {len(found)} generated, {len(run)} run, "
        f"{sum(k in listed for k in run)} equivalent (mutation/equivalents.toml)"
    )
    details = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) or "none"
    print(f"behaviour-changing mutants: {killed} of {len(counted)} killed; not killed: {details}")
    print(f"mutation score: {score:.1f} % (at least {args.min:g} % wanted)")
    return 0 if score >= args.min else 1


if __name__ == "__main__":
    sys.exit(main())
