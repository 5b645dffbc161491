"""Plain object PUTs with http.client on kept-alive connections (SwiftStore.put).

A small file is one plain PUT (docs/LAYOUT.md), so the client's CPU per request decides how
many small files a mount stores per second on a busy machine. Through python-swiftclient a
PUT costs ~2.2 ms of CPU (requests builds a session request, merges headers, reads the proxy
settings from the environment, urllib3 wraps the socket); the same PUT written with
http.client on a connection kept open between requests costs ~0.5 ms, and no new TCP
connection per request (measured in docs/BENCHMARKS.md, issue 16 part 1 and 2).

The pool holds idle connections to the storage URL (one per concurrent request at most, as
many as the store's connection slots). A connection is reused only after a complete answer that
leaves it open; any failure closes it. A reused connection the server closed meanwhile (an
idle keep-alive timeout) fails before any answer: that one attempt is repeated at once on a
new connection (a PUT of the same bytes under the same name, with the same conditions, so
repeating it is what the retry policy would do anyway, only without the pause).
"""

from __future__ import annotations

import http.client
import ssl
import threading
import urllib.parse

from swiftclient.exceptions import ClientException

# What a server that closed an idle keep-alive connection looks like to the next request.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          ConnectionAbortedError)


class DirectPool:
    """Idle http.client connections to one storage URL, shared by the store's worker threads.

    `put(url, token, container, name, body, headers)` sends one PUT and returns its ETag;
    a non-2xx answer raises ClientException (with http_status, as swiftclient's do, so the
    store's retry and translation rules apply unchanged)."""

    def __init__(self, timeout: float, context: ssl.SSLContext, max_idle: int) -> None:
        self.timeout = timeout
        self.context = context
        self.max_idle = max_idle
        self.opened = 0  # connections made (tests: kept-alive connections are reused)
        self._lock = threading.Lock()
        self._idle: list[tuple[str, http.client.HTTPConnection]] = []

    def _borrow(self, url: str) -> tuple[http.client.HTTPConnection, bool]:
        """A connection to `url`'s host and whether it was used before."""
        with self._lock:
            while self._idle:
                key, conn = self._idle.pop()
                if key == url:
                    return conn, True
                conn.close()  # the storage URL changed (a new login): not reused
            self.opened += 1
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "https":
            return http.client.HTTPSConnection(parsed.hostname or "", parsed.port,
                                               timeout=self.timeout,
                                               context=self.context), False
        return http.client.HTTPConnection(parsed.hostname or "", parsed.port,
                                          timeout=self.timeout), False

    def _give_back(self, url: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append((url, conn))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()

    def put(self, url: str, token: str, container: str, name: str, body: bytes,
            headers: dict[str, str], query: str | None = None) -> str:
        """PUT `body` (blocking: runs in a worker thread). Returns the ETag."""
        path = urllib.parse.urlsplit(url).path
        target = f"{path}/{urllib.parse.quote(container)}/{urllib.parse.quote(name)}"
        if query:
            target += "?" + query
        hdrs = {"X-Auth-Token": token, "Content-Length": str(len(body)), **headers}
        while True:
            conn, reused = self._borrow(url)
            try:
                conn.request("PUT", target, body=body, headers=hdrs)
                resp = conn.getresponse()
                content = resp.read()
            except _STALE:
                conn.close()
                if reused:
                    continue  # closed by the server while idle: once more on a new one
                raise
            except BaseException:
                conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                self._give_back(url, conn)
            if not 200 <= resp.status < 300:
                raise ClientException(
                    f"Object PUT failed: {url}/{container}/{name} {resp.status} {resp.reason}",
                    http_status=resp.status, http_reason=resp.reason,
                    http_response_content=content[:200])
            return resp.getheader("Etag", "")
