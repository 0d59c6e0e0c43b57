"""The `hookline` command. `main` holds the service commands and puts the groups together:
`dlq` and `gc`, `replay`, `tenants` (tenants and their API keys); `options` holds what the
operations commands share."""

from hookline.cli.main import app

__all__ = ["app"]
