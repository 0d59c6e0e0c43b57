"""`--ids-file`: delivery ids one a line, or the JSON that `dlq list -o json` prints."""

from __future__ import annotations

import json
from pathlib import Path

from hookline.cli.options import read_ids


def test_ids_are_read_from_lines_or_from_a_listing_in_order_and_once(tmp_path: Path) -> None:
    lines = tmp_path / "ids.txt"
    lines.write_text("dlv_a\n\n dlv_b \ndlv_a\n")
    listing = tmp_path / "dead.json"
    listing.write_text(json.dumps({"data": [{"id": "dlv_b"}, {"id": "dlv_c"}]}))
    assert read_ids(lines) == ("dlv_a", "dlv_b")
    assert read_ids(listing) == ("dlv_b", "dlv_c")
    assert read_ids(None) == ()


def test_a_file_nested_past_the_json_parser_is_read_as_lines(tmp_path: Path) -> None:
    deep = tmp_path / "deep.txt"
    deep.write_text("[" * 100_000 + "\ndlv_a\n")
    assert read_ids(deep) == ("[" * 100_000, "dlv_a")
