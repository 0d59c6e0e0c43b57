"""The retention benchmark's record of whether a drop ran on a filesystem that discards
freed blocks online."""

from pathlib import Path

from bench.unlink_baseline import mount_options

MOUNTS = """\
/dev/vda / ext4 rw,relatime,discard 0 0
/dev/vdb /var/lib ext4 rw,noatime 0 0
/dev/vdc /var/lib2 xfs rw,relatime,discard 0 0
proc /proc proc rw,nosuid 0 0
"""


def test_the_longest_mount_point_holding_the_path_decides(tmp_path: Path) -> None:
    table = tmp_path / "mounts"
    table.write_text(MOUNTS)
    assert mount_options("/var/lib/postgresql/15/main", str(table)) == ["rw", "noatime"]
    assert mount_options("/var/lib", str(table)) == ["rw", "noatime"]
    # A sibling whose name merely starts the same is not inside /var/lib.
    assert "discard" in mount_options("/var/lib2/data", str(table))
    assert "discard" in mount_options("/srv/pg", str(table))


def test_this_machines_root_is_found() -> None:
    assert mount_options("/")  # "/" is always mounted, so it has options
