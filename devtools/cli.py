"""The `cloudfs dev-*` subcommands: start, stop and inspect development services.

`register(subparsers)` adds them to the cloudfs command line (cloudfs/cli.py). Usage errors
(a busy port, other settings already running) print one line and exit 2; a failed start prints
the servers' log tails and exits 1.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools import keystone, postgres, swift
from devtools.errors import ServiceError, UsageError

ST_VARS = ("ST_AUTH", "ST_USER", "ST_KEY")
OS_VARS = ("OS_AUTH_URL", "OS_AUTH_TYPE", "OS_IDENTITY_API_VERSION", "OS_USERNAME", "OS_PASSWORD",
           "OS_PROJECT_NAME", "OS_PROJECT_ID", "OS_USER_DOMAIN_NAME", "OS_PROJECT_DOMAIN_NAME",
           "OS_APPLICATION_CREDENTIAL_ID", "OS_APPLICATION_CREDENTIAL_SECRET", "OS_REGION_NAME",
           "OS_INTERFACE", "OS_CACERT", "OS_STORAGE_URL", "OS_TENANT_NAME", "OS_TENANT_ID")


def _one_line_errors(prog: str, func: Callable[[argparse.Namespace], int]
                     ) -> Callable[[argparse.Namespace], int]:
    """A usage error is one line on stderr and exit status 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except UsageError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2

    return wrapper


def register(subparsers: Any) -> None:
    """Add every development service's subcommand."""
    register_swift(subparsers)
    register_postgres(subparsers)


def register_swift(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dev-swift",
        help="run a real single-node Swift on 127.0.0.1 for development and tests",
        description="Runs a real single-node OpenStack Swift "
        f"(swift=={swift.SWIFT_VERSION}, in a venv of its own created on first use at "
        "$CLOUDFS_SWIFT_VENV or ~/.cache/cloudfs/swift-venv) "
        "as five background processes on 127.0.0.1: proxy PORT, account PORT+1, container "
        "PORT+2, object PORT+3 and a memcached of its own on PORT+4 (the system's memcached "
        "package, not its service). With --auth keystone, a real Keystone v3 on PORT+5 "
        "authenticates instead of tempauth (Swift, Keystone and keystonemiddleware then run from "
        "$CLOUDFS_KEYSTONE_VENV or ~/.cache/cloudfs/swift-venv-ks30). Config, data, logs and "
        "pid files live in DIR.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser(
        "start",
        help="start DIR's Swift, print ST_AUTH/ST_USER/ST_KEY export lines",
        description="Start DIR's Swift and wait until it is healthy, then print "
        '`export ST_AUTH=... ST_USER=... ST_KEY=...` lines for `eval "$(cloudfs dev-swift '
        'start DIR)"`. The user is test:tester (admin), its key is random and kept in DIR, '
        "so data and credentials survive restarts. If DIR's Swift is already running with the "
        "same settings (or if no option is given), prints its lines again and exits 0; with "
        "other settings it exits 2. "
        "A busy port is refused (exit 2). A missing memcached is reported in one line (exit 1). "
        "A failed start prints the server logs' tails, stops everything and exits 1.",
    )
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"proxy port; PORT..PORT+4 (+5 with Keystone) must be free (default: DIR's "
        f"last port, else {swift.DEFAULT_PORT})",
    )
    p.add_argument(
        "--max-file-size",
        type=int,
        metavar="BYTES",
        help="lower Swift's max_file_size for this instance (a bigger PUT gets 413; "
        "keep it >= 64 KiB: an SLO manifest is an object too, ~210 B per segment)",
    )
    p.add_argument(
        "--auth",
        choices=swift.AUTH_MODES,
        default=None,
        help="tempauth (v1, ST_* lines) or keystone: a real Keystone v3 (SQLite) "
        "on PORT+5, the proxy using keystonemiddleware's authtoken + keystoneauth; project "
        "and user cloudfs with an application credential; prints OS_* lines (default: DIR's "
        "last, else tempauth)",
    )
    p.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve the proxy (and Keystone) over https with a certificate of a CA generated "
        "in DIR/tls (prints OS_CACERT; default: DIR's last, else plain http)",
    )
    p.add_argument(
        "--os-credential",
        choices=keystone.CREDENTIAL_KINDS,
        default="application",
        help="with Keystone: print the application credential (default) or the user's "
        "password as OS_* lines",
    )
    p.add_argument(
        "--token-expiration",
        type=int,
        metavar="SECONDS",
        help="with Keystone: token lifetime (default 3600; short ones test expiry)",
    )
    p.add_argument(
        "--max-manifest-segments",
        type=int,
        metavar="N",
        help="lower the SLO max_manifest_segments (default 1000)",
    )
    p.set_defaults(func=_one_line_errors("cloudfs dev-swift start", _cmd_start))
    _add_dir_action(actions, "dev-swift", "stop", _cmd_stop, help="stop DIR's Swift (idempotent)",
                    description="Stop the servers DIR's pid files name: SIGTERM, SIGKILL "
                    "after ~10 s. Exits 0 also when nothing ran.")
    _add_dir_action(actions, "dev-swift", "status", _cmd_status,
                    help="show DIR's servers (exit 0 if all run, else 3)")


def _add_dir_action(actions: Any, service: str, name: str,
                    func: Callable[[argparse.Namespace], int], **texts: str) -> None:
    """An ACTION of a dev service that takes only DIR."""
    p = actions.add_parser(name, **texts)
    p.add_argument("dir", type=Path, metavar="DIR")
    p.set_defaults(func=_one_line_errors(f"cloudfs {service} {name}", func))


def _cmd_start(args: argparse.Namespace) -> int:
    settings = (args.port, args.max_file_size, args.max_manifest_segments, args.auth,
                args.tls, args.token_expiration)
    dev = swift.running(args.dir)
    if dev is not None and settings == (None,) * len(settings):
        print(f"the dev Swift in {dev.dir} is already running", file=sys.stderr)
    else:
        last = swift.status(args.dir)  # a restart keeps DIR's port, auth and TLS by default
        try:
            dev = swift.start(
                args.dir,
                args.port or last["port"] or swift.DEFAULT_PORT,
                max_file_size=args.max_file_size,
                max_manifest_segments=args.max_manifest_segments,
                auth=args.auth or last["auth"],
                tls_on=last["tls"] if args.tls is None else args.tls,
                token_expiration=args.token_expiration,
            )
        except ServiceError as exc:
            print(f"cloudfs dev-swift start: {exc}", file=sys.stderr)
            return 1
    env = dev.env(args.os_credential)
    # Variables of the other auth (or the other credential) would override or contradict these.
    stale = sorted({*OS_VARS, *ST_VARS} - set(env))
    print(f"unset {' '.join(stale)}")
    for name, value in env.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    swift.stop(args.dir)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    st = swift.status(args.dir)
    mode = f"{st['auth']}{', https' if st['tls'] else ''}"
    print(f"dev Swift in {st['dir']} ({mode}): {'running' if st['running'] else 'not running'}")
    for name, s in st["servers"].items():
        state = f"running, pid {s['pid']}" if s["running"] else "stopped"
        print(f"  {name:<9} port {s['port'] or '-'}  {state}")
    return 0 if st["running"] else 3


def register_postgres(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dev-postgres",
        help="run a real PostgreSQL on 127.0.0.1 for development and tests",
        description="Runs a real PostgreSQL (Debian's package, installed by scripts/install; "
        "never the system's service) as one background server on 127.0.0.1:PORT, for a "
        "filesystem whose namespace lives in PostgreSQL. Cluster, configuration, log and pid "
        "file live in DIR; as root the server runs as the `postgres` user, which must be able "
        "to reach DIR.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser(
        "start",
        help="start DIR's PostgreSQL, print the `database = ...` line for the config file",
        description="Start DIR's PostgreSQL (creating the cluster, role cloudfs with a random "
        "password kept in DIR/etc/pgpass, and database cloudfs on first use) and wait until it "
        "accepts connections, then print the `database = postgresql://...` line to put in the "
        "[cloudfs] section of a config file (the password is not in it: the URL names the "
        "passfile). Data survives restarts. If DIR's PostgreSQL already runs with the same port "
        "(or if no --port is given), prints the line again and exits 0; with another port it "
        "exits 2. A busy port is refused (exit 2). A failed start prints the server log's tail "
        "and exits 1.",
    )
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--port", type=int, default=None,
                   help=f"TCP port on 127.0.0.1 (default: the port of DIR's last start, "
                   f"else {postgres.DEFAULT_PORT})")
    p.set_defaults(func=_one_line_errors("cloudfs dev-postgres start", _cmd_pg_start))
    _add_dir_action(actions, "dev-postgres", "stop", _cmd_pg_stop,
                    help="stop DIR's PostgreSQL (idempotent)",
                    description="Stop the server DIR's pid file names: fast shutdown (clients "
                    "are disconnected, data is kept), SIGKILL after ~10 s. Exits 0 also when "
                    "nothing ran.")
    _add_dir_action(actions, "dev-postgres", "status", _cmd_pg_status,
                    help="show DIR's server (exit 0 if it runs, else 3)")


def _cmd_pg_start(args: argparse.Namespace) -> int:
    dev = postgres.running(args.dir)
    if dev is not None and args.port in (None, dev.port):
        print(f"the dev PostgreSQL in {dev.dir} is already running", file=sys.stderr)
    else:
        try:
            last = postgres.status(args.dir)["port"] or postgres.DEFAULT_PORT
            dev = postgres.start(args.dir, last if args.port is None else args.port)
        except ServiceError as exc:
            print(f"cloudfs dev-postgres start: {exc}", file=sys.stderr)
            return 1
    print(f"database = {dev.url()}")
    return 0


def _cmd_pg_stop(args: argparse.Namespace) -> int:
    postgres.stop(args.dir)
    return 0


def _cmd_pg_status(args: argparse.Namespace) -> int:
    st = postgres.status(args.dir)
    state = f"running, pid {st['pid']}, port {st['port']}" if st["running"] else "not running"
    print(f"dev PostgreSQL in {st['dir']}: {state}")
    return 0 if st["running"] else 3
