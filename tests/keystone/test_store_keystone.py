"""The store against a real Keystone and a real Swift, both over https: password and
application credential logins, every request path (swiftclient calls, the streamed PUT and
GET of the store's own), refusals that must be one clear error (wrong password, unknown
project, untrusted certificate), and a token revoked in the middle of a write and of a read."""

from __future__ import annotations

import http.client
import os
import ssl
import time

import blake3
import pytest
import trio
from kshelpers import flush_memcached, revoke

from devtools.swift import DevSwift
from seqwrite import (
    AuthFailed,
    CertificateError,
    KeystoneAuth,
    Layout,
    RetryPolicy,
    SwiftStore,
    Tls,
    Writer,
)

KiB, MiB = 1024, 1024 * 1024
SEG = 256 * KiB


def make_store(auth: KeystoneAuth, **kw) -> SwiftStore:
    # Generous: Keystone's token validation behind the proxy took more than 10 s on a loaded
    # machine (these tests are about what is sent, not how fast).
    kw.setdefault("timeout", 30.0)
    kw.setdefault("policy", RetryPolicy(deadline=60.0, first_backoff=0.05, max_backoff=1.0))
    return SwiftStore(auth, **kw)


async def make_layout(store: SwiftStore, container: str) -> Layout:
    layout = Layout(base=container, shard_digits=0)
    for name in layout.all_containers():
        await store.put_container(name)
    return layout


async def write(store: SwiftStore, layout: Layout, data: bytes, *, between=None) -> str:
    """Write `data` in 64 KiB pieces through a Writer; `between()` runs once half is in."""
    async with trio.open_nursery() as nursery:
        writer = Writer(store, layout, nursery, segment_size=SEG, small_threshold=KiB)
        for off in range(0, len(data), 64 * KiB):
            if between is not None and off == len(data) // 2:
                await trio.to_thread.run_sync(between)
            await writer.write(data[off:off + 64 * KiB])
        content = await writer.finish()
    return content.hash


async def read(store: SwiftStore, layout: Layout, digest: str, size: int, *,
               between=None) -> bytes:
    reader = store.open_read(*layout.cas_path(digest), 0, size)
    out = bytearray()
    while len(out) < size:
        if between is not None and len(out) == size // 2:
            await trio.to_thread.run_sync(between)
            reader.close()  # the stream is re-opened, with the (now revoked) token
        out += await reader.read(64 * KiB)
    return bytes(out)


@pytest.mark.parametrize("kind", ["password", "application credential"])
async def test_every_path_over_https(keystone_swift: DevSwift, ks_container, keystone_raw,
                                     password_auth, app_auth, kind):
    store = make_store(password_auth if kind == "password" else app_auth)
    await store.open()
    try:
        assert store.login.storage_url is not None
        assert store.login.storage_url.startswith(f"https://127.0.0.1:{keystone_swift.port}/")
        assert store.limits.max_file_size == 4 * MiB  # GET /info answered
        layout = await make_layout(store, ks_container)
        data = os.urandom(3 * SEG + 1000)  # four streamed segments and a manifest
        digest = await write(store, layout, data)
        assert digest == blake3.blake3(data).hexdigest()
        assert await read(store, layout, digest, len(data)) == data  # streamed GET
        assert await store.get(*layout.cas_path(digest), offset=5, length=10) == data[5:15]
        status, _, body = keystone_raw.get_object(*layout.cas_path(digest))
        assert (status, body) == (200, data)  # the oracle agrees
        assert store.statistics()["AUTH"] == 1
    finally:
        await store.aclose()


async def test_storage_url_override(keystone_swift: DevSwift, app_auth, keystone_raw):
    store = make_store(KeystoneAuth(**{**_fields(app_auth),
                                       "storage_url": keystone_raw.storage_url}))
    await store.open()
    assert store.login.storage_url == keystone_raw.storage_url
    await store.aclose()


def _fields(auth: KeystoneAuth) -> dict:
    return {f: getattr(auth, f) for f in auth.__dataclass_fields__}


@pytest.mark.parametrize("change, message", [
    ({"password": "wrong-password"}, "authentication at"),
    ({"project_name": "no-such-project"}, "authentication at"),
    ({"region_name": "Elsewhere"}, "no object-store endpoint in the catalog"),
    ({"interface": "internal"}, "no object-store endpoint in the catalog (interface internal"),
])
async def test_refusals_are_one_clear_error_at_once(password_auth, change, message):
    """Not retried (the policy would retry transient errors for 60 s), no secret in it."""
    store = make_store(KeystoneAuth(**{**_fields(password_auth), **change}))
    started = time.monotonic()
    with pytest.raises(AuthFailed) as err:
        await store.open()
    assert time.monotonic() - started < 8
    text = str(err.value)
    assert message in text and "\n" not in text
    assert password_auth.password not in text and "wrong-password" not in text


async def test_application_credential_with_a_wrong_secret(app_auth):
    store = make_store(KeystoneAuth(**{**_fields(app_auth),
                                       "application_credential_secret": "nope"}))
    with pytest.raises(AuthFailed, match="application credential"):
        await store.open()


@pytest.mark.parametrize("which", ["another CA", "the system's CAs"])
async def test_an_untrusted_certificate_is_refused_at_once(tmp_path, app_auth, which):
    if which == "another CA":
        from devtools import tls

        other = tls.ensure(tmp_path).ca  # a CA that signed nothing of the instance
        auth = KeystoneAuth(**{**_fields(app_auth), "tls": Tls(str(other))})
    else:
        auth = KeystoneAuth(**{**_fields(app_auth), "tls": Tls()})
    store = make_store(auth)
    started = time.monotonic()
    with pytest.raises(CertificateError) as err:
        await store.open()
    assert time.monotonic() - started < 5
    text = str(err.value)
    assert "not trusted" in text and "cacert (OS_CACERT)" in text and "\n" not in text


async def test_insecure_talks_to_an_untrusted_server(app_auth):
    store = make_store(KeystoneAuth(**{**_fields(app_auth), "tls": Tls(insecure=True)}))
    await store.open()
    assert await store.head_container("no-such-container") is None
    await store.aclose()


async def test_a_revoked_token_mid_write_and_mid_read_reauthenticates(
        keystone_swift: DevSwift, ks_container, app_auth):
    """A 401 in the middle (the token revoked and the proxy's cached validation gone, as
    after an expiry): the store gets a new token and replays; the bytes are whole."""
    store = make_store(app_auth)
    await store.open()
    try:
        layout = await make_layout(store, ks_container)

        def revoke_current() -> None:
            token = store.login.current()[1]
            revoke(keystone_swift, token)
            flush_memcached(keystone_swift)

        data = os.urandom(4 * SEG + 1)
        digest = await write(store, layout, data, between=revoke_current)
        assert store.statistics()["AUTH"] == 2
        assert await read(store, layout, digest, len(data), between=revoke_current) == data
        assert store.statistics()["AUTH"] == 3
    finally:
        await store.aclose()


def test_helpers_talk_to_keystone(keystone_swift: DevSwift):
    """The revocation helper really revokes (else the test above proves nothing)."""
    from devtools import keystone

    assert keystone_swift.keystone is not None and keystone_swift.cacert is not None
    ctx = ssl.create_default_context(cafile=keystone_swift.cacert)
    token, path = keystone.token(keystone_swift.keystone, keystone_swift.port, ctx)
    conn = http.client.HTTPSConnection("127.0.0.1", keystone_swift.port, context=ctx, timeout=10)
    conn.request("HEAD", path, headers={"X-Auth-Token": token})
    assert conn.getresponse().status == 204
    conn.close()
    revoke(keystone_swift, token)
    flush_memcached(keystone_swift)
    conn = http.client.HTTPSConnection("127.0.0.1", keystone_swift.port, context=ctx, timeout=10)
    conn.request("HEAD", path, headers={"X-Auth-Token": token})
    assert conn.getresponse().status == 401
    conn.close()
