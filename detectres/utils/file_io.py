"""Files written atomically (temp file + rename), torch files read without unpickling code, and the
temporary files a killed write leaves behind."""
from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import pickle
import tempfile
import zipfile
from typing import IO, Any, Callable

import torch

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".detectres-tmp-"
LEGACY_TEMP = ".tmp-*.pth"  # what older versions named their unfinished checkpoint writes
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """A write failed for lack of space; the message names the file."""


def disk_full_cause(error: BaseException) -> OSError | None:
    """The out-of-space OSError behind ``error`` (torch wraps it in a RuntimeError), if there is one."""
    seen = set()
    while error is not None and id(error) not in seen:  # chains can loop (an error re-raised from its wrapper)
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def reporting_full_disk(path: str):
    """Turn a failed write whose cause is a full disk (torch wraps it in a RuntimeError) into one
    :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except DiskFullError:
        raise  # already names its file
    except BaseException as e:
        if disk_full_cause(e) is not None:
            raise DiskFullError(errno.ENOSPC, f"no space left on device while writing {path}") from None
        raise


_umask: list[int] = []


def file_mode() -> int:
    """The mode a new file gets under the process's umask (what ``open`` and ``torch.save`` give)."""
    if not _umask:
        _umask.append(os.umask(0o022))
        os.umask(_umask[0])
    return 0o666 & ~_umask[0]


def dir_mode() -> int:
    """The mode a new folder gets under the process's umask (what ``os.makedirs`` gives)."""
    file_mode()
    return 0o777 & ~_umask[0]


def temp_file(path: str, suffix: str = "") -> tuple[int, str]:
    """A temporary file beside ``path`` (same folder, so the final rename is atomic); a folder that cannot
    be written is one :class:`PermissionError` naming ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        return tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=directory)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        why = "a read-only file system" if e.errno == errno.EROFS else "not writable"
        raise PermissionError(e.errno, f"cannot write {path}: {directory} is {why}") from None


def atomic_write(path: str, write: Callable[[IO], None], *, binary: bool, suffix: str = "") -> None:
    """Write ``path`` through ``write(file)`` so that a crash leaves either the old file or the new one; a
    failed write leaves no temporary file, a full disk or a read-only folder is reported as such, naming
    ``path``, and the file gets the user's umask."""
    fd, tmp = temp_file(path, suffix)
    with reporting_full_disk(path):
        try:
            with os.fdopen(fd, "wb" if binary else "w") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


def atomic_torch_save(obj: Any, path: str) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), binary=True, suffix=".pth")


def atomic_write_text(text: str, path: str) -> None:
    atomic_write(path, lambda f: f.write(text), binary=False)


def remove_stale_temp_files(directory: str) -> list[str]:
    """Delete the temporary files of writes that never finished (a killed run's); returns their paths.
    Call it only while holding the folder (see :mod:`detectres.utils.run_lock`)."""
    stale = sorted({*glob.glob(os.path.join(directory, TEMP_PREFIX + "*")),
                    *glob.glob(os.path.join(directory, LEGACY_TEMP))})
    for path in stale:
        os.remove(path)
    if stale:
        logger.warning("removed %d unfinished temporary file(s) left in %s by an interrupted write", len(stale),
                       directory)
    return stale


# A weight file may hold at most this many bytes of data per byte on disk (torch.save stores its zip
# entries uncompressed, so a real file is ~1x; a compressed "zip bomb" is refused before it is read).
INFLATION_LIMIT = 4


class UnsafeFileError(ValueError):
    """A weight file that would run code, or inflate far past its size; nothing in it was executed."""


def check_zip_inflation(path: str) -> None:
    """Refuse a zip-format torch file whose entries would unpack to more than :data:`INFLATION_LIMIT` x its size."""
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"cannot load checkpoint {path} (cut short or corrupted?): not a readable zip ({e})") from None
    if unpacked > INFLATION_LIMIT * max(size, 1):
        raise UnsafeFileError(f"refusing to load {path}: its {size} bytes would unpack to {unpacked} "
                              f"(more than {INFLATION_LIMIT}x the file; nothing was read)")


def load_checkpoint(path: str) -> dict[str, Any]:
    """Load a torch file with ``torch.load(weights_only=True)``: tensors and plain containers only, and no
    more data than :data:`INFLATION_LIMIT` x the file's size."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        raise ValueError(f"{path} is not a torch checkpoint: a file torch.save wrote starts with a zip or pickle "
                         f"header, this one with {head!r}")
    if head.startswith(b"PK"):
        check_zip_inflation(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "unsupported" not in text.lower():
            reason = next((ln.strip() for ln in text.splitlines() if ln.strip() and "Weights only load failed"
                           not in ln), type(e).__name__)
            raise ValueError(f"cannot load checkpoint {path} (cut short or corrupted?): {reason[:200]}") from None
        detail = next((line.strip().split(". ")[0] for line in text.splitlines() if "unsupported" in line.lower()),
                      "not tensors and plain containers")
        raise UnsafeFileError(f"refusing to load {path}: it holds Python objects that could run code "
                              f"({detail.removeprefix('WeightsUnpickler error: ')}); nothing was executed") from None
    except Exception as e:
        reason = str(e).split(". ")[0].splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"cannot load checkpoint {path} (cut short or corrupted?): {reason}") from None
