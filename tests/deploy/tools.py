"""Run the real deployment tools (promtool, docker-compose, kubectl, kubernetes-validate)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import IN_CI

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def require_tool(name: str) -> str:
    """The tool's path; a missing tool skips the test locally and fails it in CI, where
    .ci/run installs it."""
    # Tools from PyPI (the dev extras) live next to this interpreter, maybe not on PATH.
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (.ci/run installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def run(
    *args: str, cwd: Path = ROOT, timeout_s: float = 120, env: dict[str, str] | None = None
) -> str:
    """Run a tool; a non-zero exit fails the test with the tool's own output."""
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    return output
