"""What this disk takes to free files the size of a day's partitions: the baseline that
`bench.retention` divides the drop by (issue 17).

The files are written to mirror the partitions file for file (every fork of every
relation — heap, indexes, TOAST — split into PostgreSQL's 1 GiB segments, with data that
does not compress), on the filesystem of the data directory, and synced; then they are
removed with `os.remove`, one after another or one thread per table, and timed. What
`DROP TABLE` adds to that is PostgreSQL's own work.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import Connection, text

SEGMENT = 2**30  # PostgreSQL's default segment size
_CHUNK = os.urandom(8 * 2**20)

_FILES = text("""
SELECT r.oid, f.fork, pg_relation_size(r.oid, f.fork)
FROM pg_class r, unnest(ARRAY['main', 'fsm', 'vm']) AS f(fork)
WHERE r.oid IN (
    SELECT p.oid FROM pg_class p WHERE p.oid = CAST(:part AS regclass)
    UNION ALL SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = CAST(:part AS regclass)
    UNION ALL SELECT p.reltoastrelid FROM pg_class p
        WHERE p.oid = CAST(:part AS regclass) AND p.reltoastrelid <> 0
    UNION ALL SELECT i.indexrelid FROM pg_index i JOIN pg_class p
        ON i.indrelid = p.reltoastrelid WHERE p.oid = CAST(:part AS regclass))
""")


def file_sizes(connection: Connection, part: str) -> list[int]:
    """The sizes of the files of `part` (a table) and its indexes and TOAST, by segment."""
    sizes = []
    for _, _, size in connection.execute(_FILES, {"part": part}):
        while size > 0:
            sizes.append(min(size, SEGMENT))
            size -= SEGMENT
    return sizes


def same_filesystem(directory: str, data_directory: str) -> bool:
    return os.stat(directory).st_dev == os.stat(data_directory).st_dev


def mount_options(path: str, mounts: str = "/proc/mounts") -> list[str]:
    """The mount options of the filesystem holding `path` (the longest mount point that
    contains it, from /proc/mounts): whether it discards freed blocks online (`discard`)
    decides what a drop costs the writers beside it."""
    real = os.path.realpath(path)
    best, options = "", []
    with open(mounts, encoding="utf-8") as table:
        for line in table:
            _, point, _, opts, *_ = line.split()
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, options = point, opts.split(",")
    return options


class FileSet:
    """Files of the given sizes by group (a table each), written and synced at once."""

    def __init__(self, parent: str, groups: dict[str, list[int]]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="retention-unlink-", dir=parent))
        self.groups: dict[str, list[Path]] = {}
        for group, sizes in groups.items():
            self.groups[group] = [self._write(f"{group}.{n}", size) for n, size in enumerate(sizes)]
        os.sync()

    @property
    def bytes(self) -> int:
        return sum(path.stat().st_size for paths in self.groups.values() for path in paths)

    def _write(self, name: str, size: int) -> Path:
        path = self.root / name
        with path.open("wb", buffering=0) as out:
            left = size
            while left > 0:
                left -= out.write(memoryview(_CHUNK)[: min(left, len(_CHUNK))])
            os.fsync(out.fileno())
        return path

    def remove(self, *, parallel: bool) -> float:
        """Remove every file (a thread per group when `parallel`); returns the seconds."""

        def group(paths: list[Path]) -> None:
            for path in paths:
                os.remove(path)

        began = time.perf_counter()
        if parallel:
            with ThreadPoolExecutor(len(self.groups)) as pool:
                list(pool.map(group, self.groups.values()))
        else:
            for paths in self.groups.values():
                group(paths)
        took = time.perf_counter() - began
        shutil.rmtree(self.root)
        return took
