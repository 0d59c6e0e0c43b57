"""The lock files agree with pyproject.toml: every declared dependency is pinned with
hashes, the dev lock pins the runtime packages at the same versions, and every
third-party package the code imports is declared (not left to arrive as someone else's
dependency)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "producer", "router", "dispatcher", "hookline")
# Import name -> distribution name, where they differ.
# `opentelemetry` is a namespace the API, the SDK and the exporter (all three declared)
# share; the API holds what the others build on.
DISTRIBUTIONS = {"prometheus_client": "prometheus-client", "pydantic_core": "pydantic-core",
                 "pydantic_settings": "pydantic-settings", "typing_extensions":
                 "typing-extensions", "yaml": "pyyaml",
                 "opentelemetry": "opentelemetry-api"}  # fmt: skip


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / lock).read_text()
    found = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", text, re.MULTILINE))
    return {normal(name): version for name, version in found.items()}


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {normal(re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0]) for spec in specs}


def test_every_declared_dependency_is_pinned_in_the_locks() -> None:
    assert declared() <= set(pins("runtime.lock")), declared() - set(pins("runtime.lock"))
    everything = declared() | declared("dev")
    assert everything <= set(pins("dev.lock")), everything - set(pins("dev.lock"))


def test_the_dev_lock_pins_runtime_packages_at_the_same_versions() -> None:
    runtime, dev = pins("runtime.lock"), pins("dev.lock")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_every_lock_line_carries_a_hash() -> None:
    for lock in ("runtime.lock", "dev.lock"):
        text = (ROOT / "requirements" / lock).read_text()
        for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):
            if "==" in block:
                assert "--hash=sha256:" in block, block.splitlines()[0]


def test_every_imported_third_party_package_is_declared() -> None:
    stdlib = set(sys.stdlib_module_names)
    imported: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    third_party = imported - stdlib - set(PACKAGES) - {"__future__"}
    names = {normal(DISTRIBUTIONS.get(name, name)) for name in third_party}
    assert names <= declared(), f"imported but not declared: {names - declared()}"
