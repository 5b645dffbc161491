"""The two ways a development service can fail to start."""

from __future__ import annotations


class UsageError(Exception):
    """The request cannot be served as asked (a busy port, other settings already running):
    one line for the user, exit status 2."""


class ServiceError(Exception):
    """A service failed to start; the message carries its processes' log tails (exit 1)."""
