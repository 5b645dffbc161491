"""A fault-injecting HTTP/1.1 proxy of the tests' own, between a client and the dev Swift.

It owns nothing but sockets and threads: one accept thread, one thread per client connection,
each with its own keep-alive upstream connection to Swift. Request bodies (Content-Length or
chunked) and response bodies are relayed as they arrive. The X-Storage-Url of every response
(the v1 auth answer) is rewritten to point at the proxy, so every later request of a client that
authenticated through `proxy.url` goes through the proxy too.

Faults are rules, matched in the order added against (method, request target incl. query):

    proxy.add_rule("PUT", r"/c/seg", "status:503", times=2)     # answer 503, don't forward
    proxy.add_rule(None, r"^/v1/", "drop")                      # close without answering
    proxy.add_rule("PUT", r"/o$", "drop", after_bytes=65536)    # ... after 64 KiB of the body
    proxy.add_rule("GET", r"/o$", "stall", seconds=5)           # wait 5 s, then forward
    proxy.add_rule("GET", r"/o$", "drop_response")              # forward, cut the body midway
    proxy.add_rule("PUT", r"/o$", "corrupt", after_bytes=1000)   # flip a bit of body byte 1000

Each match consumes one of `times` (-1: forever). With "drop" and after_bytes > 0, the head and
the first after_bytes body bytes are forwarded to Swift before both connections are closed, as a
real network failure would leave it. "drop_response" passes after_bytes body bytes if > 0, else
half the body (raw bytes: for a chunked body that includes its framing). "corrupt" forwards
the request with one bit of the body byte at after_bytes flipped (raw position: pick one
inside the data), as a faulty network card or proxy would.
"""

from __future__ import annotations

import contextlib
import http
import re
import select
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

ACTIONS = ("drop", "stall", "drop_response", "corrupt")
MAX_LINE = 65536
COPY_CHUNK = 65536


@dataclass
class Rule:
    method: str | None
    path: re.Pattern[str]
    action: str
    times: int
    after_bytes: int
    seconds: float


class _Closed(Exception):
    """The client or Swift closed its side: end this client connection."""


@dataclass
class _Message:
    """A request or response head: first line and headers (names as sent)."""

    first: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def encode(self) -> bytes:
        lines = [self.first] + [f"{k}: {v}" for k, v in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_head(reader: BinaryIO) -> _Message | None:
    """Reads a message head; None on a clean EOF before its first byte."""
    first = reader.readline(MAX_LINE)
    while first in (b"\r\n", b"\n"):  # tolerate stray CRLFs between keep-alive requests
        first = reader.readline(MAX_LINE)
    if not first:
        return None
    headers = []
    while True:
        line = reader.readline(MAX_LINE)
        if not line:
            raise _Closed("EOF in message head")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return _Message(first.decode("latin-1").rstrip("\r\n"), headers)


def _copy_exact(reader: BinaryIO, write: Writer, n: int) -> None:
    while n > 0:
        data = reader.read(min(n, COPY_CHUNK))
        if not data:
            raise _Closed("EOF in body")
        write(data)
        n -= len(data)


class Writer:
    """Writes to a socket, optionally stopping (and raising _Cut) after `limit` bytes."""

    def __init__(self, sock: socket.socket | None, limit: int | None = None, *,
                 flip_at: int | None = None) -> None:
        self.sock = sock
        self.limit = limit
        self.flip_at = flip_at  # flip the lowest bit of the byte at this position
        self.count = 0

    def __call__(self, data: bytes) -> None:
        if self.flip_at is not None and self.count <= self.flip_at < self.count + len(data):
            i = self.flip_at - self.count
            data = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
        if self.limit is not None and self.count + len(data) >= self.limit:
            data = data[: self.limit - self.count]
            self._send(data)
            self.count += len(data)
            raise _Cut()
        self._send(data)
        self.count += len(data)

    def _send(self, data: bytes) -> None:
        if self.sock is not None and data:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise _Closed(str(exc)) from exc


class _Cut(Exception):
    """A Writer's limit was reached: the fault fires here."""


def _relay_body(reader: BinaryIO, write: Writer, msg: _Message, *, until_eof: bool) -> bool:
    """Relays a message body (raw, framing included). Returns False if it was read to EOF."""
    te = (msg.get("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        while True:
            line = reader.readline(MAX_LINE)
            if not line:
                raise _Closed("EOF in chunk size")
            write(line)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    line = reader.readline(MAX_LINE)
                    if not line:
                        raise _Closed("EOF in trailers")
                    write(line)
                    if line in (b"\r\n", b"\n"):
                        return True
            _copy_exact(reader, write, size + 2)
    length = msg.get("Content-Length")
    if length is not None:
        _copy_exact(reader, write, int(length))
        return True
    if until_eof:
        while data := reader.read1(COPY_CHUNK):  # type: ignore[attr-defined]
            write(data)
        return False
    return True


class _Upstream:
    """One client connection's keep-alive connection to Swift, opened on demand."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.sock: socket.socket | None = None
        self.reader: BinaryIO | None = None

    def connect(self) -> socket.socket:
        if self.sock is not None and select.select([self.sock], [], [], 0)[0]:
            self.close()  # idle but readable: Swift closed it (or sent junk): start afresh
        if self.sock is None:
            self.sock = self.proxy._track(socket.create_connection(self.proxy.target, timeout=300))
            self.reader = self.sock.makefile("rb")
        return self.sock

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.proxy._close(self.sock)
        self.sock = self.reader = None


class FaultProxy:
    """Forwards HTTP/1.1 from 127.0.0.1:<port> to the dev Swift proxy, injecting faults."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.requests: list[tuple[str, str]] = []  # (method, target) seen, in order
        self.connections = 0  # client connections accepted
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.port = 0

    # -------------------------------------------------------------------------- public API

    @property
    def url(self) -> str:
        """The v1 auth URL through the proxy."""
        return f"http://127.0.0.1:{self.port}/auth/v1.0"

    def add_rule(
        self,
        method: str | None,
        path_regex: str,
        action: str,
        *,
        times: int = 1,
        after_bytes: int = 0,
        seconds: float = 0,
    ) -> None:
        """Adds a fault; see the module docstring. `action`: "status:NNN", "drop", "stall",
        "drop_response"."""
        if not (action in ACTIONS or re.fullmatch(r"status:[1-5]\d\d", action)):
            raise ValueError(f"unknown fault action {action!r}")
        if times == 0 or times < -1:
            raise ValueError(f"times must be positive or -1, not {times}")
        rule = Rule(
            method.upper() if method else None,
            re.compile(path_regex),
            action,
            times,
            after_bytes,
            seconds,
        )
        with self._lock:
            self._rules.append(rule)

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def seen(self, method: str | None = None, path_regex: str = "") -> list[tuple[str, str]]:
        """The requests seen so far matching method (None: any) and a regex (re.search)."""
        with self._lock:
            return [
                (m, p)
                for m, p in self.requests
                if (method is None or m == method.upper()) and re.search(path_regex, p)
            ]

    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            socks = list(self._sockets)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in list(self._threads):
            t.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -------------------------------------------------------------------------- internals

    def _spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name="faultproxy")  # type: ignore[arg-type]
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            self._spawn(self._serve_client, client)

    def _match(self, method: str, target: str) -> Rule | None:
        with self._lock:
            self.requests.append((method, target))
            for rule in self._rules:
                if (rule.method is None or rule.method == method) and rule.path.search(target):
                    if rule.times > 0:
                        rule.times -= 1
                        if rule.times == 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _close(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _serve_client(self, client: socket.socket) -> None:
        self._track(client)
        reader = client.makefile("rb")
        up = _Upstream(self)
        try:
            while not self._stopping.is_set():
                if not self._one_exchange(client, reader, up):
                    break
        except (_Closed, _Cut, OSError, ValueError):
            pass
        finally:
            reader.close()
            up.close()
            self._close(client)

    def _one_exchange(self, client: socket.socket, reader: BinaryIO, up: _Upstream) -> bool:
        """Handles one request; returns whether the client connection stays open."""
        req = _read_head(reader)
        if req is None:
            return False
        method, target, version = (req.first.split(" ", 2) + ["", ""])[:3]
        rule = self._match(method, target)
        expect = (req.get("Expect") or "").lower() == "100-continue"
        keep = version == "HTTP/1.1" and (req.get("Connection") or "").lower() != "close"
        action = rule.action if rule else "forward"

        if action == "stall":
            assert rule is not None
            if self._stopping.wait(rule.seconds):
                return False
            action = "forward"
        if action.startswith("status:"):
            if not expect:
                _relay_body(reader, Writer(None), req, until_eof=False)
            code = int(action.split(":", 1)[1])
            self._answer(client, code, keep and not expect)
            return keep and not expect
        if action == "drop":
            assert rule is not None
            if rule.after_bytes > 0:
                upstream = up.connect()
                upstream.sendall(self._forward_head(req).encode())
                with contextlib.suppress(_Cut):
                    _relay_body(reader, Writer(upstream, rule.after_bytes), req, until_eof=False)
            return False

        # Forward the request. We answer "100 Continue" ourselves and don't pass Expect on.
        if expect:
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        upstream = up.connect()
        try:
            upstream.sendall(self._forward_head(req).encode())
        except OSError:  # a kept-alive upstream connection Swift closed meanwhile
            up.close()
            upstream = up.connect()
            upstream.sendall(self._forward_head(req).encode())
        flip = rule.after_bytes if rule is not None and action == "corrupt" else None
        _relay_body(reader, Writer(upstream, flip_at=flip), req, until_eof=False)

        up_reader = up.reader
        assert up_reader is not None
        resp = _read_head(up_reader)
        while resp is not None and resp.first.split(" ", 2)[1:2] == ["100"]:
            resp = _read_head(up_reader)  # interim answers: we already said 100
        if resp is None:
            raise _Closed("Swift closed the connection without answering")
        self._rewrite_storage_url(resp)
        status = int(resp.first.split(" ", 2)[1])
        no_body = method == "HEAD" or status in (204, 304) or status < 200
        limit = None
        if action == "drop_response":
            assert rule is not None
            length = int(resp.get("Content-Length") or 0)
            limit = rule.after_bytes or max(length // 2, 1)
        client.sendall(resp.encode())
        if action == "drop_response":
            with contextlib.suppress(_Cut):
                if not no_body:
                    _relay_body(up_reader, Writer(client, limit), resp, until_eof=True)
            return False
        complete = True
        if not no_body:
            complete = _relay_body(up_reader, Writer(client), resp, until_eof=True)
        if not complete or (resp.get("Connection") or "").lower() == "close":
            up.close()
            return False
        return keep

    def _forward_head(self, req: _Message) -> _Message:
        headers = [(k, v) for k, v in req.headers if k.lower() != "expect"]
        return _Message(req.first, headers)

    def _rewrite_storage_url(self, resp: _Message) -> None:
        for i, (k, v) in enumerate(resp.headers):
            if k.lower() == "x-storage-url":
                parts = urllib.parse.urlsplit(v)
                new = parts._replace(netloc=f"127.0.0.1:{self.port}")
                resp.headers[i] = (k, urllib.parse.urlunsplit(new))

    def _answer(self, client: socket.socket, code: int, keep: bool) -> None:
        try:
            reason = http.HTTPStatus(code).phrase
        except ValueError:
            reason = "Injected"
        body = f"fault proxy: injected {code}\n".encode()
        head = (
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nX-Fault-Proxy: injected\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        )
        client.sendall(head.encode() + body)
