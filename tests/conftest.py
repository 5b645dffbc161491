"""Shared pytest fixtures: the session's real dev Swift and dev PostgreSQL, and the tests' own
clients of them.

Fixtures (all lazy: a test that requests none of them never starts Swift):
    dev_swift       session: a `devtools.swift.DevSwift` on a random free port range, with a
                    lowered max_file_size (DEV_SWIFT_MAX_FILE_SIZE) for segment-rollover tests.
    raw_swift       session: a `swiftraw.SwiftRaw` (independent oracle client) bound to it.
    swift_container function: a fresh, unique container name (created), emptied afterwards.
    fault_proxy     function: a started `faultproxy.FaultProxy` in front of dev_swift; use
                    `fault_proxy.url` as the auth URL so every request goes through it.

    dev_postgres    session: a `devtools.postgres.DevPostgres` (fast: no fsync) on a free port,
                    in a temporary directory of its own, removed at the end.
    pg_url          function: the URL of a fresh, empty database on it, dropped afterwards.

Tests using dev_swift (directly or through another fixture) get the `swift` marker, those
using dev_postgres the `postgres` marker, so `pytest -m "not swift and not postgres"` runs the
pure unit tests only. The dev Swift never outlives the session:
the fixture's finalizer stops it, an atexit hook stops it if pytest is interrupted, and the
servers run with PR_SET_PDEATHSIG so they die with a killed pytest.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import pytest
from devservices import DEV_SWIFT_MAX_FILE_SIZE, container_name, start_dev_swift
from faultproxy import FaultProxy
from swiftraw import SwiftRaw

from devtools import postgres as devpostgres
from devtools import swift as devswift
from devtools.postgres import DevPostgres
from devtools.swift import DevSwift


def pytest_configure(config: pytest.Config) -> None:
    """The tests configure Swift themselves: credentials a developer exported in this shell
    (`eval "$(cloudfs dev-swift start ...)"`) would override their config files."""
    for var in list(os.environ):
        if var.startswith(("OS_", "ST_")) or var == "CREDENTIALS_DIRECTORY":
            del os.environ[var]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"dev_swift", "keystone_swift"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.swift)
        if "dev_postgres" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def dev_swift(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevSwift]:
    dir = tmp_path_factory.mktemp("devswift")
    swift = start_dev_swift(dir, max_file_size=DEV_SWIFT_MAX_FILE_SIZE, die_with_parent=True)
    try:
        yield swift
    finally:
        devswift.stop(dir)


@pytest.fixture(scope="session")
def dev_postgres() -> Iterator[DevPostgres]:
    dev = devpostgres.start_throwaway(fast=True, die_with_parent=True)
    try:
        yield dev
    finally:
        devpostgres.remove(dev.dir)


@pytest.fixture
def pg_url(dev_postgres: DevPostgres) -> Iterator[str]:
    name = f"t_{secrets.token_hex(6)}"
    url = devpostgres.create_database(dev_postgres, name, socket=True)
    yield url
    devpostgres.drop_database(dev_postgres, name)


@pytest.fixture(scope="session")
def raw_swift(dev_swift: DevSwift) -> SwiftRaw:
    client = SwiftRaw(dev_swift.auth_url, dev_swift.user, dev_swift.key)
    client.auth()
    return client


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
