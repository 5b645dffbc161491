"""The `cloudfs tune` subcommand: settings a filesystem keeps in its namespace (meta table).

`cloudfs tune --config FILE` prints them; `--mount-timeout DURATION` sets the heartbeat
timeout after which a mount is dead (sqlfsn/mounts.py). Running mounts read it again at each
heartbeat, so a change reaches them within one heartbeat (a tenth of the old timeout).

Lowering the timeout a lot at once while mounts are registered would let a mount that still
beats at the old pace look dead to one that already uses the new value; tune therefore
refuses to go below `CRASH_HEARTBEATS` old heartbeats (0.3x) at once while any mount is alive:
lower it in steps.
"""

from __future__ import annotations

import argparse
import re

from cloudfs.commands import add_config_args, config_from
from cloudfs.errors import UsageError
from sqlfsn import Namespace
from sqlfsn.database import describe
from sqlfsn.errors import NamespaceError
from sqlfsn.mounts import CRASH_HEARTBEATS, HEARTBEATS_PER_TIMEOUT, META_MOUNT_TIMEOUT

MIN_MOUNT_TIMEOUT_S = 1.0
MAX_MOUNT_TIMEOUT_S = 86400.0
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|)\s*")


def parse_duration(text: str, option: str) -> float:
    """Seconds from `30`, `30s`, `2.5m`, `1h` (UsageError naming `option` otherwise)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise UsageError(f"{option} {text!r}: not a duration (e.g. 30s, 2m, 1h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def check_mount_timeout(seconds: float, current: float, alive: int) -> None:
    """UsageError unless `seconds` is a timeout the filesystem's mounts can live with."""
    if not MIN_MOUNT_TIMEOUT_S <= seconds <= MAX_MOUNT_TIMEOUT_S:
        raise UsageError(f"--mount-timeout {seconds:g} s: must be between "
                         f"{MIN_MOUNT_TIMEOUT_S:g} s and {MAX_MOUNT_TIMEOUT_S:g} s")
    floor = current * CRASH_HEARTBEATS / HEARTBEATS_PER_TIMEOUT
    if alive and seconds < floor:
        raise UsageError(
            f"--mount-timeout {seconds:g} s: {alive} live mount(s) beat every "
            f"{current / HEARTBEATS_PER_TIMEOUT:g} s until they read the new value; lower it "
            f"in steps (at least {floor:g} s now, then again after a heartbeat)")


def cmd_tune(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    cfg.require("database")
    try:
        ns = Namespace.open(cfg.database)
    except NamespaceError as exc:
        raise UsageError(str(exc)) from None
    with ns:
        current = ns.liveness().timeout_s
        if args.mount_timeout is not None:
            seconds = parse_duration(args.mount_timeout, "--mount-timeout")
            alive = sum(m.alive for m in ns.mounts())
            check_mount_timeout(seconds, current, alive)
            ns.set_meta(META_MOUNT_TIMEOUT, f"{seconds:g}")
            print(f"{describe(str(cfg.database))}: mount timeout {seconds:g} s (was "
                  f"{current:g} s); live mounts use it from their next heartbeat")
        else:
            print(f"mount timeout {current:g} s (heartbeats every "
                  f"{current / HEARTBEATS_PER_TIMEOUT:g} s)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tune", help="show or change settings kept in the namespace",
                       description="Show the settings a filesystem keeps in its namespace, or "
                       "change them (--mount-timeout). Needs only the database; safe beside "
                       "live mounts, which read the mount timeout at each heartbeat.")
    add_config_args(p)
    p.add_argument("--mount-timeout", metavar="DURATION",
                   help="seconds without a heartbeat after which a mount is dead (its write "
                   "leases and open files released), e.g. 30s, 2m (default 30s; at least 1s); "
                   "heartbeats every tenth of it")
    p.set_defaults(func=cmd_tune)
