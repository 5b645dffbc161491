"""Free loopback ports for development services."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from devtools.errors import ServiceError


def port_in_use(port: int) -> bool:
    """True if 127.0.0.1:port is taken. Binds WITHOUT SO_REUSEPORT (Swift's sockets have it, so
    a bind that also set it would succeed next to a running Swift), then tries to connect."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def find_free_port_range(count: int, low: int = 20000, high: int = 40000) -> int:
    """A random base port B in [low, high) with B..B+count-1 all free, preferring ports outside
    the kernel's ephemeral range (where a client's outgoing connection could grab them)."""
    try:
        eph_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        eph_low = high
    top = min(high, eph_low) - count if min(high, eph_low) - count > low + 100 else high - count
    for _ in range(200):
        base = random.randrange(low, top)
        if not any(port_in_use(base + i) for i in range(count)):
            return base
    raise ServiceError(f"no {count} consecutive free ports found in {low}-{high}")
