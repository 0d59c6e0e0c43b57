"""Repeat a benchmark run and report medians: one JSON line per run, then one for the set."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

OneRun = Callable[[argparse.Namespace, int, Path], dict[str, Any]]


def repeat(
    one_run: OneRun,
    args: argparse.Namespace,
    keys: Sequence[str] | Callable[[dict[str, Any]], Sequence[str]],
) -> list[dict[str, Any]]:
    """`args.runs` runs in one scratch directory; prints each result and the medians of
    `keys` (or of the keys a function picks from the first result)."""
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for number in range(args.runs):
            result = one_run(args, number, Path(workdir))
            print(json.dumps(result), flush=True)
            results.append(result)
    chosen = keys(results[0]) if callable(keys) else keys
    medians = {k: statistics.median(r[k] for r in results) for k in chosen}
    print(json.dumps({"median": medians, "runs": len(results)}), flush=True)
    return results
