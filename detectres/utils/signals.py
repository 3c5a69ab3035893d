"""The one signal policy: Ctrl-C is ``KeyboardInterrupt`` (exit 130), SIGTERM is :class:`Terminated`
(exit 143), each raised where the program is so every ``with`` unwinds and outputs are finalised."""
from __future__ import annotations


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, torchrun's teardown), raised so that every ``with`` unwinds."""


def on_sigterm(signum, frame) -> None:
    raise Terminated


def exit_status(interrupt: KeyboardInterrupt) -> int:
    return 143 if isinstance(interrupt, Terminated) else 130
