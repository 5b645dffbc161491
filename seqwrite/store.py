"""SwiftStore: the one async facade over python-swiftclient (the only importer of swiftclient).

Why a facade: swiftclient is blocking, its `Connection` is not thread-safe, its retries sleep
uncancellably and its default timeout is infinite. Here every request runs in a worker thread
(`trio.to_thread.run_sync` with our own `CapacityLimiter`, never trio's global one) on a
Connection borrowed from a pool (one Connection per concurrent request), with `retries=0` and a
finite socket timeout; retries happen in trio (seqwrite.retry) under a deadline, so a failing
or cancelled request ends in a typed error, never a hang. Admission to the pool is FIFO
(`trio.CapacityLimiter` is fair), so many writers share the connection limit fairly.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import swiftclient
import trio
import urllib3.exceptions
from requests.exceptions import RequestException
from swiftclient.exceptions import ClientException

from seqwrite.auth import Auth, Login, certificate_error, is_certificate_error
from seqwrite.direct import DirectPool
from seqwrite.errors import (
    AlreadyExists,
    AuthFailed,
    Corrupted,
    ObjectNotFound,
    Rejected,
    StoreError,
    TooLarge,
)
from seqwrite.layout import StoredObject, is_slo, parse_stored_manifest
from seqwrite.retry import RetryPolicy, retrying
from seqwrite.stats import StoreStats

log = logging.getLogger(__name__)
# swiftclient logs failed requests as curl lines carrying the auth token: never let them out.
logging.getLogger("swiftclient").setLevel(logging.CRITICAL)

T = TypeVar("T")

# Status codes that retrying can fix (S3QL's list for Swift): 5xx except "not implemented"
# style codes, plus request timeout and rate limiting.
_PERMANENT_5XX = {501, 505, 508, 510, 511}
_TRANSIENT_4XX = {408, 429, 498, 499}
# Failures of the connection itself, whatever layer reports them (a response body cut short
# surfaces from urllib3 or http.client, not as a requests exception).
_TRANSPORT_ERRORS = (RequestException, OSError, urllib3.exceptions.HTTPError,
                     http.client.HTTPException)


@dataclass(frozen=True, slots=True)
class Limits:
    """What this Swift cluster allows, read from GET /info at start."""

    max_file_size: int = 5 * 2**30 + 2
    max_manifest_segments: int = 1000
    max_manifest_size: int = 8 * 2**20
    container_listing_limit: int = 10000

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Limits:
        swift = info.get("swift", {})
        slo = info.get("slo", {})
        d = cls()
        return cls(
            max_file_size=int(swift.get("max_file_size", d.max_file_size)),
            max_manifest_segments=int(slo.get("max_manifest_segments", d.max_manifest_segments)),
            max_manifest_size=int(slo.get("max_manifest_size", d.max_manifest_size)),
            container_listing_limit=int(
                swift.get("container_listing_limit", d.container_listing_limit)),
        )


def is_transient(exc: BaseException) -> bool:
    """True for failures a retry can fix (never a certificate that is not trusted)."""
    if is_certificate_error(exc):
        return False
    if isinstance(exc, ClientException):
        status = exc.http_status
        if status is None:
            return True  # connection-level failure reported by swiftclient
        return (status >= 500 and status not in _PERMANENT_5XX) or status in _TRANSIENT_4XX
    return isinstance(exc, _TRANSPORT_ERRORS)


def describe(exc: BaseException) -> str:
    """One line naming the failure (swiftclient's str includes URL, status and txn id)."""
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


def translate(exc: BaseException, what: str, login: Login | None = None) -> StoreError:
    """Map a non-transient swiftclient failure to a typed StoreError."""
    if isinstance(exc, StoreError):
        return exc
    if is_certificate_error(exc):
        if login is None:
            return AuthFailed(f"{what}: {describe(exc)}")
        return certificate_error(login.storage_url or login.auth.auth_url, login.auth.tls)
    status = getattr(exc, "http_status", None)
    msg = f"{what}: {describe(exc)}"
    if status == 404:
        return ObjectNotFound(msg)
    if status == 412:
        return AlreadyExists(msg)
    if status == 401 or status == 403:
        return AuthFailed(msg)
    if status == 422:
        return Corrupted(msg)
    if status == 413:
        return TooLarge(msg)
    return Rejected(msg, status)


class SwiftStore:
    """Async access to one Swift account.

    Attributes:
        limits: the cluster's limits (valid after `open()`).
        policy: retry policy of every operation.
        requests: count of HTTP requests sent, per method ("PUT", "GET", ...).
    """

    limits: Limits
    policy: RetryPolicy
    requests: Counter[str]

    def __init__(
        self,
        auth: Auth,
        *,
        max_connections: int = 8,
        max_streams: int = 256,
        timeout: float = 60.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._auth = auth
        self._timeout = timeout
        self._login = Login(auth, timeout)  # ValueError if the settings cannot work
        self.policy = policy or RetryPolicy()
        self.limits = Limits()
        self.requests = Counter()
        self.stats = StoreStats()
        self._idle: list[swiftclient.Connection] = []
        # Plain PUTs (small files, manifests) on kept-alive http.client connections.
        self._direct = DirectPool(timeout, self._login.ssl_context, max_connections)
        self._slots = trio.CapacityLimiter(max_connections)
        self._threads = trio.CapacityLimiter(max_connections)
        # Streaming uploads wait on the application between chunks: they get their own
        # threads, so idle writers never starve reads, tags and manifests (or each other).
        self._streams = trio.CapacityLimiter(max_streams)

    # -- connections -------------------------------------------------------------------------

    @contextmanager
    def _borrowed(self) -> Iterator[swiftclient.Connection]:
        """A pooled connection; discarded (not reused) if the request failed."""
        conn = self._idle.pop() if self._idle else self._login.connection()
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        self._idle.append(conn)

    async def _once(self, method: str, call: Callable[[swiftclient.Connection], T]) -> T:
        """One request: a pool slot, a connection, a worker thread. In the thread, the
        connection first gets the current token (renewed before it expires), and a token it
        got by re-authenticating itself after a 401 is kept for every other request."""
        login = self._login

        def run(conn: swiftclient.Connection) -> T:
            login.refresh(conn)
            try:
                return call(conn)
            finally:
                login.adopt(conn)

        async with self._slots:
            with self._borrowed() as conn:
                self.requests[method] += 1
                try:
                    result = await trio.to_thread.run_sync(partial(run, conn),
                                                           limiter=self._threads)
                except Exception as exc:
                    self.stats.answered(method, exc)
                    raise
                self.stats.answered(method)
                return result

    async def _once_direct(self, method: str, run: Callable[[], T] | None) -> T:
        """One request written without swiftclient: a pool slot and a worker thread."""
        assert run is not None
        async with self._slots:
            self.requests[method] += 1
            try:
                result = await trio.to_thread.run_sync(run, limiter=self._threads)
            except Exception as exc:
                self.stats.answered(method, exc)
                raise
            self.stats.answered(method)
            return result

    async def _call(self, what: str, method: str,
                    call: Callable[[swiftclient.Connection], T] | None,
                    direct: Callable[[], T] | None = None) -> T:
        """One request, retried while transient, translated to a StoreError when it fails.
        `call` runs on a swiftclient Connection; or `direct` (call None) runs as it is, in a
        worker thread (a request written with http.client, seqwrite/direct.py)."""
        once = partial(self._once, method, call) if call is not None else \
            partial(self._once_direct, method, direct)
        try:
            return await retrying(
                what,
                once,
                policy=self.policy,
                is_transient=is_transient,
                describe=describe,
                on_retry=self.count_retry,
            )
        except (ClientException, RequestException, OSError) as exc:
            error = translate(exc, what, self._login)
            if not isinstance(error, ObjectNotFound | AlreadyExists):  # answers, not failures
                self.stats.failures += 1
            raise error from exc
        except StoreError:
            self.stats.failures += 1
            raise

    def count_retry(self) -> None:
        self.stats.retries += 1

    def statistics(self) -> dict[str, int]:
        """Requests sent, per method, and "AUTH": tokens obtained."""
        return {**self.requests, "AUTH": self._login.authentications}

    @property
    def login(self) -> Login:
        return self._login

    # -- account -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Authenticate and read the cluster's limits from /info."""

        try:
            await self._authenticate()
        except (Rejected, ObjectNotFound) as exc:
            raise AuthFailed(f"authentication at {self._auth.describe()} failed: {exc}"
                             ) from exc
        try:
            info = await self._call("GET /info", "GET", lambda c: c.get_capabilities())
        except StoreError as exc:
            log.warning("cannot read Swift /info (%s); assuming default limits", exc)
            return
        self.limits = Limits.from_info(info)

    async def aclose(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        self._direct.close()

    async def put_container(self, container: str) -> None:
        await self._call(f"PUT container {container}", "PUT",
                         lambda c: c.put_container(container))

    async def head_container(self, container: str) -> dict[str, str] | None:
        try:
            return await self._call(f"HEAD container {container}", "HEAD",
                                    lambda c: c.head_container(container))
        except ObjectNotFound:
            return None

    # -- objects -----------------------------------------------------------------------------

    async def put(
        self,
        container: str,
        name: str,
        data: bytes,
        *,
        etag: str | None = None,
        headers: dict[str, str] | None = None,
        if_none_match: bool = False,
        query: str | None = None,
    ) -> str:
        """PUT bytes (retryable). `etag` (md5 hex) makes Swift verify the body.
        With `if_none_match`, raises AlreadyExists when the object exists."""
        hdrs = dict(headers or {})
        if if_none_match:
            hdrs["If-None-Match"] = "*"
        if etag is not None:
            hdrs["ETag"] = etag
        what = f"PUT {container}/{name}"
        result = await self._call(what, "PUT", None, partial(
            self._direct_put, what, container, name, data, hdrs, query))
        self.stats.bytes_sent += len(data)
        return result

    def _direct_put(self, what: str, container: str, name: str, data: bytes,
                    headers: dict[str, str], query: str | None) -> str:
        """In a worker thread: one PUT on a kept-alive connection (seqwrite/direct.py), with
        the current token; a 401 forgets the token and is reported as transient (as
        `_authorized`)."""
        url, token = self._login.current()
        try:
            return self._direct.put(url, token, container, name, data, headers, query)
        except ClientException as exc:
            if exc.http_status == 401:
                self._login.expired(token)
                raise ConnectionError(f"{what}: token refused (401)") from exc
            raise

    async def put_stream(
        self, container: str, name: str, body: Iterable[bytes | memoryview], *,
        headers: dict[str, str] | None = None,
    ) -> str:
        """One chunked-encoding PUT of `body`, an iterable consumed IN THE WORKER THREAD.

        Not retried here (a generator cannot be replayed): the caller owns replay, and
        `is_transient()` tells it whether to. An expired token (401) re-authenticates and is
        reported as transient, so the caller replays with the new token. Returns the ETag
        (md5 of the stored bytes).

        The request is written with http.client on a connection of its own rather than through
        swiftclient/requests: urllib3 frames each chunk by formatting it into a new bytes
        object (`b"%x\r\n%b\r\n"`), a copy of every uploaded byte made while holding the GIL,
        which the FUSE thread then waits for. Here each buffer goes to `sendall` as it is."""
        self.requests["PUT"] += 1
        sent = _Sent()
        try:
            etag = await trio.to_thread.run_sync(
                partial(self._authorized, f"PUT {container}/{name}", _chunked_put, container,
                        name, body, headers or {}, self._timeout, self._login.ssl_context,
                        sent),
                limiter=self._streams)
        except Exception as exc:
            self.stats.answered("PUT", exc)
            raise
        finally:
            self.stats.bytes_sent += sent.n
        self.stats.answered("PUT")
        return etag

    def _authorized(self, what: str, request: Callable[..., T], *args: Any) -> T:
        """In a worker thread: `request(storage_url, token, *args)`, one of the store's own
        http.client requests, with the current token (renewed before it expires). A 401 (the
        token expired, or was revoked) forgets the token and is reported as a transient
        failure, so the caller's retry runs with a new one."""
        url, token = self._login.current()
        try:
            return request(url, token, *args)
        except ClientException as exc:
            self.stats.answered("PUT", exc)
            if exc.http_status == 401:
                self._login.expired(token)
                raise ConnectionError(f"{what}: token refused (401)") from exc
            raise

    async def _authenticate(self) -> None:
        """A token and the storage URL (at open), retried while the auth service fails
        transiently."""
        try:
            await retrying("authenticate",
                           partial(trio.to_thread.run_sync, self._login.current,
                                   limiter=self._threads),
                           policy=self.policy, is_transient=is_transient, describe=describe)
        except (ClientException, RequestException, OSError) as exc:
            raise translate(exc, "authenticate", self._login) from exc

    async def head(self, container: str, name: str) -> dict[str, str] | None:
        """Object headers, or None if it does not exist."""
        try:
            return await self._call(f"HEAD {container}/{name}", "HEAD",
                                    lambda c: c.head_object(container, name))
        except ObjectNotFound:
            return None

    async def get(
        self, container: str, name: str, *, offset: int = 0, length: int | None = None,
        query: str | None = None,
    ) -> bytes:
        """The object's bytes [offset, offset+length) (whole object if length is None)."""
        hdrs = {}
        if length is not None:
            if length <= 0:
                return b""
            hdrs["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            hdrs["Range"] = f"bytes={offset}-"

        def call(c: swiftclient.Connection) -> bytes:
            _, body = c.get_object(container, name, headers=hdrs, query_string=query)
            return bytes(body)

        data = await self._call(f"GET {container}/{name}", "GET", call)
        self.stats.bytes_received += len(data)
        return data

    async def read_object(self, container: str, name: str) -> StoredObject:
        """HEAD the name and, for an SLO manifest, GET its stored form (the one home of that
        sequence). A manifest overwritten by a plain object between the HEAD and the GET (ccd
        consolidating) is looked at again; one that still does not parse is Corrupted.
        StoreError on failure."""
        for _ in range(2):
            headers = await self.head(container, name)
            if headers is None or not is_slo(headers):
                return StoredObject(headers)
            body = await self.get(container, name, query="multipart-manifest=get")
            try:
                return StoredObject(headers, tuple(parse_stored_manifest(body)))
            except (ValueError, KeyError, TypeError, AttributeError):
                log.debug("%s/%s changed while being read; reading it again", container, name)
        raise Corrupted(f"manifest {container}/{name} is unreadable")

    def open_read(self, container: str, name: str, offset: int, end: int) -> ObjectReader:
        """Bytes [offset, end) of an object as one streamed GET, read in pieces in order: one
        request for what ranged `get`s would fetch in many (each request costs Swift's proxy
        and object server far more than the bytes). Opened lazily by the first read."""
        return ObjectReader(self, container, name, offset, end)

    async def post(self, container: str, name: str, headers: dict[str, str]) -> None:
        """Replace the object's user metadata (POST replaces ALL X-Object-Meta-*)."""
        await self._call(f"POST {container}/{name}", "POST",
                         lambda c: c.post_object(container, name, headers))

    async def delete(self, container: str, name: str, *, query: str | None = None) -> bool:
        """Delete; False if it was already gone."""
        try:
            await self._call(f"DELETE {container}/{name}", "DELETE",
                             lambda c: c.delete_object(container, name, query_string=query))
        except ObjectNotFound:
            return False
        return True

    async def copy(
        self, src_container: str, src_name: str, dst_container: str, dst_name: str, *,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Server-side copy (PUT with X-Copy-From)."""
        hdrs = {"X-Copy-From": f"/{src_container}/{src_name}", **(headers or {})}
        await self._call(
            f"COPY {src_container}/{src_name} -> {dst_container}/{dst_name}", "PUT",
            lambda c: c.put_object(dst_container, dst_name, b"", content_length=0, headers=hdrs),
        )

    async def list(self, container: str, *, prefix: str | None = None) -> list[dict[str, Any]]:
        """The whole listing (paged, each page retried on its own). Eventually consistent:
        never infer that an object is absent from a listing alone."""
        out: list[dict[str, Any]] = []
        marker = ""
        limit = self.limits.container_listing_limit
        while True:
            def page(c: swiftclient.Connection, marker: str = marker) -> list[dict[str, Any]]:
                items: list[dict[str, Any]]
                _, items = c.get_container(container, marker=marker, limit=limit, prefix=prefix)
                return items

            items = await self._call(f"GET container {container}", "GET", page)
            out.extend(items)
            if len(items) < limit:
                return out
            marker = items[-1]["name"]


class _Sent:
    """Bytes of a body sent so far (written by the sending thread, read after it ends)."""

    n = 0


def _chunked_put(url: str, token: str, container: str, name: str,
                 body: Iterable[bytes | memoryview], headers: dict[str, str],
                 timeout: float, context: ssl.SSLContext, sent: _Sent) -> str:
    """PUT `body` with chunked transfer encoding (blocking; see SwiftStore.put_stream)."""
    conn, target = _http_connection(url, container, name, timeout, context)
    try:
        conn.putrequest("PUT", target, skip_accept_encoding=True)
        conn.putheader("X-Auth-Token", token)
        conn.putheader("Transfer-Encoding", "chunked")
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        for part in body:
            if len(part):
                conn.send(b"%x\r\n" % len(part))
                conn.send(part)
                conn.send(b"\r\n")
                sent.n += len(part)
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        content = resp.read()
        if not 200 <= resp.status < 300:
            raise ClientException(
                f"Object PUT failed: {url}/{container}/{name} {resp.status} "
                f"{resp.reason}", http_status=resp.status, http_reason=resp.reason,
                http_response_content=content[:200])
        return resp.getheader("Etag", "")
    finally:
        conn.close()


class ObjectReader:
    """A sequential read of [offset, end) of one object over one streamed GET.

    `readinto(buf)` fills a buffer with the next bytes, received straight into it (no
    intermediate copies: like `put_stream`, the request is made with http.client on a
    connection of its own); `read(n)` does the same into a new buffer. The GET is sent by
    the first read; a transient failure (dropped connection, timeout, 5xx, expired token)
    re-opens the GET at the current position under the store's retry policy, whose deadline
    restarts after progress. Blocking reads run in the store's streaming threads, so they
    never take a slot from short requests. `close()` abandons the rest of the response.
    """

    def __init__(self, store: SwiftStore, container: str, name: str, offset: int,
                 end: int) -> None:
        self.store = store
        self.container = container
        self.name = name
        self.pos = offset
        self.end = end
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._read_at_failure = -1

    @property
    def what(self) -> str:
        return f"GET {self.container}/{self.name} from {self.pos}"

    async def read(self, n: int) -> bytearray:
        """The next min(n, what is left) bytes, in a new buffer."""
        buf = bytearray(max(0, min(n, self.end - self.pos)))
        await self.readinto(memoryview(buf))
        return buf

    async def readinto(self, buf: memoryview) -> int:
        """Fill `buf` with the next bytes (fewer only at the end: returns how many)."""
        target = min(self.pos + len(buf), self.end)
        if target <= self.pos:
            return 0
        start = self.pos
        buf = buf[:target - start]  # what arrived is kept across a re-opened GET

        def progressed() -> bool:
            moved = self.pos != self._read_at_failure
            self._read_at_failure = self.pos
            return moved

        try:
            await retrying(self.what, partial(self._read_into, buf, start),
                           policy=self.store.policy, is_transient=is_transient,
                           describe=describe, progressed=progressed,
                           on_retry=self.store.count_retry)
        except (ClientException, *_TRANSPORT_ERRORS) as exc:
            self.store.stats.failures += 1
            raise translate(exc, self.what) from exc
        return len(buf)

    async def _read_into(self, buf: memoryview, start: int) -> None:
        if self._resp is None:
            await self._open()
        resp = self._resp
        assert resp is not None
        try:
            while (got := self.pos - start) < len(buf):
                n = await trio.to_thread.run_sync(resp.readinto, buf[got:],
                                                  limiter=self.store._streams)
                if not n:
                    raise ConnectionError(f"{self.what}: the response ended early")
                self.pos += n
                self.store.stats.bytes_received += n
        except BaseException:
            self.close()  # a broken stream is never reused; the retry opens a new GET
            raise
        if self.pos == self.end:
            self.close()

    async def _open(self) -> None:
        store = self.store
        store.requests["GET"] += 1
        try:
            self._conn, self._resp = await trio.to_thread.run_sync(
                partial(store._authorized, self.what, _ranged_get, self.container, self.name,
                        self.pos, self.end, store._timeout, store._login.ssl_context),
                limiter=store._streams)
        except Exception as exc:
            store.stats.answered("GET", exc)
            raise
        store.stats.answered("GET")

    def close(self) -> None:
        """Abandon the stream (its connection is closed)."""
        conn, self._conn, self._resp = self._conn, None, None
        if conn is not None:
            conn.close()


def _ranged_get(url: str, token: str, container: str, name: str, start: int, end: int,
                timeout: float, context: ssl.SSLContext
                ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send GET with Range [start, end) and return the connection and the response, whose
    body is still to be read (blocking)."""
    conn, target = _http_connection(url, container, name, timeout, context)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.putheader("X-Auth-Token", token)
        conn.putheader("Range", f"bytes={start}-{end - 1}")
        conn.endheaders()
        resp = conn.getresponse()
        if resp.status not in (200, 206):
            content = resp.read(200)
            raise ClientException(
                f"Object GET failed: {url}/{container}/{name} {resp.status} {resp.reason}",
                http_status=resp.status, http_reason=resp.reason,
                http_response_content=content)
        if resp.status == 200 and start:
            raise Rejected(f"GET {container}/{name}: Swift ignored the Range header", 200)
        return conn, resp
    except BaseException:
        conn.close()
        raise


def _http_connection(url: str, container: str, name: str, timeout: float,
                     context: ssl.SSLContext) -> tuple[http.client.HTTPConnection, str]:
    """A new connection to the storage URL's host (https: verified as `context` says), and
    the request target of the object."""
    parsed = urllib.parse.urlsplit(url)
    target = f"{parsed.path}/{urllib.parse.quote(container)}/{urllib.parse.quote(name)}"
    if parsed.scheme == "https":
        return http.client.HTTPSConnection(parsed.hostname or "", parsed.port, timeout=timeout,
                                           context=context), target
    return http.client.HTTPConnection(parsed.hostname or "", parsed.port,
                                      timeout=timeout), target
