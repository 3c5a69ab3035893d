"""The run's log file as its record: what a tool prints reaches the log file too, and lines meant for the
file alone (the metrics lines a progress bar stands in for on a terminal) can be written there.

The log file is the root logger's ``FileHandler`` (Hydra's ``<job>.log`` in the run's folder); where there
is none (the Python API outside a tool) these do nothing.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys


def file_handlers() -> list[logging.FileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def to_log_file(message: str, name: str = "detectres", level: int = logging.INFO) -> None:
    """Write ``message`` to the log file only (not to the terminal)."""
    handlers = file_handlers()
    if not handlers:
        return
    record = logging.LogRecord(name, level, __file__, 0, message, None, None)
    for handler in handlers:
        if record.levelno >= handler.level:
            handler.handle(record)


def shows_progress_bars() -> bool:
    """Whether progress bars are drawn: stderr is a terminal. Elsewhere (a file, a pipe, a scheduler's log)
    they are replaced by log lines."""
    return sys.stderr.isatty()


class _Tee(io.TextIOBase):
    """Writes through to ``stream`` and hands every complete line to the log file."""

    def __init__(self, stream):
        self.stream = stream
        self.pending = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.strip():
                to_log_file(line)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", "utf-8")

    def fileno(self) -> int:
        return self.stream.fileno()


@contextlib.contextmanager
def printed_lines_logged():
    """Within: what is printed to stdout (tables, summaries) also goes to the log file, and Python warnings
    go through logging (so to the terminal and the log file)."""
    if not file_handlers():
        yield
        return
    tee, previous = _Tee(sys.stdout), sys.stdout
    sys.stdout = tee
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        if tee.pending.strip():
            to_log_file(tee.pending)
        sys.stdout = previous
