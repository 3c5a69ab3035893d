"""Metrics logging: one JSON line per record in ``metrics.jsonl``, mirrored to TensorBoard and to the
experiment trackers a run asks for (:mod:`detectres.utils.tracking`)."""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import threading

from detectres.utils.file_io import DiskFullError, disk_full_cause, reporting_full_disk
from detectres.utils.tracking import first_line

logger = logging.getLogger(__name__)

_default_excepthook = threading.excepthook


def _quiet_tensorboard_thread(args) -> None:
    """TensorBoard's writer thread dies on a failed write (a full disk) and prints a traceback; the same
    error reaches the main thread at the next flush or close, where it is reported in one line."""
    if args.exc_traceback is not None:
        frame = args.exc_traceback
        while frame.tb_next is not None:
            frame = frame.tb_next
        if issubclass(args.exc_type, OSError) and "tensorboard" in frame.tb_frame.f_code.co_filename:
            return
    _default_excepthook(args)


def tensorboard_writer(output_dir: str):
    """A ``SummaryWriter`` for ``output_dir`` whose failed writes are reported once, by :func:`tensorboard_writes`."""
    from torch.utils.tensorboard import SummaryWriter

    threading.excepthook = _quiet_tensorboard_thread
    return SummaryWriter(output_dir)


@contextlib.contextmanager
def tensorboard_writes(output_dir: str):
    """Around TensorBoard calls (adding, flushing, closing): a full disk is one error naming the events file."""
    try:
        yield
    except DiskFullError:
        raise
    except BaseException as e:
        if disk_full_cause(e) is None:
            raise
        events = sorted(glob.glob(os.path.join(output_dir, "events.out.tfevents.*")), key=os.path.getmtime)
        with reporting_full_disk(events[-1] if events else os.path.join(output_dir, "events.out.tfevents")):
            raise


class MetricsWriter:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard and to
    ``trackers`` (MLflow, W&B), which also receive artifacts and the run's end. ``enabled=False`` (ranks
    other than 0) writes nothing."""

    def __init__(self, output_dir: str, tensorboard: bool = True, enabled: bool = True, trackers: list | None = None):
        self.enabled = enabled
        self.tensorboard = tensorboard and enabled
        self.trackers = list(trackers or []) if enabled else []
        self._tb = None
        if not enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.output_dir = output_dir

    @property
    def tb(self):
        """The TensorBoard writer, made on first use (importing TensorBoard takes half a second a run
        need not wait for before its first step); None when disabled."""
        if self._tb is None and self.tensorboard:
            self._tb = tensorboard_writer(self.output_dir)
        return self._tb

    def write(self, iteration: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        with reporting_full_disk(self.path), open(self.path, "a") as f:
            f.write(json.dumps({"iteration": iteration, **scalars}) + "\n")
        if self.tb is not None:
            with tensorboard_writes(self.output_dir):
                for k, v in scalars.items():
                    self.tb.add_scalar(k, v, iteration)
                self.tb.flush()
        self.each_tracker("reporting metrics", lambda t: t.log_metrics(iteration, scalars))

    def log_artifacts(self, paths: list[str]) -> None:
        """Files the trackers keep (plots, ``eval.json``); those that exist."""
        present = [p for p in paths if os.path.isfile(p)]
        self.each_tracker("uploading files", lambda t: t.log_artifacts(present))

    def finish(self, *, final_checkpoint: str | None, failed: bool) -> None:
        """Tell the trackers the run ended (``failed``: by an error or an interruption)."""
        self.each_tracker("ending its run", lambda t: t.finish(final_checkpoint=final_checkpoint, failed=failed))
        self.trackers = []

    def each_tracker(self, what: str, call) -> None:
        """``call(tracker)`` for each tracker; a tracker that fails (a lost connection, a full store) is
        reported in one warning and left out from then on: training never stops for it."""
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as e:  # noqa: BLE001 - any tracker's error, whatever its library raises
                logger.warning("%s failed %s (%s); the run goes on without it", type(tracker).__name__, what,
                               first_line(e))
                self.trackers.remove(tracker)

    def close(self) -> None:
        if self._tb is not None:
            with tensorboard_writes(self.output_dir):
                self._tb.close()
