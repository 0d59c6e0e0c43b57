"""The shell: the `hookline` CLI, the HTTP API and the all-in-one dev server."""

from common import __version__

__all__ = ["__version__"]
