"""Errors of the cloudfs command line that a user can fix (bad config, busy port, ...)."""


class UsageError(Exception):
    """A problem the user can fix; printed as one line, no traceback, exit status 2."""
