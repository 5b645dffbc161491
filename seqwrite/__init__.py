"""seqwrite: the streaming writer, and the only package that talks to Swift.

`SwiftStore` (store.py) is the async facade over python-swiftclient; `Writer` (writer.py)
streams a file into `.tmp` segments and publishes it under the blake3 name of its content;
`Layout` (layout.py) says where everything lives (docs/LAYOUT.md); `stream_spans` (spans.py)
reads byte ranges of objects back in order (ccd's settle).
"""

from seqwrite.auth import Auth, KeystoneAuth, SwiftAuth, Tls
from seqwrite.errors import (
    AlreadyExists,
    AuthFailed,
    CertificateError,
    Corrupted,
    ObjectNotFound,
    Rejected,
    SpoolError,
    StoreError,
    StoreUnavailable,
    TooLarge,
    WriterAborted,
)
from seqwrite.layout import Layout, ManifestEntry
from seqwrite.retry import RetryPolicy
from seqwrite.segment import StoredSegment
from seqwrite.spans import Span, stream_spans
from seqwrite.store import Limits, ObjectReader, SwiftStore
from seqwrite.writer import EMPTY_HASH, PublishMode, StoredContent, Writer, WriterSettings

__all__ = [
    "EMPTY_HASH", "AlreadyExists", "Auth", "AuthFailed", "CertificateError", "Corrupted",
    "KeystoneAuth", "Layout", "Limits",
    "ManifestEntry", "ObjectNotFound", "ObjectReader", "PublishMode", "Rejected", "RetryPolicy",
    "Span", "SpoolError", "StoreError",
    "StoreUnavailable", "StoredContent", "StoredSegment", "SwiftAuth", "SwiftStore", "Tls",
    "TooLarge", "Writer", "WriterAborted", "WriterSettings", "stream_spans",
]
