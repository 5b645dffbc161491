"""Runs inside the dev Swift's own venv: builds the rings and starts one Swift server.

This file owns the two things that must happen in the Swift venv's interpreter, never in the
project's: building the rings with `swift.common.ring.RingBuilder` (one process, ~0.6 s instead of
nine `swift-ring-builder` calls) and starting a server with a per-instance swift.conf.

Swift reads its constraints (`max_file_size`, ...) and storage policies from
`swift.common.utils.SWIFT_CONF_FILE` (default /etc/swift/swift.conf) when the modules are
*imported*, and the per-server `swift_dir` only re-reads [swift-hash]. So we point
`SWIFT_CONF_FILE` at the instance's own swift.conf before importing any server module.

It is executed by path (`<swift-venv>/bin/python swift_runner.py ...`), so it imports nothing
from the project, only the standard library plus swift. Its directory holds no module named
like a package it imports (Python puts the script's directory first on sys.path).

    swift_runner.py rings ETC_DIR PORT
    swift_runner.py serve {proxy,account,container,object} CONF_FILE
"""

from __future__ import annotations

import importlib
import os
import sys

# Server name -> (module with main(), offset from the proxy port). Kept in step with swift.py.
SERVERS = {
    "proxy": ("swift.proxy.server", 0),
    "account": ("swift.account.server", 1),
    "container": ("swift.container.server", 2),
    "object": ("swift.obj.server", 3),
}
PART_POWER = 10


def build_rings(etc_dir: str, port: int) -> None:
    """Writes account/container/object .ring.gz: 1 replica, one device per ring, sdb1."""
    from swift.common.ring import RingBuilder

    for name in ("account", "container", "object"):
        builder = RingBuilder(PART_POWER, 1, 1)
        builder.add_dev(
            {
                "id": 0,
                "region": 1,
                "zone": 1,
                "ip": "127.0.0.1",
                "port": port + SERVERS[name][1],
                "device": "sdb1",
                "weight": 100,
                "meta": "",
            }
        )
        builder.rebalance()
        tmp = os.path.join(etc_dir, f".{name}.ring.gz.tmp")
        builder.get_ring().save(tmp)
        os.replace(tmp, os.path.join(etc_dir, f"{name}.ring.gz"))


def serve(server: str, conf_file: str) -> None:
    """Runs one server in this process (workers = 0), logging to stderr (`-v`)."""
    from swift.common import utils

    utils.SWIFT_CONF_FILE = os.path.join(os.path.dirname(conf_file), "swift.conf")
    # Nothing should have imported these yet; reload them anyway in case a future swift does.
    if "swift.common.constraints" in sys.modules:
        sys.modules["swift.common.constraints"].reload_constraints()
    if "swift.common.storage_policy" in sys.modules:
        sys.modules["swift.common.storage_policy"].reload_storage_policies()
    module = importlib.import_module(SERVERS[server][0])
    sys.argv = [f"swift-{server}-server", conf_file, "-v"]
    module.main()


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "rings":
        build_rings(argv[1], int(argv[2]))
    elif len(argv) == 3 and argv[0] == "serve" and argv[1] in SERVERS:
        serve(argv[1], argv[2])
    else:
        sys.exit(f"usage: {__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
