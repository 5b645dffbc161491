"""schema.py - the on-disk schema of the namespace database, and its creation.

This module is the canonical reference for the schema, for both backends. Each CREATE statement
below is preceded by a comment that explains what the table *means*; each column carries a
comment giving its meaning, sentinel values and invariants. The statements are written once;
the few words SQLite and PostgreSQL spell differently are substitutions from the dialect
(``{blob}``, ``{int}``, ``{row_id}``, ``{strict}``, the hex and substring checks, byte
literals; see dialect.py). The column comments sit inside the CREATE TABLE text, so SQLite keeps
them: ``sqlite3 <db> .schema`` shows this specification too (PostgreSQL drops SQL comments:
read them here). Read these comments before writing or changing any code that queries these
tables.

Invariants that span rows (nlink counts, sizes as sums of pieces, reachability) cannot be
CHECK constraints; they are written here and verified by ``check.py``.

SQL spells no octal, so file types appear in decimal: S_IFMT = 61440, S_IFSOCK = 49152,
S_IFLNK = 40960, S_IFREG = 32768, S_IFBLK = 24576, S_IFDIR = 16384, S_IFCHR = 8192,
S_IFIFO = 4096.
"""

from __future__ import annotations

import logging
import stat
import uuid
from typing import TYPE_CHECKING

from .dialect import Dialect
from .types import ROOT_INODE

if TYPE_CHECKING:
    from .database import Database

log = logging.getLogger(__name__)

#: Version of the schema below; stored in meta 'schema_version' (and, on SQLite, in
#: ``PRAGMA user_version``).
#: Bump it on any change to the statements, and teach ``Namespace.open`` to upgrade. (Changes
#: to the comments alone need no bump: SQLite ignores them; an older database's ``.schema``
#: then shows the older wording.)
SCHEMA_VERSION = 2


# The statements, written once. Substitutions (see statements()): {blob} {int} {row_id}
# {strict}; {hex_X}: "column X is 64 lowercase hex digits"; {dot} {dotdot}: the names b'.' and
# b'..' as byte literals; {no_slash} {no_nul}: "the name has no b'/' / no NUL byte";
# {id_no_slash}: "the upload id has no '/'". Literal braces are doubled.
_TEMPLATE: tuple[str, ...] = (
    """
    -- Filesystem parameters, written at creation or by the mount. Keys in use:
    -- 'schema_version' (= SCHEMA_VERSION; on SQLite also PRAGMA user_version), 'fs_uuid'
    -- (random, fixed at creation), 'created_ns' (creation time). Other components may add
    -- their own keys.
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,  -- parameter name
        value TEXT NOT NULL      -- parameter value, always text (numbers in decimal)
    ){strict}
    """,
    """
    -- One row per inode: directories, regular files, symlinks, devices, FIFOs and sockets.
    -- An inode with nlink = 0 is an *orphan*: it has no name any more, but the mount may
    -- still have it open; the row (and its content) stays until the mount calls
    -- drop_if_orphan() when the kernel forgets it, or purge_orphans() at mount start.
    -- Invariants (check.py): a non-directory's nlink is its number of dentry rows; a live
    -- directory has exactly one dentry (none for the root) and nlink = 2 + its number of
    -- subdirectories; a regular file's size is the sum of its file_piece lengths.
    -- Concurrency (PostgreSQL, see core.py): a directory's entries, an inode's nlink and a
    -- file's content change only while the transaction holds this row's lock.
    CREATE TABLE inode (
        id       {row_id},  -- inode number; 1 is the root directory
                            -- (the first row); increasing, never reused (gaps possible)
        mode     {int} NOT NULL                    -- full st_mode: file type | permissions
                 CHECK ((mode & 61440) IN (49152, 40960, 32768, 24576, 16384, 8192, 4096)),
        uid      {int} NOT NULL CHECK (uid >= 0),  -- owner
        gid      {int} NOT NULL CHECK (gid >= 0),  -- group
        rdev     {int} NOT NULL DEFAULT 0,         -- device number of a character or block
                                                   -- device, 0 for every other type
        nlink    {int} NOT NULL CHECK (nlink >= 0),  -- link count; 0 = orphan (see above)
        size     {int} NOT NULL CHECK (size >= 0),   -- st_size: bytes of a regular file,
                                                     -- length(target) of a symlink, else 0
        atime_ns {int} NOT NULL,  -- access time, integer nanoseconds since the epoch
        mtime_ns {int} NOT NULL,  -- modification time (content / directory entries)
        ctime_ns {int} NOT NULL,  -- status change time (any change to this row or names)
        version  {int} NOT NULL DEFAULT 0 CHECK (version >= 0),
                    -- content generation of a regular file, 0 at creation, incremented each
                    -- time its bytes or size change; writers compare-and-swap on it. A
                    -- settle (ccd: the pieces replaced by one piece holding the same
                    -- bytes) keeps it, as it keeps the times: the bytes are the same
        target   {blob},  -- symlink target; NULL exactly when the inode is not a symlink
        CHECK ((target IS NOT NULL) = ((mode & 61440) = 40960)),
        CHECK (target IS NULL OR size = length(target))
    ){strict}
    """,
    """
    -- The names: entry `name` of directory `parent` is inode `inode`. Hard links are
    -- several rows with the same `inode`; a directory has exactly one row (the root none).
    -- Deleting an inode that still has names or children fails (no cascade), on purpose.
    CREATE TABLE dentry (
        id     {row_id},  -- readdir offset: increasing, never reused, kept by rename, so
                          -- offsets stay valid (gaps possible)
        parent {int} NOT NULL REFERENCES inode (id),  -- directory holding the entry
        name   {blob} NOT NULL  -- 1..255 bytes, no b'/' or NUL, never b'.' or b'..'
               CHECK (length(name) BETWEEN 1 AND 255 AND name NOT IN ({dot}, {dotdot})
                      AND {no_slash} AND {no_nul}),
        inode  {int} NOT NULL REFERENCES inode (id)  -- the named inode, never the root
               CHECK (inode != {root} AND inode != parent),
        UNIQUE (parent, name)
    ){strict}
    """,
    "CREATE INDEX dentry_by_parent ON dentry (parent, id)  -- readdir in offset order",
    "CREATE INDEX dentry_by_inode ON dentry (inode)  -- names of an inode; walking up",
    "CREATE INDEX inode_orphans ON inode (id) WHERE nlink = 0  -- purge_orphans",
    """
    -- The content registry: the stored objects this filesystem created or relies on, and
    -- the fence between writers (dedup) and the garbage collector. A writer *claims* a hash
    -- (state 'live', claimed_ns = now) BEFORE uploading it or relying on an existing object.
    -- The collector deletes an object only after *condemning* it: one transaction proving
    -- it is referenced by no file_piece and by no live claim newer than a grace period,
    -- and setting state 'deleting'. A claim refuses a 'deleting' row, so a writer never
    -- relies on an object being deleted. When the object is gone the row is deleted.
    -- Concurrency (PostgreSQL): every transaction that adds a reference (claim,
    -- set_content, settle) or condemns runs SERIALIZABLE, see core.py.
    CREATE TABLE content (
        hash        TEXT PRIMARY KEY CHECK ({hex_hash}),
                        -- blake3 of the whole content, 64 lowercase hex = the object's name
        size        {int} NOT NULL CHECK (size >= 0),
                        -- bytes of the content; 0 also for rows the collector created to
                        -- condemn an object it found without a row (claimed_ns = 0)
        state       TEXT NOT NULL CHECK (state IN ('live', 'deleting')),
                        -- 'live': may be used; 'deleting': condemned, being deleted
        claimed_ns  {int} NOT NULL,  -- time of the last claim; 0 = never claimed
        deleting_ns {int},  -- time of the last condemnation; NULL exactly when 'live'
        CHECK ((state = 'deleting') = (deleting_ns IS NOT NULL))
    ){strict}
    """,
    "CREATE INDEX content_live_claims ON content (claimed_ns) WHERE state = 'live'",
    """
    -- The segments of a content stored as several objects: the content is the concatenation
    -- of its segments in seq order, each segment an object named by its own blake3. A content
    -- stored as a single object has no rows here. A segment is kept (never condemned) while
    -- any content listing it is kept. Invariant: sum(size) = content.size.
    CREATE TABLE content_segment (
        content_hash TEXT NOT NULL REFERENCES content (hash) ON DELETE CASCADE,
        seq          {int} NOT NULL CHECK (seq >= 0),  -- position, 0, 1, 2, ... no gaps
        segment_hash TEXT NOT NULL CHECK ({hex_segment_hash}),
                        -- blake3 of the segment's bytes = its object name
        size         {int} NOT NULL CHECK (size > 0),  -- bytes in the segment
        PRIMARY KEY (content_hash, seq)
    ){strict}
    """,
    "CREATE INDEX content_segment_by_segment ON content_segment (segment_hash)",
    """
    -- The content of each regular file: the concatenation of its pieces in idx order. An
    -- empty file has no pieces. Invariant: sum(length) = inode.size. Rewriting a file
    -- replaces all its rows (set_content); truncation trims or appends rows, no data moves;
    -- appends and random writes add rows. ccd *settles* a file of several pieces (or holes,
    -- or part of a content) into the one row (H, 0, size) of the same bytes (settle).
    CREATE TABLE file_piece (
        inode      {int} NOT NULL REFERENCES inode (id) ON DELETE CASCADE,
        idx        {int} NOT NULL CHECK (idx >= 0),  -- position, 0, 1, 2, ... no gaps
        hash       TEXT REFERENCES content (hash)  -- the content object holding the bytes;
                   CHECK (hash IS NULL OR ({hex_hash})),
                                               -- NULL = a hole (length zero bytes)
        obj_offset {int} NOT NULL CHECK (obj_offset >= 0),
                       -- first byte of the piece within the object; 0 for a hole
        length     {int} NOT NULL CHECK (length > 0),  -- bytes; obj_offset + length
                                                       -- <= content.size
        PRIMARY KEY (inode, idx),
        CHECK (hash IS NOT NULL OR obj_offset = 0)
    ){strict}
    """,
    "CREATE INDEX file_piece_by_hash ON file_piece (hash)  -- references of a content",
    """
    -- Leases of uploads in progress. The segment objects of upload `id` live in the store
    -- under '.tmp/<id>/'; the cleanup must not delete them while the heartbeat is recent.
    -- The row is deleted when the write commits (set_content) or aborts (upload_end).
    CREATE TABLE upload (
        id           TEXT PRIMARY KEY CHECK (length(id) > 0 AND {id_no_slash}),
                         -- upload id chosen by the writer, unique (e.g. a uuid4 in hex)
        started_ns   {int} NOT NULL,  -- when the lease was taken
        heartbeat_ns {int} NOT NULL   -- last proof of life of the writer
    ){strict}
    """,
    """
    -- Extended attributes of inodes.
    CREATE TABLE xattr (
        inode {int} NOT NULL REFERENCES inode (id) ON DELETE CASCADE,
        name  {blob} NOT NULL  -- 1..255 bytes, no NUL (e.g. b'user.comment')
              CHECK (length(name) BETWEEN 1 AND 255 AND {no_nul}),
        value {blob} NOT NULL,  -- the value, possibly empty
        PRIMARY KEY (inode, name)
    ){strict}
    """,
)


# Added in version 2: the mounts of the filesystem (sqlfsn/mounts.py says how they are used).
_ADDED_IN_2: tuple[str, ...] = (
    """
    -- The mounts serving this filesystem, one row each, registered at mount start
    -- (register_mount) and deleted at a clean unmount. A mount refreshes heartbeat_ns every
    -- few seconds. It is *dead* once its heartbeat is older than the meta 'mount_timeout'
    -- (seconds, default 30), or (PostgreSQL) once its database session ended (the session
    -- advisory lock (MOUNT_LOCK_CLASS, id) is not held) and its heartbeat is a few
    -- heartbeats old. Whoever notices (another mount, ccd cleanup) deletes a dead mount's row:
    -- its holds and its write leases go with it (ON DELETE CASCADE), then the orphans no live
    -- mount holds are deleted. Times are the database server's clock, so hosts need not
    -- agree on the time. SQLite: one mount (the -mount lock), so at most one live row; the
    -- next mount deletes the row of a process that died.
    CREATE TABLE mount (
        id           {row_id},  -- mount id, never reused
        host         TEXT NOT NULL,  -- host name of the mount daemon
        pid          {int} NOT NULL,  -- its process id on that host
        mountpoint   TEXT NOT NULL,  -- absolute mount point on that host
        started_ns   {int} NOT NULL,  -- registration time (server clock)
        heartbeat_ns {int} NOT NULL   -- last proof of life (server clock)
    ){strict}
    """,
    """
    -- Holds: the files a mount has open (one row per file, however many descriptors). An
    -- orphan (nlink 0) is deleted only when no mount holds it (drop_if_orphan,
    -- purge_orphans), so a file unlinked on one host stays readable where it is open.
    -- Recorded only where several mounts can exist (PostgreSQL); an SQLite mount is alone.
    CREATE TABLE mount_open (
        inode {int} NOT NULL REFERENCES inode (id) ON DELETE CASCADE,
        mount {int} NOT NULL REFERENCES mount (id) ON DELETE CASCADE,
        PRIMARY KEY (inode, mount)
    ){strict}
    """,
    "CREATE INDEX mount_open_by_mount ON mount_open (mount)  -- a mount's rows, on its delete",
    """
    -- Write leases: the one mount writing each file (from its first write to the commit or
    -- abort). Another mount's writer gets EBUSY while the lease's mount lives; a dead
    -- mount's leases are released with its row. PostgreSQL only, as holds.
    CREATE TABLE mount_writer (
        inode    {int} PRIMARY KEY REFERENCES inode (id) ON DELETE CASCADE,
        mount    {int} NOT NULL REFERENCES mount (id) ON DELETE CASCADE,
        since_ns {int} NOT NULL  -- when the lease was taken (server clock)
    ){strict}
    """,
    "CREATE INDEX mount_writer_by_mount ON mount_writer (mount)  -- a mount's rows",
)

#: The channel of change notifications (PostgreSQL NOTIFY; sqlfsn/listen.py reads them).
CHANGES_CHANNEL = "cloudfs_changes"

# PostgreSQL only: every change of an inode row or of a name is announced to the other mounts
# on CHANGES_CHANNEL when its transaction commits (NOTIFY; identical payloads of one
# transaction are sent once). Payloads: 'a <inode>' (attributes changed, or the inode was
# deleted), 'c <inode>' (the content changed: a new version), 'e <parent> <hex name>' (the
# name was removed or renamed away). A name added needs no message: no mount caches a name
# that does not exist (negative lookups are not cached).
_POSTGRES_TRIGGERS: tuple[str, ...] = (
    f"""
    CREATE FUNCTION cloudfs_inode_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND NEW.version <> OLD.version THEN
            PERFORM pg_notify('{CHANGES_CHANNEL}', 'c ' || NEW.id);
        ELSE
            PERFORM pg_notify('{CHANGES_CHANNEL}', 'a ' || OLD.id);
        END IF;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER inode_changed AFTER UPDATE OR DELETE ON inode"
    " FOR EACH ROW EXECUTE FUNCTION cloudfs_inode_changed()",
    f"""
    CREATE FUNCTION cloudfs_dentry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{CHANGES_CHANNEL}',
                          'e ' || OLD.parent || ' ' || encode(OLD.name, 'hex'));
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER dentry_changed AFTER UPDATE OR DELETE ON dentry"
    " FOR EACH ROW EXECUTE FUNCTION cloudfs_dentry_changed()",
)


def statements(d: Dialect) -> tuple[str, ...]:
    """The CREATE statements of the schema, spelled for dialect ``d``."""
    words = {
        "blob": d.blob,
        "int": d.int,
        "row_id": d.row_id,
        "strict": d.table_options,
        "root": str(ROOT_INODE),
        "hex_hash": d.hex64("hash"),
        "hex_segment_hash": d.hex64("segment_hash"),
        "dot": d.bytes_literal(b"."),
        "dotdot": d.bytes_literal(b".."),
        "no_slash": d.lacks("name", d.bytes_literal(b"/")),
        "no_nul": d.lacks("name", d.bytes_literal(b"\0")),
        "id_no_slash": d.lacks("id", "'/'"),
    }
    return tuple(t.format(**words) for t in _TEMPLATE + _ADDED_IN_2) + _engine_only(d)


def _engine_only(d: Dialect) -> tuple[str, ...]:
    return _POSTGRES_TRIGGERS if d.is_postgres else ()


def upgrade_statements(d: Dialect, version: int) -> tuple[str, ...]:
    """The statements that bring a schema of ``version`` to SCHEMA_VERSION (run in one
    transaction, then the stored version is set); ValueError if there is no way."""
    if version != 1:
        raise ValueError(f"no upgrade from schema version {version}")
    words = {"int": d.int, "row_id": d.row_id, "strict": d.table_options}
    return tuple(t.format(**words) for t in _ADDED_IN_2) + _engine_only(d)


def upgrade_tables(db: Database, version: int) -> None:
    """Upgrade the schema from ``version`` inside the caller's transaction; the caller sets
    the version (meta, and SQLite's user_version)."""
    for statement in upgrade_statements(db.dialect, version):
        db.execute_ddl(statement)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
    log.info("upgraded namespace schema from version %d to %d (%s)", version, SCHEMA_VERSION,
             db.dialect.name)


def create_tables(db: Database, *, now_ns: int, root_uid: int = 0, root_gid: int = 0) -> None:
    """Create the schema, the root directory and the meta rows on an empty database.

    Runs inside the caller's transaction (no implicit COMMIT, unlike ``executescript``).
    The root is inode 1 (the first row), mode S_IFDIR | 0o755, nlink 2, owned by
    root_uid:root_gid.
    """
    for statement in statements(db.dialect):
        db.execute_ddl(statement)
    root = db.execute(
        "INSERT INTO inode (mode, uid, gid, rdev, nlink, size, atime_ns, mtime_ns,"
        " ctime_ns, version, target) VALUES (?, ?, ?, 0, 2, 0, ?, ?, ?, 0, NULL) RETURNING id",
        (stat.S_IFDIR | 0o755, root_uid, root_gid, now_ns, now_ns, now_ns),
    ).fetchone()[0]
    if root != ROOT_INODE:
        raise AssertionError(f"the root directory got inode {root}, not {ROOT_INODE}")
    db.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [
            ("schema_version", str(SCHEMA_VERSION)),
            ("fs_uuid", str(uuid.uuid4())),
            ("created_ns", str(now_ns)),
        ],
    )
    log.info("created namespace schema version %d (%s)", SCHEMA_VERSION, db.dialect.name)
