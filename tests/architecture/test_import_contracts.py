"""The import contracts in pyproject.toml hold for the tree, and fail when broken.

`make lint` runs `lint-imports` on the tree itself; these tests show the contracts are not
vacuous: a copy of the packages with one forbidden import added is refused, naming the
contract it breaks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "producer", "router", "dispatcher", "hookline")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _tree_copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _add_import(tree: Path, module: str, statement: str) -> None:
    path = tree / Path(*module.split("."))
    path.with_suffix(".py").write_text(f"{statement}  # noqa\n")


def test_the_tree_keeps_every_import_contract(tmp_path: Path) -> None:
    result = _lint(_tree_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        ("dispatcher.sneaky", "import router", "Services never import each other"),
        ("router.sneaky", "from producer import client", "Services never import each other"),
        ("common.sneaky", "import dispatcher", "common imports no service and not the shell"),
        ("dispatcher.sneaky", "import hookline", "Services never import the shell"),
        ("router.sneaky", "import pika", "Only the RabbitMQ transport imports pika"),
        (
            "dispatcher.sneaky",
            "from opentelemetry import trace",
            "Only the tracing package imports OpenTelemetry",
        ),
        (
            "common.sneaky",
            "import opentelemetry.sdk.trace",
            "Only the tracing package imports OpenTelemetry",
        ),
        (
            "hookline.sneaky",
            "from dispatcher.deadletters.view import show",
            "Dead letters are reached through their facade",
        ),
        (
            "hookline.api.sneaky",
            "from dispatcher.replay.jobs import plan",
            "Replay is reached through its facade",
        ),
        (
            "dispatcher.deadletters.sneaky",
            "from dispatcher.http.pool import Pool",
            "The HTTP client is reached through its facade",
        ),
        (
            "hookline.cli.sneaky",
            "from dispatcher.policy import retry",
            "The shell reaches the dispatcher only through its facades",
        ),
        (
            "hookline.services.sneaky",
            "from hookline.api.routes import tenants",
            "Services know nothing of HTTP routes or the CLI",
        ),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, statement: str, contract: str
) -> None:
    tree = _tree_copy(tmp_path)
    _add_import(tree, module, statement)
    result = _lint(tree)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout, result.stdout
