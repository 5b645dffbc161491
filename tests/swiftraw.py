"""A tiny Swift client of the tests' own, used as an oracle: only `http.client` and `urllib`.

Independent of python-swiftclient on purpose (only the product's `seqwrite` imports that), so a
test never checks the product with the product's own client. It does v1 auth (re-authenticating
once on a 401), opens one connection per request, never retries, and returns raw statuses:
callers assert on them. Header dicts have lower-case keys.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

Headers = dict[str, str]
Body = bytes | Iterable[bytes]


class SwiftRaw:
    """v1-auth Swift client for test oracles. `storage_url`/`token` are set by `auth()`."""

    def __init__(self, auth_url: str, user: str, key: str, *, timeout: float = 60.0,
                 context: ssl.SSLContext | None = None) -> None:
        self.auth_url = auth_url
        self.user = user
        self.key = key
        self.timeout = timeout
        self.context = context  # for https:// URLs (None: the system's CAs)
        self.storage_url: str | None = None
        self.token: str | None = None

    # -------------------------------------------------------------------------- plumbing

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
    ) -> tuple[int, Headers, bytes]:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.hostname is None:
            raise ValueError(f"only http:// and https:// URLs are supported, not {url!r}")
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443,
                                               timeout=self.timeout, context=self.context)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port or 80,
                                              timeout=self.timeout)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            # An iterable body without Content-Length goes out chunked (http.client does it).
            conn.request(method, target, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def auth(self) -> None:
        """v1 auth: sets storage_url and token (raises on anything but 2xx)."""
        status, headers, body = self._send(
            "GET", self.auth_url, {"X-Auth-User": self.user, "X-Auth-Key": self.key}
        )
        if status // 100 != 2:
            raise RuntimeError(f"v1 auth at {self.auth_url} failed: {status} {body[:200]!r}")
        self.storage_url = headers["x-storage-url"]
        self.token = headers["x-auth-token"]

    def request(
        self,
        method: str,
        container: str | None = None,
        obj: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        query: Mapping[str, str] | str | None = None,
    ) -> tuple[int, Headers, bytes]:
        """One authenticated request on the account, a container or an object."""
        if self.token is None:
            self.auth()
        for attempt in (1, 2):
            assert self.storage_url is not None and self.token is not None
            url = self.storage_url
            if container is not None:
                url += "/" + urllib.parse.quote(container, safe="")
                if obj is not None:
                    url += "/" + urllib.parse.quote(obj, safe="/")
            if query:
                qs = query if isinstance(query, str) else urllib.parse.urlencode(query)
                url += "?" + qs
            all_headers = {**(headers or {}), "X-Auth-Token": self.token}
            status, resp_headers, data = self._send(method, url, all_headers, body)
            body_replayable = body is None or isinstance(body, bytes | bytearray)
            if status != 401 or attempt == 2 or not body_replayable:
                return status, resp_headers, data
            self.auth()
        raise AssertionError("unreachable")

    # -------------------------------------------------------------------------- containers

    def put_container(self, container: str, headers: Mapping[str, str] | None = None) -> int:
        return self.request("PUT", container, headers=headers)[0]

    def delete_container(self, container: str) -> int:
        return self.request("DELETE", container)[0]

    def head_container(self, container: str) -> tuple[int, Headers]:
        status, headers, _ = self.request("HEAD", container)
        return status, headers

    def list_container(self, container: str, prefix: str | None = None) -> list[dict[str, Any]]:
        """Every object (all pages, JSON format): name, bytes, hash, last_modified, ..."""
        items: list[dict[str, Any]] = []
        marker = ""
        while True:
            query = {"format": "json", "marker": marker}
            if prefix is not None:
                query["prefix"] = prefix
            status, _, body = self.request("GET", container, query=query)
            if status == 204:
                return items
            if status != 200:
                raise RuntimeError(f"listing {container!r} failed: {status} {body[:200]!r}")
            page = json.loads(body)
            if not page:
                return items
            items.extend(page)
            marker = page[-1].get("name") or page[-1]["subdir"]

    # -------------------------------------------------------------------------- objects

    def head_object(self, container: str, obj: str) -> tuple[int, Headers]:
        status, headers, _ = self.request("HEAD", container, obj)
        return status, headers

    def get_object(
        self,
        container: str,
        obj: str,
        range: str | None = None,
        query: Mapping[str, str] | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Headers, bytes]:
        """`range` is a Range header value ("bytes=0-9"); a bare "0-9" gets "bytes=" added."""
        all_headers = dict(headers or {})
        if range is not None:
            all_headers["Range"] = range if range.startswith("bytes=") else f"bytes={range}"
        return self.request("GET", container, obj, headers=all_headers, query=query)

    def put_object(
        self,
        container: str,
        obj: str,
        body: Body,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | str | None = None,
    ) -> tuple[int, Headers]:
        """PUT bytes (with Content-Length) or an iterable of bytes (chunked)."""
        status, resp_headers, _ = self.request(
            "PUT", container, obj, headers=headers, body=body, query=query
        )
        return status, resp_headers

    def post_object(self, container: str, obj: str, headers: Mapping[str, str]) -> int:
        """Note: Swift replaces ALL X-Object-Meta-* with the ones given here."""
        return self.request("POST", container, obj, headers=headers)[0]

    def delete_object(
        self, container: str, obj: str, query: Mapping[str, str] | str | None = None
    ) -> int:
        return self.request("DELETE", container, obj, query=query)[0]

    # -------------------------------------------------------------------------- cluster

    def get_info(self) -> dict[str, Any]:
        """GET /info (no auth): the cluster's capabilities and limits."""
        parts = urllib.parse.urlsplit(self.auth_url)
        status, _, body = self._send("GET", f"{parts.scheme}://{parts.netloc}/info")
        if status != 200:
            raise RuntimeError(f"GET /info failed: {status} {body[:200]!r}")
        return json.loads(body)
