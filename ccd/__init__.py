"""ccd: the CAS consolidation daemon and the cleanup / garbage collector of cloudfs.

Consolidation (`ccd run`, `ccd once`; consolidate.py) moves the bytes of published files from
their temporary segments `.tmp/<upload>/<seq>` to CAS objects named by each segment's own
hash, rewrites the files' manifests to point there and retires the temporary segments.
Settling (settle.py, the first step of a pass) re-stores a file made of many pieces (appends,
random writes, truncations) as one whole-file CAS content and swaps it in with a
compare-and-swap. Cleanup (`ccd cleanup`; cleanup.py and gc.py) deletes what interrupted
writes left behind, stale upload leases, and CAS objects no file references any more.
docs/LAYOUT.md is the contract with the writer and the mount; docs/OPERATIONS.md says how to
run all this.

ccd talks to Swift only through `seqwrite.SwiftStore` and to the namespace only through
`sqlfsn.Namespace` (short synchronous calls, never a transaction across a Swift request).
"""

from ccd.cleanup import cleanup_pass
from ccd.consolidate import CRASH_POINTS, Consolidator
from ccd.context import CcdError, Context, open_context
from ccd.crash import CrashInjected
from ccd.report import Report
from ccd.settle import Settler

__all__ = [
    "CRASH_POINTS", "CcdError", "Consolidator", "Context", "CrashInjected", "Report",
    "Settler", "cleanup_pass", "open_context",
]
