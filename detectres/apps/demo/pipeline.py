"""The demo pipeline in three stages: a :class:`Reader` thread decodes and resizes ahead, the model
stage runs in the calling thread, a :class:`Writer` thread draws and hands frames to the sinks. What is
done to a frame (the classes kept, the drawing) is :mod:`detectres.apps.demo.overlay`; this module is the
threads, the queues and how they stop.

Bounded queues keep memory flat on long videos; a single model stage keeps frames in order. Every
way the pipeline ends (the source runs out, ``max_frames``, a window's quit key, Ctrl-C, SIGTERM, a
stage that fails) goes through :meth:`Pipeline.shutdown`: stop reading, let the writer finish what it
has, close every sink, so a video being written stays playable.
"""
from __future__ import annotations

import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from detectres.apps.demo.sources import Frame
from detectres.utils.signals import on_sigterm

END = object()  # the last item a stage passes on


@dataclass
class PipelineStats:
    read: int = 0
    processed: int = 0
    skipped: int = 0
    skipped_names: list[str] = field(default_factory=list)
    model_seconds: float = 0.0
    wall_seconds: float = 0.0
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.processed / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def model_fps(self) -> float:
        return self.processed / self.model_seconds if self.model_seconds > 0 else 0.0


class Handoff:
    """A bounded queue between two stages whose ``put`` gives up once the pipeline is stopping."""

    def __init__(self, size: int, stop: threading.Event):
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.stop = stop

    def put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self):
        return self.queue.get()

    def put_end_while(self, alive: Callable[[], bool]) -> None:
        """Hand over END, even while stopping, as long as the consumer is ``alive`` to take it."""
        while alive():
            try:
                self.queue.put(END, timeout=0.1)
                return
            except queue.Full:
                continue

    def drain_while(self, alive: Callable[[], bool]) -> None:
        """Discard items so a producer blocked on a full queue can finish."""
        while alive():
            try:
                self.queue.get(timeout=0.1)
            except queue.Empty:
                pass


class Reader(threading.Thread):
    """Reads frames from ``source`` and runs ``prepare`` on them (e.g. the resize), ahead of the model."""

    def __init__(self, source: Iterable[Frame], prepare: Callable[[np.ndarray], Any], out: Handoff,
                 stats: PipelineStats, errors: list, max_frames: int = 0):
        super().__init__(daemon=True, name="reader")
        self.source, self.prepare, self.out = source, prepare, out
        self.stats, self.errors, self.max_frames = stats, errors, max_frames

    def run(self) -> None:
        try:
            for frame in self.source:
                if self.out.stop.is_set() or (self.max_frames and self.stats.read >= self.max_frames):
                    break
                self.stats.read += 1
                prepared = self.prepare(frame.image) if frame.image is not None else None
                if not self.out.put((frame, prepared)):
                    break
        except BaseException as e:  # surfaced in the main thread
            self.errors.append(e)
        finally:
            self.out.queue.put(END)


class Writer(threading.Thread):
    """Draws each prediction on its frame with ``overlay`` and hands the frames, in order, to the sinks."""

    def __init__(self, inbox: Handoff, sinks: list, overlay: Callable[[np.ndarray, dict, float], np.ndarray],
                 errors: list):
        super().__init__(daemon=True, name="writer")
        self.inbox, self.sinks, self.overlay, self.errors = inbox, sinks, overlay, errors

    def run(self) -> None:
        try:
            while (item := self.inbox.get()) is not END:
                frame, prediction, fps = item
                image = self.overlay(frame.image, prediction, fps)
                for sink in self.sinks:
                    sink.write(frame, image)
        except BaseException as e:
            self.errors.append(e)
            self.inbox.stop.set()


class _Interrupt:
    """Turns SIGTERM into :class:`Terminated` while the pipeline runs (main thread only)."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, on_sigterm)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


class Pipeline:
    """Reader -> model -> writer over ``source`` into ``sinks``; :meth:`run` returns the stats.

    ``prepare`` (e.g. the resize) runs in the reader thread, so only ``model`` is on the critical path.
    ``should_stop`` is asked after every frame (a window's quit key).
    """

    def __init__(self, source: Iterable[Frame], model: Callable[[Any], dict], sinks: list, *,
                 overlay: Callable[[np.ndarray, dict, float], np.ndarray],
                 prepare: Callable[[np.ndarray], Any] = lambda image: image, max_frames: int = 0,
                 queue_size: int = 8, should_stop: Callable[[], bool] = lambda: False):
        self.stats, self.errors, self.stop = PipelineStats(), [], threading.Event()
        self.interrupt: KeyboardInterrupt | None = None
        self.model, self.sinks, self.should_stop = model, sinks, should_stop
        self.read_q, self.write_q = Handoff(queue_size, self.stop), Handoff(queue_size, self.stop)
        self.reader = Reader(source, prepare, self.read_q, self.stats, self.errors, max_frames)
        self.writer = Writer(self.write_q, sinks, overlay, self.errors)

    def run(self) -> PipelineStats:
        """Run to the end of the source; after Ctrl-C or SIGTERM the outputs are finalised and the
        interrupt is kept in ``self.interrupt`` for the caller to re-raise once it has reported."""
        self.reader.start()
        self.writer.start()
        t0 = time.perf_counter()
        try:
            with _Interrupt():
                self.run_model(t0)
        except KeyboardInterrupt as e:
            self.stats.interrupted = True
            self.interrupt = e
        finally:
            self.shutdown()
            self.stats.wall_seconds = time.perf_counter() - t0
        if self.errors:
            raise self.errors[0]
        return self.stats

    def run_model(self, t0: float) -> None:
        """The model stage: prepared frames in, predictions out to the writer, in order."""
        while not self.stop.is_set():
            item = self.read_q.get()
            if item is END:
                return
            frame, prepared = item
            if frame.image is None:
                self.stats.skipped += 1
                self.stats.skipped_names.append(frame.name)
                continue
            m0 = time.perf_counter()
            prediction = self.model(prepared)
            now = time.perf_counter()
            self.stats.model_seconds += now - m0
            self.stats.processed += 1
            if not self.write_q.put((frame, prediction, self.stats.processed / (now - t0))) or self.should_stop():
                return

    def shutdown(self) -> None:
        """Stop reading, let the writer finish the frames it has, close every sink."""
        self.stop.set()
        self.write_q.put_end_while(self.writer.is_alive)
        self.writer.join()
        self.read_q.drain_while(self.reader.is_alive)  # unblock a reader waiting on a full queue
        for sink in self.sinks:
            sink.close()
