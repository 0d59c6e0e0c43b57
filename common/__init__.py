"""The shared kernel of Hookline: settings, wire models, transport, database, signing."""

__version__ = "0.1.0"
