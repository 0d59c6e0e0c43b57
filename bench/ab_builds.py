"""A/B two builds of Hookline with the same benchmark command, run for run in alternation.

    .venv/bin/python -m bench.ab_builds --before /path/to/old/checkout --after . \
        --rounds 3 -- bench.drain --deliveries 20000 --dispatchers 2 --concurrency 16

Each checkout needs its own `.venv` (`make install` in it). A round runs the command once
(`--runs 1`) in the before tree, then once in the after tree, so both see the same slice of a
shared, noisy machine; `--rounds` such pairs. Printed: every run's JSON result, then per
numeric key the median of each side and the after/before ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_once(tree: Path, command: list[str]) -> dict[str, Any]:
    python = tree / ".venv" / "bin" / "python"
    argv = [str(python), "-m", *command, "--runs", "1"]
    finished = subprocess.run(argv, cwd=tree, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        sys.stderr.write(finished.stdout[-4000:] + finished.stderr[-4000:])
        raise SystemExit(f"{' '.join(argv)} failed in {tree} (exit {finished.returncode})")
    lines = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    results: list[dict[str, Any]] = [json.loads(line) for line in lines if '"median"' not in line]
    return results[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = [part for part in args.command if part != "--"]
    sides: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for number in range(args.rounds):
        for side, tree in (("before", args.before), ("after", args.after)):
            result = run_once(tree.resolve(), command)
            sides[side].append(result)
            print(json.dumps({"round": number, "side": side, **result}), flush=True)
    numeric = [k for k, v in sides["before"][0].items() if isinstance(v, int | float)]
    summary = {}
    for key in numeric:
        before = statistics.median(r[key] for r in sides["before"] if key in r)
        after = statistics.median(r[key] for r in sides["after"] if key in r)
        summary[key] = {"before": before, "after": after,
                        "ratio": round(after / before, 3) if before else None}  # fmt: skip
    print(json.dumps({"median": summary, "rounds": args.rounds}), flush=True)


if __name__ == "__main__":
    main()
