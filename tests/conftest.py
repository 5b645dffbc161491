"""Shared pytest fixtures: the session's real dev Swift and the tests' own clients of it.

Fixtures (all lazy: a test that requests none of them never starts Swift):
    dev_swift       session: a `devtools.swift.DevSwift` on a random free port range, with a
                    lowered max_file_size (DEV_SWIFT_MAX_FILE_SIZE) for segment-rollover tests.
    raw_swift       session: a `swiftraw.SwiftRaw` (independent oracle client) bound to it.
    swift_container function: a fresh, unique container name (created), emptied afterwards.
    fault_proxy     function: a started `faultproxy.FaultProxy` in front of dev_swift; use
                    `fault_proxy.url` as the auth URL so every request goes through it.

Tests using dev_swift (directly or through another fixture) get the `swift` marker, so
`pytest -m "not swift"` runs the pure unit tests only. The dev Swift never outlives the session:
the fixture's finalizer stops it, an atexit hook stops it if pytest is interrupted, and the
servers run with PR_SET_PDEATHSIG so they die with a killed pytest.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from swiftraw import SwiftRaw

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
        port = devswift.find_free_port_range()
        try:
            return devswift.start(dir, port, **kwargs)  # type: ignore[arg-type]
        except UsageError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def pytest_configure(config: pytest.Config) -> None:
    """The tests configure Swift themselves: credentials a developer exported in this shell
    (`eval "$(cloudfs dev-swift start ...)"`) would override their config files."""
    for var in list(os.environ):
        if var.startswith(("OS_", "ST_")) or var == "CREDENTIALS_DIRECTORY":
            del os.environ[var]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "dev_swift" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.swift)


@pytest.fixture(scope="session")
def dev_swift(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevSwift]:
    dir = tmp_path_factory.mktemp("devswift")
    swift = start_dev_swift(dir, max_file_size=DEV_SWIFT_MAX_FILE_SIZE, die_with_parent=True)
    try:
        yield swift
    finally:
        devswift.stop(dir)


@pytest.fixture(scope="session")
def raw_swift(dev_swift: DevSwift) -> SwiftRaw:
    client = SwiftRaw(dev_swift.auth_url, dev_swift.user, dev_swift.key)
    client.auth()
    return client


def container_name(test_name: str) -> str:
    """A unique valid container name derived from a test's name (<= 256 bytes, no '/')."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name).strip("-.")[:200] or "test"
    return f"{base}-{secrets.token_hex(4)}"


@pytest.fixture
def swift_container(request: pytest.FixtureRequest, raw_swift: SwiftRaw) -> Iterator[str]:
    name = container_name(request.node.name)
    status = raw_swift.put_container(name)
    assert status in (201, 202), f"PUT container {name}: {status}"
    yield name
    with contextlib.suppress(Exception):  # best effort: the session's Swift is thrown away
        for obj in raw_swift.list_container(name):
            raw_swift.delete_object(name, obj["name"])
        raw_swift.delete_container(name)


@pytest.fixture
def fault_proxy(dev_swift: DevSwift) -> Iterator[FaultProxy]:
    with FaultProxy(dev_swift.port) as proxy:
        yield proxy
