"""The `cloudfs` command line: one parser, one subcommand module each.

Each subcommand module exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int` as the default. Errors the user can fix are `SetupError`s (cloudfs's
`UsageError` among them): they print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cloudfs import commands, copycmd, tune
from cloudfs.fsck import command as fsck
from devtools import cli as devcli
from wiring import logs
from wiring.errors import SetupError

log = logging.getLogger(__name__)

SUBCOMMANDS = (commands, copycmd, tune, fsck, devcli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudfs",
        description="cloudfs: a FUSE filesystem storing content in OpenStack Swift "
        "(content-addressed) and the namespace in SQL.",
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log verbosity (default: log_level of the config file, or INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


# Options mount(8) and mount.fuse3 pass that mean nothing to a FUSE mount of ours (the mount
# point's own flags and fstab's bookkeeping).
_MOUNT_ONLY_OPTIONS = {"rw", "defaults", "auto", "noauto", "user", "nouser", "users", "_netdev",
                       "nofail", "dev", "suid", "exec", "async", "relatime", "strictatime"}


def helper_argv(argv: Sequence[str], subcommands: Sequence[str]) -> list[str] | None:
    """The `mount` arguments for the mount helper's form, `cloudfs CONFIG MOUNTPOINT [-o
    OPTIONS]` (what `mount -t fuse.cloudfs CONFIG MOUNTPOINT` and fstab lines run through
    mount.fuse3), or None for the ordinary command line."""
    if len(argv) < 2 or argv[0] in subcommands or argv[0].startswith("-"):
        return None
    config, mountpoint, rest = argv[0], argv[1], list(argv[2:])
    options: list[str] = []
    while rest:
        arg = rest.pop(0)
        if arg == "-o" and rest:
            options += rest.pop(0).split(",")
        elif arg.startswith("-o"):
            options += arg[2:].split(",")
        else:
            return None  # not the helper's form: let the parser say what is wrong
    kept = [o for o in options if o and o not in _MOUNT_ONLY_OPTIONS
            and not o.startswith(("x-", "comment="))]
    return ["mount", "--config", config, mountpoint, *(["-o", ",".join(kept)] if kept else [])]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args_list = copycmd.reflink_argv(list(sys.argv[1:] if argv is None else argv))
    subcommands = list(_subcommand_names(parser))
    args = parser.parse_args(helper_argv(args_list, subcommands) or args_list)
    logs.setup(args.log_level or "INFO")
    try:
        return int(args.func(args) or 0)
    except SetupError as exc:
        print(f"cloudfs {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _subcommand_names(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


if __name__ == "__main__":
    sys.exit(main())
