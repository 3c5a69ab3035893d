"""An output folder belongs to one run: a lock file, taken atomically, naming who holds it.

The lock is ``FOLDER/.detectres.lock``, created with ``O_CREAT | O_EXCL`` (only one process can
create it) and holding the owner's pid, host, start time and command. A second run on the folder
stops with one line naming the holder. A lock whose process is gone (same host, no such pid) is
taken over with a warning; a lock from another host cannot be checked and is left to the user.
Under ``torchrun`` rank 0 takes it and tells the other ranks the outcome, so all stop together.
"""
from __future__ import annotations

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


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def read_holder(path: str, attempts: int = 10) -> dict | None:
    """The lock's content; None when it stays unreadable (a writer that died between create and write)."""
    for _ in range(attempts):
        try:
            with open(path) as f:
                holder = json.load(f)
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                return holder
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return None


class RunLock:
    """``with RunLock(folder):`` holds ``folder`` for this process (see the module docstring)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.held = False

    def describe(self, holder: dict) -> str:
        return (f"{self.folder} is in use by another run: pid {holder['pid']} on {holder.get('host')} since "
                f"{holder.get('started')} ({holder.get('command', '?')}); wait for it, choose another "
                f"runtime.output_dir, or delete {self.path} if that run is gone")

    def try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
        return True

    def acquire(self) -> None:
        """Take the folder or raise :class:`OutputFolderLocked`; then remove unfinished temporary files."""
        os.makedirs(self.folder, exist_ok=True)
        for _ in range(3):
            if self.try_create():
                self.held = True
                remove_stale_temp_files(self.folder)
                return
            holder = read_holder(self.path)
            if holder is not None and (holder.get("host") != socket.gethostname() or process_alive(holder["pid"])):
                raise OutputFolderLocked(self.describe(holder))
            gone = f"pid {holder['pid']} is not running" if holder else "it is unreadable"
            logger.warning("taking over the stale lock of %s (%s)", self.folder, gone)
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass  # another run took it over first; the next create decides
        raise OutputFolderLocked(self.describe(read_holder(self.path) or {"pid": "?"}))

    def release(self) -> None:
        if self.held and (read_holder(self.path, attempts=1) or {}).get("pid") == os.getpid():
            os.remove(self.path)
        self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RankZeroLock:
    """:class:`RunLock` taken by rank 0 only; every rank raises the same error when it is refused."""

    def __init__(self, folder: str):
        self.lock = RunLock(folder) if is_main_process() else None

    def __enter__(self) -> "RankZeroLock":
        error = None
        if self.lock is not None:
            try:
                self.lock.acquire()
            except OutputFolderLocked as e:
                error = str(e)
        error = broadcast_object(error)
        if error is not None:
            raise OutputFolderLocked(error)
        return self

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock.release()
