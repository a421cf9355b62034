"""Print the mutation score of reportcore after `mutmut run` (the end of `make mutate`).

The score counts behaviour-changing mutants only. equivalents.toml (next to this file) lists,
each with the reason, the mutants left out: ``equivalent`` ones cannot change what any caller
sees; ``import-time`` ones change code that runs when the module is imported, before mutmut
switches a mutant on, so no test can judge them (they are counted and printed apart, not hidden).
A name may be a glob (``reportcore.jobtypes.x__columns__mutmut_*``). A listed mutant that a test
now kills, or an entry that matches nothing, is reported so that the list stays true.
Exit status 1 when the score is under ``--min`` percent (98 unless told).
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
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


KINDS = ("equivalent", "import-time")


def listed_mutants(path: Path, names: list[str]) -> tuple[dict[str, str], list[str]]:
    """Each of ``names`` the list leaves out, with its kind; and the entries matching none."""
    entries = tomllib.loads(path.read_text("utf-8")).get("mutant", [])
    listed: dict[str, str] = {}
    unmatched: list[str] = []
    for entry in entries:
        pattern, kind = entry.get("name", ""), entry.get("kind", "")
        if kind not in KINDS or not entry.get("why", "").strip():
            raise SystemExit(f"{path}: {pattern!r} needs a kind ({', '.join(KINDS)}) and a why")
        hits = fnmatch.filter(names, pattern)
        if not hits:
            unmatched.append(pattern)
        listed.update(dict.fromkeys(hits, kind))
    return listed, unmatched


def by_module(counted: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Killed and counted behaviour-changing mutants of each module (``reportcore.tokens``)."""
    tally: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for name, status in counted.items():
        module = name.rsplit(".", 1)[0]
        tally[module][0] += status in KILLED
        tally[module][1] += 1
    return {module: (hit, total) for module, (hit, total) in tally.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutmut", default=str(Path(sys.executable).parent / "mutmut"))
    parser.add_argument("--min", type=float, default=98.0, help="lowest passing score, percent")
    parser.add_argument(
        "--by-module", action="store_true", help="also print the score of each module run"
    )
    args = parser.parse_args()

    found = statuses(args.mutmut)
    listed, unmatched = listed_mutants(HERE / "equivalents.toml", list(found))
    run = {k: s for k, s in found.items() if s not in NOT_RUN}
    counted = {k: s for k, s in run.items() if k not in listed}
    killed = sum(s in KILLED for s in counted.values())
    missed = sorted(k for k, s in counted.items() if s not in KILLED)

    by_status = collections.Counter(counted[k] for k in missed)
    for name in missed:
        print(f"  {counted[name]}: {name}   (mutmut show {name})")
    stale = sorted(k for k in listed if k in run and run[k] in KILLED)
    for name in stale:
        print(f"  listed in equivalents.toml but killed now (drop it): {name}")
    for pattern in unmatched if len(run) == len(found) else []:
        print(f"  an entry of equivalents.toml matches no mutant (code moved?): {pattern}")

    if args.by_module:
        for module, (hit, total) in sorted(by_module(counted).items()):
            print(f"  {module}: {hit} of {total} killed, {100.0 * hit / total:.1f} %")
    score = 100.0 * killed / len(counted) if counted else 100.0
    left_out = collections.Counter(listed[k] for k in run if k in listed)
    print(
        f"mutants: {len(found)} generated, {len(run)} run; left out (mutation/equivalents.toml): "
        f"{left_out['equivalent']} equivalent, {left_out['import-time']} import-time"
    )
    details = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) or "none"
    print(f"behaviour-changing mutants: {killed} of {len(counted)} killed; not killed: {details}")
    print(f"mutation score: {score:.1f} % (at least {args.min:g} % wanted)")
    return 0 if score >= args.min else 1


if __name__ == "__main__":
    sys.exit(main())
