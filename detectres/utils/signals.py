"""The one signal policy: Ctrl-C is ``KeyboardInterrupt`` (exit 130), SIGTERM is :class:`Terminated`
(exit 143), each raised where the program is so every ``with`` unwinds and outputs are finalised."""
from __future__ import annotations


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, torchrun's teardown), raised so that every ``with`` unwinds."""


def on_sigterm(signum, frame) -> None:
    raise Terminated


def exit_status(interrupt: KeyboardInterrupt) -> int:
    return 143 if isinstance(interrupt, Terminated) else 130


def report_interrupt(interrupt: KeyboardInterrupt) -> int:
    """The one line every tool prints when stopped by a signal; returns its exit status (130 / 143)."""
    import sys

    print(f"detectres: {'terminated' if isinstance(interrupt, Terminated) else 'interrupted'}", file=sys.stderr,
          flush=True)
    return exit_status(interrupt)


class SignalGate:
    """Holds Ctrl-C and SIGTERM while code that must not be cut in half runs (Hydra's config composition:
    interrupted, it can leave OmegaConf's state broken and fail with an unrelated error); :meth:`release`
    restores the handlers and raises the interrupt that arrived meanwhile, if any."""

    def __init__(self):
        self.pending: int | None = None
        self.previous: dict[int, object] = {}

    def _record(self, signum, frame) -> None:
        if self.pending is None:
            self.pending = signum

    def hold(self) -> "SignalGate":
        import signal

        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._record)
        return self

    def release(self) -> None:
        import signal

        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()
        pending, self.pending = self.pending, None
        if pending == signal.SIGTERM:
            raise Terminated
        if pending == signal.SIGINT:
            raise KeyboardInterrupt
