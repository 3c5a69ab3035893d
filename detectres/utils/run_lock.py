"""An output folder belongs to one run: ``FOLDER/.detectres.lock``, held with ``flock`` for the run's life.

The kernel releases an ``flock`` when its process dies, however it dies (``kill -9``, a crashed node
whose NFS lease expires), so a lock file left behind is never mistaken for a live run: the next run
takes it over with a warning naming the run that left it. A live holder makes a second run stop at
once with one line naming it (pid, host, start time, command: the file's content). Under ``torchrun``
rank 0 holds the folder and tells the other ranks the outcome, so all stop together.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time

from detectres.utils.comm import broadcast_object, is_main_process
from detectres.utils.file_io import remove_stale_temp_files

logger = logging.getLogger(__name__)

LOCK_NAME = ".detectres.lock"


class OutputFolderLocked(FileExistsError):
    """Another run holds the output folder."""


def holder_of(fd: int) -> dict:
    """What the lock file says about its holder ({} when it is empty or unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 65536).decode() or "{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')} "
            f"({holder.get('command', '?')})")


class RunLock:
    """``with RunLock(folder):`` holds ``folder`` for this process (see the module docstring)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd: int | None = None

    def lock_open_file(self) -> int | None:
        """An fd holding the lock on the file now at ``path``; None when the file changed under us."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_of(fd)
            os.close(fd)
            raise OutputFolderLocked(
                f"{self.folder} is in use by another run: {describe(holder)}; wait for it or choose another "
                "runtime.output_dir") from None
        try:
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino  # not unlinked by a finishing holder
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        return fd

    def acquire(self) -> None:
        """Take the folder or raise :class:`OutputFolderLocked`; then remove unfinished temporary files."""
        os.makedirs(self.folder, exist_ok=True)
        fd = None
        while fd is None:
            fd = self.lock_open_file()
        previous = holder_of(fd)
        if previous:
            logger.warning("taking over the lock of %s left by a run that is gone: %s", self.folder, describe(previous))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode())
        os.fsync(fd)
        self.fd = fd
        try:
            remove_stale_temp_files(self.folder)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.remove(self.path)  # while still locked: a waiting opener sees another inode and retries
        except FileNotFoundError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RankZeroLock:
    """:class:`RunLock` taken by rank 0 only; when rank 0 cannot take it (for any reason) every rank
    raises, so none is left waiting."""

    def __init__(self, folder: str):
        self.lock = RunLock(folder) if is_main_process() else None

    def __enter__(self) -> "RankZeroLock":
        error: BaseException | None = None
        if self.lock is not None:
            try:
                self.lock.acquire()
            except Exception as e:  # every rank must learn of it
                error = e
        outcome = broadcast_object(None if error is None else (type(error).__name__, str(error)))
        if error is not None:
            raise error
        if outcome is not None:
            raise OutputFolderLocked(f"rank 0 could not hold the output folder: {outcome[0]}: {outcome[1]}")
        return self

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock.release()
