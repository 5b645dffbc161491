"""Starting the tests' dev services, shared by the conftest files (which cannot import each
other reliably: every one of them is a module named `conftest`)."""

from __future__ import annotations

import atexit
import re
import secrets
from pathlib import Path

from devtools import swift as devswift
from devtools.errors import UsageError
from devtools.swift import DevSwift

# Small enough that tests can cross it cheaply; SLO manifests (~210 B per segment) must still fit.
DEV_SWIFT_MAX_FILE_SIZE = 4 * 1024 * 1024


def start_dev_swift(dir: Path, **kwargs: object) -> DevSwift:
    """Starts a dev Swift in dir on a free random port range (retrying if another process takes
    a port between the check and the start), stopped at exit at the latest."""
    atexit.register(devswift.stop, dir)
    for attempt in range(3):
        port = devswift.find_free_port_range(str(kwargs.get("auth", "tempauth")))
        try:
            return devswift.start(dir, port, **kwargs)  # type: ignore[arg-type]
        except UsageError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def container_name(test_name: str) -> str:
    """A unique valid container name derived from a test's name (<= 256 bytes, no '/')."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name).strip("-.")[:200] or "test"
    return f"{base}-{secrets.token_hex(4)}"
