"""The machinery that moves data: sources, the store, queries, rounds, metrics and the CLI."""

from engine import settings as _settings

_settings.apply()
