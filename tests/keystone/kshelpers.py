"""Helpers of the Keystone tests: revoking a token, forgetting the proxy's cached validations
(so that a revoked token is refused at once, as an expired one is)."""

from __future__ import annotations

import http.client
import socket
import ssl

from devtools import keystone
from devtools.swift import DevSwift


def revoke(dev: DevSwift, token: str) -> None:
    """Revoke `token` in Keystone (a token may revoke itself)."""
    assert dev.cacert is not None
    ctx = ssl.create_default_context(cafile=dev.cacert)
    conn = http.client.HTTPSConnection("127.0.0.1", dev.port + keystone.OFFSET, context=ctx,
                                       timeout=30)
    try:
        conn.request("DELETE", "/v3/auth/tokens",
                     headers={"X-Auth-Token": token, "X-Subject-Token": token})
        status = conn.getresponse().status
    finally:
        conn.close()
    assert status == 204, f"revocation: {status}"


def flush_memcached(dev: DevSwift) -> None:
    """Empty the proxy's memcached (auth_token caches each token's validation there)."""
    with socket.create_connection(("127.0.0.1", dev.port + 4), timeout=5) as s:
        s.sendall(b"flush_all\r\n")
        assert s.recv(100).startswith(b"OK")
