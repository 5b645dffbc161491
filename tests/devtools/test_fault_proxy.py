"""The tests' fault proxy against the real dev Swift, checked with the raw client."""

from __future__ import annotations

import http.client
import time

import pytest
from faultproxy import FaultProxy
from swiftraw import SwiftRaw

from devtools.swift import DevSwift

MiB = 1024 * 1024
NETWORK_ERRORS = (OSError, http.client.HTTPException)


@pytest.fixture
def via(dev_swift: DevSwift, fault_proxy: FaultProxy) -> SwiftRaw:
    """A raw client authenticated through the fault proxy."""
    client = SwiftRaw(fault_proxy.url, dev_swift.user, dev_swift.key, timeout=10)
    client.auth()
    return client


def test_auth_rewrites_the_storage_url_so_requests_go_through_the_proxy(
    via: SwiftRaw, fault_proxy: FaultProxy, swift_container: str, raw_swift: SwiftRaw
) -> None:
    assert via.storage_url == f"http://127.0.0.1:{fault_proxy.port}/v1/AUTH_test"
    assert via.put_object(swift_container, "o", b"through")[0] == 201
    assert raw_swift.get_object(swift_container, "o")[2] == b"through"
    assert ("GET", "/auth/v1.0") in fault_proxy.requests
    assert fault_proxy.seen("PUT", f"/v1/AUTH_test/{swift_container}/o$") == [
        ("PUT", f"/v1/AUTH_test/{swift_container}/o")
    ]


def test_status_rules_answer_without_forwarding_and_are_consumed_in_order(
    via: SwiftRaw, fault_proxy: FaultProxy, swift_container: str, raw_swift: SwiftRaw
) -> None:
    fault_proxy.add_rule("PUT", r"/o$", "status:503", times=2)
    fault_proxy.add_rule(None, r"/o$", "status:500")
    status, headers = via.put_object(swift_container, "o", b"v1")
    assert (status, headers["x-fault-proxy"]) == (503, "injected")
    assert via.get_object(swift_container, "o")[0] == 500  # second rule: any method
    assert via.put_object(swift_container, "o", b"v2")[0] == 503
    assert raw_swift.head_object(swift_container, "o")[0] == 404  # nothing was forwarded
    assert via.put_object(swift_container, "o", b"v3")[0] == 201  # rules used up
    assert via.get_object(swift_container, "o")[::2] == (200, b"v3")


def test_forever_rule_until_cleared(
    via: SwiftRaw, fault_proxy: FaultProxy, swift_container: str
) -> None:
    fault_proxy.add_rule("HEAD", swift_container, "status:404", times=-1)
    assert [via.head_container(swift_container)[0] for _ in range(3)] == [404, 404, 404]
    assert via.put_object(swift_container, "x", b"")[0] == 201  # other methods pass
    fault_proxy.clear_rules()
    assert via.head_container(swift_container)[0] == 204


def test_drop_closes_the_connection_without_an_answer(
    via: SwiftRaw, fault_proxy: FaultProxy, swift_container: str
) -> None:
    fault_proxy.add_rule("GET", r"/o$", "drop")
    with pytest.raises(NETWORK_ERRORS):
        via.get_object(swift_container, "o")
    assert via.get_object(swift_container, "o")[0] == 404


@pytest.mark.parametrize("chunked", [False, True])
def test_drop_mid_body_leaves_no_object(
    via: SwiftRaw,
    fault_proxy: FaultProxy,
    swift_container: str,
    raw_swift: SwiftRaw,
    chunked: bool,
) -> None:
    fault_proxy.add_rule("PUT", r"/big$", "drop", after_bytes=256 * 1024)
    body = b"b" * MiB
    with pytest.raises(NETWORK_ERRORS):
        via.put_object(
            swift_container,
            "big",
            iter([body[i : i + 65536] for i in range(0, MiB, 65536)]) if chunked else body,
        )
    assert fault_proxy.seen("PUT", "/big$")
    assert raw_swift.head_object(swift_container, "big")[0] == 404
    assert via.put_object(swift_container, "big", body)[0] == 201


def test_stall_outlasts_the_client_timeout(
    dev_swift: DevSwift, fault_proxy: FaultProxy, swift_container: str, raw_swift: SwiftRaw
) -> None:
    assert raw_swift.put_object(swift_container, "o", b"late")[0] == 201
    impatient = SwiftRaw(fault_proxy.url, dev_swift.user, dev_swift.key, timeout=0.5)
    impatient.auth()
    fault_proxy.add_rule("GET", r"/o$", "stall", seconds=2)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        impatient.get_object(swift_container, "o")
    assert time.monotonic() - started < 1.5
    assert impatient.get_object(swift_container, "o")[::2] == (200, b"late")


def test_drop_response_cuts_the_body(
    via: SwiftRaw, fault_proxy: FaultProxy, swift_container: str, raw_swift: SwiftRaw
) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    assert raw_swift.put_object(swift_container, "o", body)[0] == 201
    fault_proxy.add_rule("GET", r"/o$", "drop_response")
    with pytest.raises(http.client.IncompleteRead) as half:
        via.get_object(swift_container, "o")
    assert half.value.partial == body[: MiB // 2]
    fault_proxy.add_rule("GET", r"/o$", "drop_response", after_bytes=10)
    with pytest.raises(http.client.IncompleteRead) as ten:
        via.get_object(swift_container, "o")
    assert ten.value.partial == body[:10]
    assert via.get_object(swift_container, "o")[2] == body


def test_chunked_requests_over_one_kept_alive_connection(
    via: SwiftRaw, fault_proxy: FaultProxy, swift_container: str, raw_swift: SwiftRaw
) -> None:
    assert via.token is not None
    accepted = fault_proxy.connections
    conn = http.client.HTTPConnection("127.0.0.1", fault_proxy.port, timeout=10)
    path = f"/v1/AUTH_test/{swift_container}/chunked"
    auth = {"X-Auth-Token": via.token}
    try:
        conn.request(
            "PUT", path, body=iter([b"abc", b"", b"def" * 1000]), headers=auth, encode_chunked=True
        )
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (201, b"")
        conn.request("HEAD", path, headers=auth)
        resp = conn.getresponse()
        assert (resp.status, resp.read(), resp.getheader("Content-Length")) == (200, b"", "3003")
        conn.request("GET", path, headers={**auth, "Range": "bytes=0-5"})
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (206, b"abcdef")
        conn.request(
            "PUT", path + "2", body=b"with Expect", headers={**auth, "Expect": "100-continue"}
        )
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (201, b"")
    finally:
        conn.close()
    assert fault_proxy.connections == accepted + 1
    assert raw_swift.get_object(swift_container, "chunked")[2] == b"abc" + b"def" * 1000
    assert raw_swift.get_object(swift_container, "chunked2")[2] == b"with Expect"
