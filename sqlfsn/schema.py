"""schema.py - the on-disk schema of the namespace database, and its creation.

This module is the canonical reference for the schema. Each CREATE statement below is preceded
by a comment that explains what the table *means*; each column carries a comment giving its
meaning, sentinel values and invariants. The column comments sit inside the CREATE TABLE
text, so SQLite keeps them: ``sqlite3 <db> .schema`` shows this specification too. Read these
comments before writing or changing any code that queries these tables.

Invariants that span rows (nlink counts, sizes as sums of pieces, reachability) cannot be
CHECK constraints; they are written here and verified by ``check.py``.

SQLite spells no octal, so file types appear in decimal: S_IFMT = 61440, S_IFSOCK = 49152,
S_IFLNK = 40960, S_IFREG = 32768, S_IFBLK = 24576, S_IFDIR = 16384, S_IFCHR = 8192,
S_IFIFO = 4096.
"""

from __future__ import annotations

import logging
import sqlite3
import stat
import uuid

from .types import ROOT_INODE

log = logging.getLogger(__name__)

#: Version of the schema below; stored in ``PRAGMA user_version`` and meta 'schema_version'.
#: Bump it on any change to the statements, and teach ``Namespace.open`` to upgrade. (Changes
#: to the comments alone need no bump: SQLite ignores them; an older database's ``.schema``
#: then shows the older wording.)
SCHEMA_VERSION = 1

# A content hash: 64 lowercase hex digits (blake3-256), also the object's name in the store.
_HEX64 = "length({col}) = 64 AND NOT {col} GLOB '*[^0-9a-f]*'"

SCHEMA: tuple[str, ...] = (
    """
    -- Filesystem parameters, written at creation or by the mount. Keys in use:
    -- 'schema_version' (= PRAGMA user_version), 'fs_uuid' (random, fixed at creation),
    -- 'created_ns' (creation time). Other components may add their own keys.
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,  -- parameter name
        value TEXT NOT NULL      -- parameter value, always text (numbers in decimal)
    ) STRICT
    """,
    """
    -- One row per inode: directories, regular files, symlinks, devices, FIFOs and sockets.
    -- An inode with nlink = 0 is an *orphan*: it has no name any more, but the mount may
    -- still have it open; the row (and its content) stays until the mount calls
    -- drop_if_orphan() when the kernel forgets it, or purge_orphans() at mount start.
    -- Invariants (check.py): a non-directory's nlink is its number of dentry rows; a live
    -- directory has exactly one dentry (none for the root) and nlink = 2 + its number of
    -- subdirectories; a regular file's size is the sum of its file_piece lengths.
    CREATE TABLE inode (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,  -- inode number; 1 is the root
                                                     -- directory; never reused
        mode     INTEGER NOT NULL                    -- full st_mode: file type | permissions
                 CHECK ((mode & 61440) IN (49152, 40960, 32768, 24576, 16384, 8192, 4096)),
        uid      INTEGER NOT NULL CHECK (uid >= 0),  -- owner
        gid      INTEGER NOT NULL CHECK (gid >= 0),  -- group
        rdev     INTEGER NOT NULL DEFAULT 0,         -- device number of a character or block
                                                     -- device, 0 for every other type
        nlink    INTEGER NOT NULL CHECK (nlink >= 0),  -- link count; 0 = orphan (see above)
        size     INTEGER NOT NULL CHECK (size >= 0),   -- st_size: bytes of a regular file,
                                                       -- length(target) of a symlink, else 0
        atime_ns INTEGER NOT NULL,  -- access time, integer nanoseconds since the epoch
        mtime_ns INTEGER NOT NULL,  -- modification time (content / directory entries)
        ctime_ns INTEGER NOT NULL,  -- status change time (any change to this row or names)
        version  INTEGER NOT NULL DEFAULT 0 CHECK (version >= 0),
                    -- content generation of a regular file, 0 at creation, incremented each
                    -- time its bytes or size change; writers compare-and-swap on it. A
                    -- settle (ccd: the pieces replaced by one piece holding the same
                    -- bytes) keeps it, as it keeps the times: the bytes are the same
        target   BLOB,  -- symlink target; NULL exactly when the inode is not a symlink
        CHECK ((target IS NOT NULL) = ((mode & 61440) = 40960)),
        CHECK (target IS NULL OR size = length(target))
    ) STRICT
    """,
    f"""
    -- The names: entry `name` of directory `parent` is inode `inode`. Hard links are
    -- several rows with the same `inode`; a directory has exactly one row (the root none).
    -- Deleting an inode that still has names or children fails (no cascade), on purpose.
    CREATE TABLE dentry (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,  -- readdir offset: increasing, never reused,
                                                   -- kept by rename, so offsets stay valid
        parent INTEGER NOT NULL REFERENCES inode (id),  -- directory holding the entry
        name   BLOB NOT NULL  -- 1..255 bytes, no b'/' or NUL, never b'.' or b'..'
               CHECK (length(name) BETWEEN 1 AND 255 AND name NOT IN (x'2e', x'2e2e')
                      AND instr(name, x'2f') = 0 AND instr(name, x'00') = 0),
        inode  INTEGER NOT NULL REFERENCES inode (id)  -- the named inode, never the root
               CHECK (inode != {ROOT_INODE} AND inode != parent),
        UNIQUE (parent, name)
    ) STRICT
    """,
    "CREATE INDEX dentry_by_parent ON dentry (parent, id)  -- readdir in offset order",
    "CREATE INDEX dentry_by_inode ON dentry (inode)  -- names of an inode; walking up",
    "CREATE INDEX inode_orphans ON inode (id) WHERE nlink = 0  -- purge_orphans",
    f"""
    -- The content registry: the stored objects this filesystem created or relies on, and
    -- the fence between writers (dedup) and the garbage collector. A writer *claims* a hash
    -- (state 'live', claimed_ns = now) BEFORE uploading it or relying on an existing object.
    -- The collector deletes an object only after *condemning* it: one transaction proving
    -- it is referenced by no file_piece and by no live claim newer than a grace period,
    -- and setting state 'deleting'. A claim refuses a 'deleting' row, so a writer never
    -- relies on an object being deleted. When the object is gone the row is deleted.
    CREATE TABLE content (
        hash        TEXT PRIMARY KEY CHECK ({_HEX64.format(col="hash")}),
                        -- blake3 of the whole content, 64 lowercase hex = the object's name
        size        INTEGER NOT NULL CHECK (size >= 0),
                        -- bytes of the content; 0 also for rows the collector created to
                        -- condemn an object it found without a row (claimed_ns = 0)
        state       TEXT NOT NULL CHECK (state IN ('live', 'deleting')),
                        -- 'live': may be used; 'deleting': condemned, being deleted
        claimed_ns  INTEGER NOT NULL,  -- time of the last claim; 0 = never claimed
        deleting_ns INTEGER,  -- time of the last condemnation; NULL exactly when 'live'
        CHECK ((state = 'deleting') = (deleting_ns IS NOT NULL))
    ) STRICT
    """,
    "CREATE INDEX content_live_claims ON content (claimed_ns) WHERE state = 'live'",
    f"""
    -- The segments of a content stored as several objects: the content is the concatenation
    -- of its segments in seq order, each segment an object named by its own blake3. A content
    -- stored as a single object has no rows here. A segment is kept (never condemned) while
    -- any content listing it is kept. Invariant: sum(size) = content.size.
    CREATE TABLE content_segment (
        content_hash TEXT NOT NULL REFERENCES content (hash) ON DELETE CASCADE,
        seq          INTEGER NOT NULL CHECK (seq >= 0),  -- position, 0, 1, 2, ... no gaps
        segment_hash TEXT NOT NULL CHECK ({_HEX64.format(col="segment_hash")}),
                        -- blake3 of the segment's bytes = its object name
        size         INTEGER NOT NULL CHECK (size > 0),  -- bytes in the segment
        PRIMARY KEY (content_hash, seq)
    ) STRICT
    """,
    "CREATE INDEX content_segment_by_segment ON content_segment (segment_hash)",
    f"""
    -- The content of each regular file: the concatenation of its pieces in idx order. An
    -- empty file has no pieces. Invariant: sum(length) = inode.size. Rewriting a file
    -- replaces all its rows (set_content); truncation trims or appends rows, no data moves;
    -- appends and random writes add rows. ccd *settles* a file of several pieces (or holes,
    -- or part of a content) into the one row (H, 0, size) of the same bytes (settle).
    CREATE TABLE file_piece (
        inode      INTEGER NOT NULL REFERENCES inode (id) ON DELETE CASCADE,
        idx        INTEGER NOT NULL CHECK (idx >= 0),  -- position, 0, 1, 2, ... no gaps
        hash       TEXT REFERENCES content (hash)  -- the content object holding the bytes;
                   CHECK (hash IS NULL OR ({_HEX64.format(col="hash")})),
                                               -- NULL = a hole (length zero bytes)
        obj_offset INTEGER NOT NULL CHECK (obj_offset >= 0),
                       -- first byte of the piece within the object; 0 for a hole
        length     INTEGER NOT NULL CHECK (length > 0),  -- bytes; obj_offset + length
                                                         -- <= content.size
        PRIMARY KEY (inode, idx),
        CHECK (hash IS NOT NULL OR obj_offset = 0)
    ) STRICT
    """,
    "CREATE INDEX file_piece_by_hash ON file_piece (hash)  -- references of a content",
    """
    -- Leases of uploads in progress. The segment objects of upload `id` live in the store
    -- under '.tmp/<id>/'; the cleanup must not delete them while the heartbeat is recent.
    -- The row is deleted when the write commits (set_content) or aborts (upload_end).
    CREATE TABLE upload (
        id           TEXT PRIMARY KEY CHECK (length(id) > 0 AND instr(id, '/') = 0),
                         -- upload id chosen by the writer, unique (e.g. a uuid4 in hex)
        started_ns   INTEGER NOT NULL,  -- when the lease was taken
        heartbeat_ns INTEGER NOT NULL   -- last proof of life of the writer
    ) STRICT
    """,
    """
    -- Extended attributes of inodes.
    CREATE TABLE xattr (
        inode INTEGER NOT NULL REFERENCES inode (id) ON DELETE CASCADE,
        name  BLOB NOT NULL  -- 1..255 bytes, no NUL (e.g. b'user.comment')
              CHECK (length(name) BETWEEN 1 AND 255 AND instr(name, x'00') = 0),
        value BLOB NOT NULL,  -- the value, possibly empty
        PRIMARY KEY (inode, name)
    ) STRICT
    """,
)


def create_tables(
    conn: sqlite3.Connection, *, now_ns: int, root_uid: int = 0, root_gid: int = 0
) -> None:
    """Create the schema, the root directory and the meta rows on an empty database.

    Runs inside the caller's transaction (no implicit COMMIT, unlike ``executescript``).
    The root is inode 1, mode S_IFDIR | 0o755, nlink 2, owned by root_uid:root_gid.
    """
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO inode (id, mode, uid, gid, rdev, nlink, size, atime_ns, mtime_ns,"
        " ctime_ns, version, target) VALUES (?, ?, ?, ?, 0, 2, 0, ?, ?, ?, 0, NULL)",
        (ROOT_INODE, stat.S_IFDIR | 0o755, root_uid, root_gid, now_ns, now_ns, now_ns),
    )
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [
            ("schema_version", str(SCHEMA_VERSION)),
            ("fs_uuid", str(uuid.uuid4())),
            ("created_ns", str(now_ns)),
        ],
    )
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    log.info("created namespace schema version %d", SCHEMA_VERSION)
