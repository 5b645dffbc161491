"""The path logic of `cloudfs cp --reflink` / `cloudfs snapshot` (cloudfs/copycmd.py), with the
mount table replaced: which mount a path is on, relative paths, and the refusals that need two
filesystems (a mount test cannot cheaply have two cloudfs mounts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudfs import copycmd
from cloudfs.errors import UsageError
from wiring import control


@pytest.fixture
def two_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/a and tmp/b play two cloudfs mounts (devices 0:1, 0:2)."""
    for name in ("a", "b"):
        (tmp_path / name / "dir").mkdir(parents=True)
        (tmp_path / name / "dir" / "f").write_bytes(b"x")

    def mount_of(path: str) -> tuple[str, str] | None:
        for n, name in enumerate(("a", "b"), 1):
            point = str(tmp_path / name)
            if path == point or path.startswith(point + "/"):
                return point, f"0:{n}"
        return None

    monkeypatch.setattr(control, "mount_of", mount_of)
    return tmp_path


def test_relative_paths_inside_one_mount(two_mounts: Path) -> None:
    a = two_mounts / "a"
    assert copycmd.plan([str(a / "dir" / "f")], str(a / "g")) == (str(a), ["dir/f"], "g")
    assert copycmd.plan([str(a / "dir" / "f")], str(a / "dir")) == (str(a), ["dir/f"], "dir")
    assert copycmd.plan([str(a / "dir") + "/"], str(a / "h")) == (str(a), ["dir"], "h")
    (a / "ln").symlink_to("dir")
    # A source's own symlink is copied, not followed; a destination symlink to a directory is.
    assert copycmd.plan([str(a / "ln")], str(a / "x")) == (str(a), ["ln"], "x")
    assert copycmd.plan([str(a / "dir" / "f")], str(a / "ln")) == (str(a), ["dir/f"], "dir")


def test_two_filesystems_are_refused_with_exdev(two_mounts: Path) -> None:
    with pytest.raises(UsageError, match="two different filesystems.*cross-device"):
        copycmd.plan([str(two_mounts / "a" / "dir" / "f")], str(two_mounts / "b" / "g"))


def test_outside_and_into_itself_are_refused(two_mounts: Path) -> None:
    with pytest.raises(UsageError, match="not inside a mounted cloudfs"):
        copycmd.plan([str(two_mounts / "a" / "dir" / "f")], str(two_mounts / "g"))
    with pytest.raises(UsageError, match="into itself"):
        copycmd.plan([str(two_mounts / "a" / "dir")], str(two_mounts / "a" / "dir" / "sub"))
    with pytest.raises(UsageError, match="does not exist"):
        copycmd.plan([str(two_mounts / "a" / "dir")], str(two_mounts / "a" / "no" / "sub"))


def test_reflink_spellings() -> None:
    assert copycmd.reflink_argv(["cp", "--reflink=always", "a", "b"]) == \
        ["cp", "--reflink", "a", "b"]
    assert copycmd.reflink_argv(["cp", "--reflink=auto", "a", "b"])[1] == "--reflink"
    assert copycmd.reflink_argv(["status", "--reflink=always"])[1] == "--reflink=always"


def test_progress_shows_the_elapsed_time_of_a_long_copy(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """On a terminal, a copy taking more than half a second shows its elapsed time on one
    line, erased at the end; a quick one shows nothing."""
    import time

    with copycmd._Progress("cloning 1 source(s) to x", True):
        pass
    assert capsys.readouterr().err == ""
    with copycmd._Progress("cloning 1 source(s) to x", True):
        time.sleep(copycmd.PROGRESS_AFTER + 0.5)
    err = capsys.readouterr().err
    assert err.startswith("\rcloning 1 source(s) to x: 0.") and err.endswith("\r\033[K")
    assert "\n" not in err
