"""dialect.py - every difference between the SQL that SQLite and PostgreSQL accept, in one place.

sqlfsn writes its SQL once, in the spelling both engines share (``INSERT ... RETURNING``,
``ON CONFLICT ... DO UPDATE SET x = excluded.x``, ``WITH RECURSIVE``, partial indexes, CASTs
to BIGINT) with ``?`` and ``:name`` placeholders. What remains different is small and listed
here:

=========================  ==================================  =================================
what                       SQLite                              PostgreSQL
=========================  ==================================  =================================
placeholders               ``?``, ``:name``                    ``%s``, ``%(name)s`` (translated)
byte strings               ``BLOB``, ``x'2e'``                 ``BYTEA``, ``'\\x2e'::bytea``
integers                   ``INTEGER`` (always 64-bit)         ``BIGINT``
row ids, never reused      ``INTEGER PRIMARY KEY               ``BIGINT GENERATED ALWAYS AS
                           AUTOINCREMENT``                     IDENTITY PRIMARY KEY``
typed columns              ``STRICT`` tables                   (always typed)
"64 lowercase hex"         ``length(c) = 64 AND NOT c GLOB     ``c ~ '^[0-9a-f]{64}$'``
                           '*[^0-9a-f]*'``
substring test             ``instr(c, s) = 0``                 ``position(s in c) = 0``
write transaction          ``BEGIN IMMEDIATE`` (the one        ``BEGIN ISOLATION LEVEL ...``
                           writer lock)                        (chosen per operation, core.py)
row locks                  none (the writer lock covers all)   ``SELECT ... FOR UPDATE``
``RETURNING``              the same                            the same
inode id just inserted     ``last_insert_rowid()``             ``currval('inode_id_seq')``
reading a result           at once (before the COMMIT)         with the COMMIT (``fetch_later``)
rename lock                none (the writer lock covers all)   ``pg_advisory_xact_lock``
schema version             ``PRAGMA user_version`` + meta      meta only
the clock (mounts)         ``julianday('now')`` (one host)     ``clock_timestamp()`` (the
                                                               server's: hosts may disagree)
change notifications       none (one mount)                    triggers + ``NOTIFY``
connection settings        PRAGMAs (sqlite.py)                 libpq URL (postgres.py)
=========================  ==================================  =================================
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# A placeholder: '?' or ':name' (not '::type', a PostgreSQL cast).
_PLACEHOLDER = re.compile(r"\?|(?<![:\w]):([A-Za-z_]\w*)")


@dataclass(frozen=True, slots=True)
class Dialect:
    """The SQL spelling of one engine: schema substitutions and query translation."""

    name: str  # "sqlite" or "postgresql"
    blob: str
    int: str
    row_id: str
    table_options: str
    for_update: str  # appended to a SELECT to lock the rows it reads
    last_inode: str  # the id of this connection's last INSERT INTO inode, in the next INSERT
    now_ns: str  # the database's clock, integer ns since the epoch (mount heartbeats)

    @property
    def is_postgres(self) -> bool:
        return self.name == "postgresql"

    def hex64(self, col: str) -> str:
        """SQL condition: ``col`` is 64 lowercase hex digits (a blake3 hash)."""
        if self.is_postgres:
            return f"{col} ~ '^[0-9a-f]{{64}}$'"
        return f"length({col}) = 64 AND NOT {col} GLOB '*[^0-9a-f]*'"

    def bytes_literal(self, value: bytes) -> str:
        """A literal of ``value`` as a byte string (BLOB / BYTEA)."""
        if self.is_postgres:
            return f"'\\x{value.hex()}'::bytea"
        return f"x'{value.hex()}'"

    def lacks(self, col: str, literal: str) -> str:
        """SQL condition: ``col`` does not contain ``literal`` (an SQL literal)."""
        if self.is_postgres:
            return f"position({literal} in {col}) = 0"
        return f"instr({col}, {literal}) = 0"

    def sql(self, query: str) -> str:
        """``query`` with its ``?`` / ``:name`` placeholders in this engine's style."""
        return _translate(query) if self.is_postgres else query


@functools.lru_cache(maxsize=512)
def _translate(query: str) -> str:
    """SQLite placeholders to psycopg's: ``?`` -> ``%s``, ``:name`` -> ``%(name)s``; a
    literal ``%`` is doubled (psycopg reads ``%`` as a placeholder). String literals are kept."""

    def one(m: re.Match[str]) -> str:
        return "%s" if m.group(0) == "?" else f"%({m.group(1)})s"

    parts = re.split(r"('[^']*')", query.replace("%", "%%"))  # odd parts: string literals
    return "".join(p if i % 2 else _PLACEHOLDER.sub(one, p) for i, p in enumerate(parts))


SQLITE = Dialect(
    name="sqlite",
    blob="BLOB",
    int="INTEGER",
    row_id="INTEGER PRIMARY KEY AUTOINCREMENT",
    table_options=" STRICT",
    for_update="",  # BEGIN IMMEDIATE already excludes every other writer
    last_inode="last_insert_rowid()",  # evaluated before the next INSERT's own row
    now_ns="CAST((julianday('now') - 2440587.5) * 86400000000000.0 AS INTEGER)",  # ms steps
)

POSTGRES = Dialect(
    name="postgresql",
    blob="BYTEA",
    int="BIGINT",
    row_id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    table_options="",
    for_update=" FOR UPDATE",
    last_inode="currval('inode_id_seq')",  # not lastval(): the dentry's id comes first
    now_ns="CAST(extract(epoch FROM clock_timestamp()) * 1000000000 AS BIGINT)",
)
