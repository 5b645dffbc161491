"""The processes of a development service: spawned from its directory, recognised by it.

A service lives in a directory DIR it owns: `run/<name>.pid` (pid files), `log/<name>.log`
(each process's stdout and stderr, one start mark per start) and whatever configuration it
keeps in `etc/`. A process is DIR's only while its command line names `DIR/etc/` or
`DIR/run/`: a recycled pid is never signalled. Processes can die with the thread that started
them (PR_SET_PDEATHSIG), which is how test sessions never leave servers behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from devtools.errors import ServiceError

log = logging.getLogger(__name__)

START_MARK = "=== cloudfs dev service start"
STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL after this long
LOG_TAIL_LINES = 20
LOG_ROTATE_BYTES = 10 << 20  # a log larger than this at a start is moved to <name>.log.1
PR_SET_PDEATHSIG = 1

# Popen objects of the servers this process started, so stops can reap them (no zombies).
_children: dict[int, subprocess.Popen[bytes]] = {}


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if missing) for the duration of the block."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment minus what would make another venv's python see the project's venv."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra or {})
    return env


def run(cmd: list[Any], *, env: Mapping[str, str] | None = None) -> None:
    """Run a set-up command to completion; ServiceError with its output's tail if it fails."""
    full_env = clean_env({"PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env or {})})
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=full_env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-LOG_TAIL_LINES:])
        raise ServiceError(f"{shlex.join(map(str, cmd))} failed ({proc.returncode}):\n{tail}")


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def pid_file(dir: Path, name: str) -> Path:
    return dir / "run" / f"{name}.pid"


def read_pid(dir: Path, name: str) -> int | None:
    try:
        return int(pid_file(dir, name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def is_running(pid: int, dir: Path) -> bool:
    """True if pid is alive, not a zombie, and one of DIR's processes (never a recycled pid): its
    command line names DIR/etc/ (its configuration) or DIR/run/ (a pid or socket file)."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]  # reaped
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[0] == "Z":
        if child is not None and child.poll() is not None:  # it exited since: reap it now
            del _children[pid]
        return False
    return any(os.fsencode(f"{dir}/{sub}/") in cmdline for sub in ("etc", "run"))


def _preexec(parent: int, prctl: Callable[..., int] | None,
             death_signal: signal.Signals = signal.SIGTERM) -> None:
    """Runs in the child between fork and exec: die with the parent (thread) if asked."""
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)


def spawn(cmd: list[str], dir: Path, name: str, *, die_with_parent: bool,
          env: Mapping[str, str] | None = None,
          user: Callable[[], None] | None = None,
          death_signal: signal.Signals = signal.SIGTERM) -> int:
    """Start `cmd` in the background (own session, stdin closed, output to log/<name>.log),
    write run/<name>.pid and return the pid. `user`, if given, runs in the child before exec
    (e.g. to drop privileges; before the parent-death signal is set, which a change of user
    would clear). `death_signal` is what the process gets when the parent thread dies."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl if die_with_parent else None
    logfile = dir / "log" / f"{name}.log"
    with contextlib.suppress(FileNotFoundError):
        if logfile.stat().st_size > LOG_ROTATE_BYTES:  # one older copy; logs never grow unbounded
            logfile.replace(logfile.with_name(logfile.name + ".1"))
    parent = os.getpid()

    def preexec() -> None:
        if user is not None:
            user()
        _preexec(parent, prctl, death_signal)

    with open(logfile, "ab") as out:
        out.write(f"{START_MARK} {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=dir,
            env=clean_env(env),
            start_new_session=True,  # a Ctrl-C in the starting terminal must not reach them
            preexec_fn=preexec,
        )
    _children[proc.pid] = proc
    pid_file(dir, name).write_text(f"{proc.pid}\n")
    return proc.pid


def log_tails(dir: Path, names: Iterable[str]) -> str:
    """The last lines each process logged since its latest start."""
    parts = []
    for name in names:
        try:
            lines = (dir / "log" / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            continue
        marks = [i for i, line in enumerate(lines) if line.startswith(START_MARK)]
        lines = lines[marks[-1] + 1 :] if marks else lines
        body = "\n".join(lines[-LOG_TAIL_LINES:]) or "(empty)"
        parts.append(f"--- {dir / 'log' / f'{name}.log'} (last lines) ---\n{body}")
    return "\n".join(parts)


def stop_dir(dir: Path, stop_locked: Callable[[Path], None]) -> None:
    """Run `stop_locked(DIR)` under DIR's lock (run/lock); nothing if DIR has no run/."""
    dir = Path(dir).absolute()
    if not (dir / "run").is_dir():
        return
    with locked(dir / "run" / "lock"):
        stop_locked(dir)


def stop_all(dir: Path, names: Iterable[str], what: str, *,
             first: signal.Signals = signal.SIGTERM) -> None:
    """Stop the named processes of DIR (`first`, SIGKILL after STOP_TIMEOUT) and remove their
    pid files. Only pids that are still DIR's are signalled. Call it under DIR's lock."""
    names = list(names)
    pids = [p for n in names if (p := read_pid(dir, n)) is not None and is_running(p, dir)]
    ours = [p for p in pids if p in _children]
    for sig, timeout in ((first, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = [p for p in pids if is_running(p, dir)]
        if not pids:
            break
        log.warning("%s pids %s ignored %s", what, pids, sig.name)
    # A process that is exiting has an empty command line (is_running says no) before it is a
    # zombie: wait for our own children to be gone for good (reaped), not only unrecognisable.
    for pid in ours:
        child = _children.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5.0)
    for name in names:
        pid_file(dir, name).unlink(missing_ok=True)
