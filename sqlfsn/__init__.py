"""sqlfsn - the SQL filesystem namespace of cloudfs.

Synchronous: directories, names, inode attributes, the content maps of regular files, the
registry of stored content objects (the fence against the garbage collector) and upload
leases, in one SQLite file (stdlib sqlite3; the embedded default, one host) or one PostgreSQL
database (psycopg 3; any number of hosts), shared by the mounts and ccd. The schema, with the
meaning of every table and column, is in ``sqlfsn/schema.py``; the SQL differences of the two
engines are in ``sqlfsn/dialect.py``; how concurrent transactions keep the invariants is in
``sqlfsn/core.py``.

    from sqlfsn import Namespace, ROOT_INODE, errors
    ns = Namespace.open("/var/lib/cloudfs/ns.db", create=True)
    ns = Namespace.open("postgresql://cloudfs@db.example:5432/cloudfs", create=True)
    attr = ns.mkdir(ROOT_INODE, b"docs", 0o755, uid, gid)
"""

from . import errors
from .clone import CloneResult
from .local import MountInfo, mount_holder
from .mounts import MountRecord
from .namespace import Namespace
from .schema import SCHEMA_VERSION
from .types import (
    NAME_MAX,
    ROOT_INODE,
    TARGET_MAX,
    Attr,
    Claim,
    ContentInfo,
    DirEntry,
    DirRow,
    Piece,
    UnsettledFile,
    UploadInfo,
)

__all__ = [
    "NAME_MAX",
    "ROOT_INODE",
    "SCHEMA_VERSION",
    "TARGET_MAX",
    "Attr",
    "Claim",
    "CloneResult",
    "ContentInfo",
    "DirEntry",
    "DirRow",
    "MountInfo",
    "MountRecord",
    "Namespace",
    "Piece",
    "UnsettledFile",
    "UploadInfo",
    "errors",
    "mount_holder",
]
