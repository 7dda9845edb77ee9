"""One writer per run folder.

``train`` holds ``<run>/.lock`` for the whole life of the run. The lock is an advisory
``flock`` on that file, so the kernel releases it on any exit (normal end, exception,
SIGKILL, crash); the file itself only says who holds it (process id, host, start time and
command) so that a refused second process can name the holder. A lock file left by a dead
process is therefore never in the way: nothing holds its ``flock``.

``flock`` works on local file systems and on NFS (Linux maps it to NFS byte-range locks);
on a file system without locking the run starts with a warning instead of refusing.
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import socket
import sys
from pathlib import Path

__all__ = ["RunFolderBusyError", "RunLock", "LOCK_NAME"]

_log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunFolderBusyError(RuntimeError):
    """Another live process holds the run folder's lock."""


def _holder_text(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process (its lock file is unreadable)"
    return (f"process {info.get('pid', '?')} on host {info.get('host', '?')} (started "
            f"{info.get('started', '?')}: {info.get('command', '?')})")


class RunLock:
    """``with RunLock(run_dir):`` - hold the run folder for the block; see the module docstring.

    Raises :class:`RunFolderBusyError` naming the holder when another live process has it.
    """

    def __init__(self, run_dir: str | Path, log=None):
        self.path = Path(run_dir) / LOCK_NAME
        self.log = log or _log.warning
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # Windows: no flock
            self.log(f"warning: cannot lock {self.path.parent} on this platform; make sure no other "
                     f"process trains into it")
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunFolderBusyError(
                    f"run folder {self.path.parent} is in use by {_holder_text(self.path)}. Only one "
                    f"process may write a run folder: wait for that run to end (or stop it), or "
                    f"choose another --out"
                ) from None
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                self.log(f"warning: the file system of {self.path.parent} does not support locks; make "
                         f"sure no other process trains into it")
                return self
            raise
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:500],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            # Closing the descriptor drops the flock; the file stays (removing it would race
            # with a process that opened it and is about to lock it).
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
