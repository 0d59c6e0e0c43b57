"""How the `hookline` command ends on Hookline's own errors: one line on stderr and a
non-zero exit status, not a traceback. A refused setting or an unreachable broker is an
operator's answer, not a bug report."""

from __future__ import annotations

import sys
from typing import Any

import typer

from common.errors import ConfigurationError, HooklineError

CONFIGURATION_EXIT, FAILURE_EXIT = 2, 1


class OneLineErrors(typer.Typer):
    """A Typer app whose commands' `HooklineError`s end the process as one line."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except HooklineError as exc:
            print(f"hookline: {exc}", file=sys.stderr)
            sys.exit(CONFIGURATION_EXIT if isinstance(exc, ConfigurationError) else FAILURE_EXIT)
