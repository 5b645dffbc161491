"""Where things live in Swift: container and object names, metadata headers, manifests.

Pure functions, no I/O. docs/LAYOUT.md is the prose version of this module; keep them in step.

- `<base>`                 holds temporary segments `.tmp/<upload-id>/<seq>` of writes.
- `<base>.cas.<prefix>`    holds CAS objects named by the 64-hex blake3 of their bytes; the
                           prefix is the first `shard_digits` hex digits of the name, so CAS
                           objects spread over 16**shard_digits containers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

HASH_RE = re.compile(r"[0-9a-f]{64}")  # a CAS name: the 64 lowercase hex digits of a blake3
TMP_PREFIX = ".tmp/"
# X-Object-Meta-Bigfile on a temp segment: the whole-file hash it belongs to (the "tag").
TAG_BIGFILE = "X-Object-Meta-Bigfile"
# X-Object-Meta-Blake3: the object's own blake3 (on tagged segments and CAS objects).
META_BLAKE3 = "X-Object-Meta-Blake3"
# X-Object-Meta-Seq: the segment's position in its file (on tagged segments).
META_SEQ = "X-Object-Meta-Seq"
# X-Object-Meta-Retired-At: set by ccd on a tagged segment no manifest names any more (unix
# time); the segment is deleted once that is older than the retire grace.
META_RETIRED_AT = "X-Object-Meta-Retired-At"


# Keys of sqlfsn's meta table that name a filesystem's layout (written by `cloudfs mkfs`).
META_CONTAINER = "container"
META_SHARD_DIGITS = "shard_digits"


def layout_from_meta(get_meta: Callable[[str], str | None]) -> Layout:
    """The Layout recorded in a namespace's meta table; ValueError if it has none."""
    container, digits = get_meta(META_CONTAINER), get_meta(META_SHARD_DIGITS)
    if not container or digits is None:
        raise ValueError("the namespace database has no container settings: run `cloudfs mkfs`")
    return Layout(container, int(digits))


def is_digest(name: str) -> bool:
    return bool(HASH_RE.fullmatch(name))


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name` in a HEAD/GET answer, whatever the case of its key."""
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def is_slo(headers: Mapping[str, str]) -> bool:
    """Whether HEAD/GET headers are those of an SLO manifest."""
    return any(k.lower() == "x-static-large-object" and str(v).lower() == "true"
               for k, v in headers.items())


@dataclass(frozen=True, slots=True)
class Layout:
    """Names of one filesystem's containers and objects."""

    base: str
    shard_digits: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.shard_digits <= 3:
            raise ValueError("shard_digits must be between 0 and 3")
        if not self.base or "/" in self.base or len(self.base) > 200:
            raise ValueError(f"invalid container base name {self.base!r}")

    @property
    def tmp_container(self) -> str:
        return self.base

    def cas_container(self, digest: str) -> str:
        if self.shard_digits == 0:
            return f"{self.base}.cas"
        return f"{self.base}.cas.{digest[: self.shard_digits]}"

    def cas_containers(self) -> list[str]:
        if self.shard_digits == 0:
            return [f"{self.base}.cas"]
        width = self.shard_digits
        return [f"{self.base}.cas.{i:0{width}x}" for i in range(16**width)]

    def all_containers(self) -> list[str]:
        return [self.tmp_container, *self.cas_containers()]

    def cas_path(self, digest: str) -> tuple[str, str]:
        """(container, object) of the CAS object named `digest`."""
        return self.cas_container(digest), digest

    def tmp_name(self, upload_id: str, seq: int) -> str:
        return f"{TMP_PREFIX}{upload_id}/{seq:06d}"

    @staticmethod
    def upload_of(tmp_name: str) -> str | None:
        """The upload id a temp segment name belongs to (None if not a temp name)."""
        if not tmp_name.startswith(TMP_PREFIX):
            return None
        rest = tmp_name[len(TMP_PREFIX) :]
        upload, sep, _ = rest.partition("/")
        return upload if sep else None


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One segment of an SLO manifest: `/container/object`, its md5 ETag and size."""

    container: str
    name: str
    etag: str
    size: int

    @property
    def path(self) -> str:
        return f"/{self.container}/{self.name}"


def manifest_json(entries: list[ManifestEntry]) -> bytes:
    """The body of `PUT ?multipart-manifest=put` for these segments, in order."""
    return json.dumps(
        [{"path": e.path, "etag": e.etag, "size_bytes": e.size} for e in entries]
    ).encode()


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What a name holds now: nothing (`headers` None), a plain object, or an SLO manifest with
    its `entries` (Swift's stored form, as `GET ?multipart-manifest=get` returns it)."""

    headers: dict[str, str] | None
    entries: tuple[ManifestEntry, ...] = ()

    @property
    def exists(self) -> bool:
        return self.headers is not None

    @property
    def is_manifest(self) -> bool:
        return self.headers is not None and is_slo(self.headers)

    def names_in(self, container: str) -> set[str]:
        """The objects of `container` the manifest names."""
        return {e.name for e in self.entries if e.container == container}


def parse_stored_manifest(body: bytes) -> list[ManifestEntry]:
    """Parse `GET ?multipart-manifest=get` (Swift's stored form: name/hash/bytes)."""
    out = []
    for item in json.loads(body):
        container, _, name = item["name"].lstrip("/").partition("/")
        out.append(ManifestEntry(container, name, item["hash"], int(item["bytes"])))
    return out
