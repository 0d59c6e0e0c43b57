"""Every module of the packages imports on its own, first, in a fresh interpreter.

An import cycle (a service importing the API package whose routes import that service)
passes unnoticed while the test suite happens to import the other side first.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "producer", "router", "dispatcher", "hookline")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            if ".migrations." not in info.name and not info.name.endswith("__main__"):
                names.append(info.name)
    return names


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    modules = _modules()
    assert len(modules) > 100
    # One interpreter per module would take a minute; one that imports each module first
    # in its own sub-interpreter state is the same check: start clean for every module.
    script = (
        "import importlib, sys\n"
        "base = set(sys.modules)\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in set(sys.modules) - base:\n"
        f"        if loaded.split('.')[0] in {set(PACKAGES)!r}:\n"
        "            del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {exc!r}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    # Two interpreters, each with every other module, at once: the CI machine has two
    # cores, and the check took 43 s in one.
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, *modules[half::2]],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for half in range(2)
    ]
    for child in children:
        output, _ = child.communicate(timeout=300)
        assert child.returncode == 0, output


@pytest.mark.parametrize("module", ["hookline.services.keys", "hookline.services.subscriptions"])
def test_a_service_imports_before_the_api(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
