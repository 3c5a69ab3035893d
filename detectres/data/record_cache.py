"""A cache of checked records, addressed by content: a large annotation file is parsed and checked once,
and later runs (and every torchrun rank) read the result.

The file is ``<cache>/records/<key>.npz`` (``$DETECTRES_CACHE``, else ``~/.cache/detectres``), where the
key is the SHA-256 of the annotation file's bytes together with everything else the checks depend on
(how messages name the file, the image folder, the policies) and :data:`CACHE_FORMAT`. It holds the box
columns as arrays and the image entries, categories and problems as JSON, and is read with
``allow_pickle=False``. The first process to take the lock of the file as it is now (its stat note)
checks it while the others wait, without reading it, then read the result. A cache that cannot be
written (read-only, full disk) or read (damaged) is reported and the records are checked again: it never
fails a run. Image files are still looked at every run, and records that needed one read (a size taken
from the file) are not cached.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Callable

import msgspec
import numpy as np

from detectres.config.paths import cache_dir
from detectres.data.checks import FIX, DataReport, Problem
from detectres.data.records import BoxTable, Records
from detectres.utils.file_io import atomic_write

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
MIN_BYTES = 8 << 20  # smaller files are read and checked in well under a second
KEEP = 16            # record files kept; the least recently used beyond that are removed
COLUMNS = tuple(f.name for f in dataclasses.fields(BoxTable))


def record_cache_dir() -> str:
    return os.path.join(cache_dir(), "records")


def cache_key(raw: bytes, key: list) -> str:
    digest = hashlib.sha256(raw)
    digest.update(json.dumps([CACHE_FORMAT, key], sort_keys=True, default=str).encode())
    return digest.hexdigest()


def cached_records(ann_file: str, *, key: list, report: DataReport, check: Callable[[list[bytes]], Records]) -> Records:
    """``check([the file's bytes])`` (which fills ``report`` and may empty the list to free the bytes
    early), or what it returned for the same content before. An unchanged file (same size, modification
    time and inode) is found by its stat index without reading it again."""
    size = os.path.getsize(ann_file)
    if size < MIN_BYTES:
        return check([read_bytes(ann_file)])
    index = stat_index_path(ann_file, key)
    records = cached_by_stat(index, report)
    if records is not None:
        return records
    with key_lock(index):  # named by the file as it is now: the others wait without reading it
        records = cached_by_stat(index, report)  # another process built it while this one waited
        if records is not None:
            return records
        release_freed_memory()  # what composing the config and building the other split left behind
        raw = [read_bytes(ann_file)]
        path = os.path.join(record_cache_dir(), f"{cache_key(raw[0], key)}.npz")
        records = read_cache(path, report)  # the same content, seen before under another name or time
        if records is None:
            records = check(raw)
            release_freed_memory()
            if not read_image_files(report):
                write_cache(path, records, report)
        write_stat_index(index, path)
    return records


def cached_by_stat(index: str, report: DataReport) -> Records | None:
    path = read_stat_index(index)
    return read_cache(path, report) if path else None


def read_image_files(report: DataReport) -> bool:
    """Whether checking read image files (an entry without a size had it read from its file): the result
    then depends on the files as they are now, so it is not cached."""
    return any(p.kind == "bad_image_entry" and p.action == FIX for p in report.problems)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def stat_index_path(ann_file: str, key: list) -> str:
    """Where the content key of ``ann_file`` as it is now (path, size, modification time, inode) is noted."""
    st = os.stat(ann_file)
    name = json.dumps([os.path.realpath(ann_file), st.st_size, st.st_mtime_ns, st.st_ino, CACHE_FORMAT, key],
                      sort_keys=True, default=str)
    return os.path.join(record_cache_dir(), "by-stat", hashlib.sha256(name.encode()).hexdigest())


def read_stat_index(index: str) -> str | None:
    try:
        with open(index, encoding="utf-8") as f:
            name = f.read().strip()
    except OSError:
        return None
    return os.path.join(record_cache_dir(), name) if name.endswith(".npz") and "/" not in name else None


def write_stat_index(index: str, path: str) -> None:
    if os.path.exists(path):
        try:
            atomic_write(index, lambda f: f.write(os.path.basename(path)), binary=False)
        except OSError:
            pass  # only the next run's shortcut is lost


def release_freed_memory() -> None:
    """Give the heap that a large parse freed back to the system (glibc's ``malloc_trim``), so the model
    and the batches that follow do not add to it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def key_lock(path: str):
    """An exclusive lock on ``path``'s key, released when the process ends however it ends (no lock
    where the folder cannot be written or ``fcntl`` is missing: each process then checks for itself)."""
    try:
        import fcntl

        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle = open(path + ".lock", "a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (Lustre without -o flock, some NFS and FUSE mounts)
            pass
        yield


def read_cache(path: str, report: DataReport) -> Records | None:
    """The cached records (their problems added to ``report``), or None when there is no usable file."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = msgspec.json.decode(data["meta"].tobytes())
            columns = {k: data[k] if k in data.files else None for k in COLUMNS}
        records = Records(images=meta["images"], boxes=BoxTable(**columns), categories=meta["categories"])
        problems = [Problem(*p) for p in meta["problems"]]
    except Exception as e:  # a damaged or foreign file: check again, and replace it
        logger.warning("record cache %s is unreadable (%s): checking the annotations again", path, e)
        return None
    report.problems.extend(problems)
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: kept by prune()
    logger.info("data: checked records of %s read from the record cache %s", report.name, path)
    return records


def write_cache(path: str, records: Records, report: DataReport) -> None:
    meta = {"images": records.images, "categories": records.categories,
            "problems": [[p.kind, p.where, p.detail, p.action] for p in report.problems]}
    arrays = {k: getattr(records.boxes, k) for k in COLUMNS if getattr(records.boxes, k) is not None}
    try:
        atomic_write(path, lambda f: np.savez(f, meta=np.frombuffer(msgspec.json.encode(meta), np.uint8), **arrays),
                     binary=True, suffix=".npz")
    except OSError as e:
        logger.warning("record cache not written (%s): the next run checks %s again", e, report.name)
        return
    prune(os.path.dirname(path))


def prune(folder: str) -> None:
    """Remove all but the :data:`KEEP` most recently used record files (each edit of a large annotation file
    makes a new one), with their locks."""
    try:
        files = sorted((e for e in os.scandir(folder) if e.name.endswith(".npz") and not e.name.startswith(".")),
                       key=lambda e: e.stat().st_mtime, reverse=True)
    except OSError:
        return
    for entry in files[KEEP:]:
        for name in (entry.path, entry.path + ".lock"):
            with contextlib.suppress(OSError):
                os.remove(name)
    with contextlib.suppress(OSError):
        notes = sorted(os.scandir(os.path.join(folder, "by-stat")), key=lambda e: e.stat().st_mtime, reverse=True)
        for entry in notes[4 * KEEP:]:
            with contextlib.suppress(OSError):
                os.remove(entry.path)
