"""The `ccd` command line (placeholder)."""

import sys


def main() -> int:
    print("ccd: not implemented yet", file=sys.stderr)
    return 2
