"""Log lines: time-stamped on a terminal or in a file, priority-prefixed for the journal,
rotated in a file, private."""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

CODE = """
import logging, sys
from wiring import logs
logs.setup("INFO")
logging.getLogger("x").warning("careful")
logging.getLogger("x").debug("hidden")
"""


def run(env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                          env={**os.environ, **env}, check=True)
    return proc.stderr


def test_time_stamped_off_the_journal() -> None:
    out = run({"JOURNAL_STREAM": ""})
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING x: careful\n", out), out


def test_priority_prefixed_under_the_journal(tmp_path: Path) -> None:
    """With $JOURNAL_STREAM naming stderr, lines carry a syslog priority and no time stamp."""
    err = tmp_path / "err"
    with open(err, "w") as f:
        st = os.fstat(f.fileno())
        subprocess.run([sys.executable, "-c", CODE], stderr=f, check=True,
                       env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert err.read_text() == "<4>WARNING x: careful\n"


def test_log_file_is_rotated_and_private(tmp_path: Path, monkeypatch) -> None:
    from wiring import logs

    monkeypatch.setattr(logs, "LOG_FILE_BYTES", 2000)
    path = tmp_path / "mount.log"
    old_mask = os.umask(0o077)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.to_file(path, "INFO")
        for i in range(200):
            logging.getLogger("t").info("line %d of some length to fill the file", i)
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
            h.close()
        root.handlers[:], root.level = saved[0], saved[1]
        os.umask(old_mask)
    files = sorted(tmp_path.glob("mount.log*"))
    assert len(files) == 1 + logs.LOG_FILE_COPIES
    assert all(f.stat().st_size <= 2200 for f in files)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
