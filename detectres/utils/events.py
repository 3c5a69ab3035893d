"""Metrics logging: one JSON line per record in ``metrics.jsonl``, mirrored to TensorBoard."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading

from detectres.utils.file_io import reporting_full_disk


class MetricsWriter:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard.
    ``enabled=False`` (ranks other than 0) writes nothing."""

    def __init__(self, output_dir: str, tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, "metrics.jsonl")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(output_dir)

    def write(self, iteration: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        with reporting_full_disk(self.path), open(self.path, "a") as f:
            f.write(json.dumps({"iteration": iteration, **scalars}) + "\n")
        if self.tb is not None:
            with signals_deferred():
                for k, v in scalars.items():
                    self.tb.add_scalar(k, v, iteration)
                self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            with signals_deferred():
                self.tb.close()


@contextlib.contextmanager
def signals_deferred():
    """Ctrl-C and SIGTERM arriving inside the block take effect when it ends. TensorBoard's writer hands
    events to a thread through a queue; a KeyboardInterrupt raised between a queue's put and its count
    update kills that thread, and ``close()`` then waits for it forever (seen as a hung Ctrl-C). Python
    runs signal handlers in the main thread only, so this swaps them there for ones that take note."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: received.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(received):
            if callable(previous[s]):
                previous[s](s, None)
            elif previous[s] == signal.SIG_DFL:
                os.kill(os.getpid(), s)
