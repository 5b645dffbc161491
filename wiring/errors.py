"""The one error a daemon's start-up reports: something the operator can fix."""

from __future__ import annotations


class SetupError(Exception):
    """The filesystem cannot be opened as configured (a setting, the database, Swift, the
    containers): the message is one line naming the cause; the command exits 2."""


class ConfigError(SetupError):
    """A setting is missing or malformed; the message names it."""
