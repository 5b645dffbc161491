"""The write-back journal's records (wiring/journal.py), on real files in a temporary
directory: what replay takes for a record and what it refuses. Pure logic: no mount, no Swift.

A record is `<data> <trailer> <length> <MAGIC>`; replay takes the last trailer whose MAC is
the journal's and whose data matches the blake3 it names."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, replace
from pathlib import Path

import blake3
import pytest
import trio

from wiring.journal import MAGIC, Journal, JournalBusy, JournalFile, Record, _mac


def record_for(data: bytes, seq: int = 1, **changes: object) -> Record:
    base = Record(seq=seq, inode=7, base_version=3, replace_all=True, start=0,
                  hash=blake3.blake3(data).hexdigest(), size=len(data), mtime_ns=123,
                  path="/f")
    return replace(base, **changes)  # type: ignore[arg-type]


def trailer(record: Record, key: bytes) -> bytes:
    """A trailer as the journal writes it (the format is what this test pins down)."""
    body = json.dumps(asdict(record), sort_keys=True)
    raw = json.dumps({"record": body, "mac": _mac(body.encode(), key)}).encode()
    return raw + struct.pack("<Q", len(raw)) + MAGIC


def opened(directory: Path) -> tuple[Journal, list[JournalFile]]:
    journal = Journal(directory)
    return journal, journal.open()


def sealed(directory: Path, *contents: bytes) -> list[Path]:
    """Records written and sealed through the journal itself, one file each; closed."""
    journal, _ = opened(directory)

    async def write() -> list[Path]:
        paths = []
        for data in contents:
            jf = await journal.take()
            Journal.write(jf, data)
            await journal.seal(jf, record_for(data, seq=journal.next_seq()))
            paths.append(jf.path)
        return paths

    paths = trio.run(write)
    journal.close()
    return paths


def key_of(directory: Path) -> bytes:
    return (directory / "key").read_bytes()


def test_sealed_records_replay_in_order(tmp_path):
    sealed(tmp_path, b"first", b"", b"third" * 1000)
    journal, records = opened(tmp_path)
    assert [jf.record.size for jf in records if jf.record] == [5, 0, 5000]
    assert [jf.record.seq for jf in records if jf.record] == [1, 2, 3]
    assert journal.next_seq() == 4  # numbering goes on after the replayed records
    journal.close()


def test_key_is_private_and_kept(tmp_path):
    sealed(tmp_path, b"x")
    key = key_of(tmp_path)
    assert len(key) == 32 and (tmp_path / "key").stat().st_mode & 0o077 == 0
    opened(tmp_path)[0].close()
    assert key_of(tmp_path) == key


def test_an_unsealed_file_is_no_record_and_is_emptied(tmp_path):
    path = tmp_path / "j-00000099"
    path.write_bytes(b"bytes of a session that never closed")
    journal, records = opened(tmp_path)
    assert records == [] and path.stat().st_size == 0
    journal.close()


def test_a_torn_trailer_is_no_record(tmp_path):
    (path,) = sealed(tmp_path, b"data of a close that never returned")
    whole = path.read_bytes()
    for cut in (1, 8, 12, 40):  # inside the magic, the length, the trailer
        path.write_bytes(whole[:-cut])
        journal, records = opened(tmp_path)
        assert records == [], cut
        journal.close()


def test_a_torn_amendment_leaves_the_record_before_it(tmp_path):
    data = b"content"
    (path,) = sealed(tmp_path, data)
    key = key_of(tmp_path)
    amended = trailer(record_for(data, mtime_ns=999), key)
    with open(path, "ab") as f:
        f.write(amended[:-5])  # the amendment's end never reached the disk
    journal, records = opened(tmp_path)
    assert len(records) == 1 and records[0].record.mtime_ns == 123
    assert records[0].written == len(data)
    journal.close()


def test_the_last_valid_trailer_wins(tmp_path):
    data = b"content"
    (path,) = sealed(tmp_path, data)
    key = key_of(tmp_path)
    with open(path, "ab") as f:
        f.write(trailer(record_for(data, mtime_ns=555), key))
        f.write(trailer(record_for(data, mtime_ns=777), key))
    journal, records = opened(tmp_path)
    assert records[0].record.mtime_ns == 777
    journal.close()


def test_a_forged_trailer_in_user_data_is_not_replayed(tmp_path):
    """An application's bytes that end like a record, in a file left unsealed by a crash:
    without the journal's key its MAC is wrong, so it is no record."""
    sealed(tmp_path, b"x")  # makes the key
    victim = b"what the attacker wants committed"
    forged_key = os.urandom(32)
    path = tmp_path / "j-00000050"
    path.write_bytes(victim + trailer(record_for(victim, inode=1), forged_key))
    journal, records = opened(tmp_path)
    assert all(jf.path != path for jf in records)
    assert path.stat().st_size == 0
    journal.close()
    # The same bytes with the journal's own key are a record: the MAC is what refused it.
    path.write_bytes(victim + trailer(record_for(victim, inode=1), key_of(tmp_path)))
    journal, records = opened(tmp_path)
    assert [jf.path for jf in records if jf.record and jf.record.inode == 1] == [path]
    journal.close()


def test_a_trailer_copied_without_its_mac_is_refused(tmp_path):
    """A trailer body changed after it was MACed (e.g. another inode) is refused."""
    data = b"abc"
    sealed(tmp_path, b"x")
    key = key_of(tmp_path)
    good = json.loads(trailer(record_for(data), key)[:-16])
    body = json.loads(good["record"])
    body["inode"] = 1
    raw = json.dumps({"record": json.dumps(body, sort_keys=True), "mac": good["mac"]}).encode()
    path = tmp_path / "j-00000051"
    path.write_bytes(data + raw + struct.pack("<Q", len(raw)) + MAGIC)
    journal, records = opened(tmp_path)
    assert all(jf.path != path for jf in records)
    journal.close()


def test_data_not_matching_its_hash_is_refused(tmp_path):
    (path,) = sealed(tmp_path, b"the data that was sealed")
    raw = bytearray(path.read_bytes())
    raw[0] ^= 1  # the data changed under its trailer (a bad disk)
    path.write_bytes(bytes(raw))
    journal, records = opened(tmp_path)
    assert records == []
    journal.close()


def test_a_record_longer_than_its_file_is_refused(tmp_path):
    sealed(tmp_path, b"x")
    key = key_of(tmp_path)
    path = tmp_path / "j-00000052"
    path.write_bytes(b"short" + trailer(record_for(b"short" * 100), key))
    journal, records = opened(tmp_path)
    assert all(jf.path != path for jf in records)
    journal.close()


def test_a_second_journal_of_the_same_directory_is_busy(tmp_path):
    journal, _ = opened(tmp_path)
    try:
        with pytest.raises(JournalBusy):
            Journal(tmp_path).open()
    finally:
        journal.close()
    opened(tmp_path)[0].close()  # free again once the first is closed


def test_retire_empties_and_reuses(tmp_path):
    (path,) = sealed(tmp_path, b"committed")
    journal, records = opened(tmp_path)
    journal.retire_now(records[0])
    assert path.stat().st_size == 0
    journal.close()
    journal, records = opened(tmp_path)
    assert records == []
    journal.close()
