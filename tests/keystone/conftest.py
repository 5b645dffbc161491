"""Fixtures of the Keystone + TLS tests: a dev Swift whose proxy authenticates with a real
Keystone, both over https with a CA of their own (`keystone_swift`, once per session: ~9 s to
start), the tests' own oracle client of it, and credentials of both kinds.

Fixtures:
    keystone_swift  session: `DevSwift` with `.keystone` (the account) and `.cacert`.
    keystone_raw    session: a `KeystoneRaw` oracle (tokens by password, stdlib only).
    ks_container    function: a fresh container, emptied afterwards.
    password_auth / app_auth: `KeystoneAuth` of the user with its password / with the
                    application credential, verifying against the instance's CA.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator

import pytest
from devservices import DEV_SWIFT_MAX_FILE_SIZE, container_name, start_dev_swift
from swiftraw import SwiftRaw

from devtools import keystone
from devtools import swift as devswift
from devtools.swift import DevSwift
from seqwrite import KeystoneAuth, Tls


class KeystoneRaw(SwiftRaw):
    """The oracle client, authenticated by Keystone (a password token, then the account's
    storage URL); https verified against the instance's CA."""

    def __init__(self, dev: DevSwift) -> None:
        assert dev.keystone is not None and dev.cacert is not None
        super().__init__(dev.auth_url, dev.user, dev.key,
                         context=ssl.create_default_context(cafile=dev.cacert))
        self.dev = dev

    def auth(self) -> None:
        assert self.dev.keystone is not None
        self.token, path = keystone.token(self.dev.keystone, self.dev.port, self.context)
        self.storage_url = f"https://127.0.0.1:{self.dev.port}{path}"


@pytest.fixture(scope="session")
def keystone_swift(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevSwift]:
    dir = tmp_path_factory.mktemp("keystone-swift")
    dev = start_dev_swift(dir, auth="keystone", tls_on=True,
                          max_file_size=DEV_SWIFT_MAX_FILE_SIZE, die_with_parent=True)
    try:
        yield dev
    finally:
        devswift.stop(dir)


@pytest.fixture(scope="session")
def keystone_raw(keystone_swift: DevSwift) -> KeystoneRaw:
    raw = KeystoneRaw(keystone_swift)
    raw.auth()
    return raw


@pytest.fixture
def ks_container(request: pytest.FixtureRequest, keystone_raw: KeystoneRaw) -> Iterator[str]:
    name = container_name(request.node.name)
    assert keystone_raw.put_container(name) in (201, 202)
    yield name
    with contextlib.suppress(Exception):
        for obj in keystone_raw.list_container(name):
            keystone_raw.delete_object(name, obj["name"])
        keystone_raw.delete_container(name)


def password_auth_of(dev: DevSwift, **kw: object) -> KeystoneAuth:
    assert dev.keystone is not None and dev.cacert is not None
    settings: dict[str, object] = {
        "username": dev.keystone.user, "password": dev.keystone.password,
        "project_name": dev.keystone.project, "user_domain_name": "Default",
        "project_domain_name": "Default", "tls": Tls(dev.cacert)}
    return KeystoneAuth(dev.auth_url, **{**settings, **kw})  # type: ignore[arg-type]


def app_auth_of(dev: DevSwift, **kw: object) -> KeystoneAuth:
    assert dev.keystone is not None and dev.cacert is not None
    settings: dict[str, object] = {
        "application_credential_id": dev.keystone.application_credential_id,
        "application_credential_secret": dev.keystone.application_credential_secret,
        "tls": Tls(dev.cacert)}
    return KeystoneAuth(dev.auth_url, **{**settings, **kw})  # type: ignore[arg-type]


@pytest.fixture
def password_auth(keystone_swift: DevSwift) -> KeystoneAuth:
    return password_auth_of(keystone_swift)


@pytest.fixture
def app_auth(keystone_swift: DevSwift) -> KeystoneAuth:
    return app_auth_of(keystone_swift)
