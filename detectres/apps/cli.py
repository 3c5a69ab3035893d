"""How every tool starts and fails.

``run_tool(config_name, app)`` composes the config (a bad override is one line), checks it against the
tool's schema (one line naming the key, the value and what is allowed), then runs ``app(cfg, overrides)``
under Hydra. A user error - a bad value, a missing or unreadable file, bad data under a ``fail``
policy, no GPU for ``runtime.device=cuda``, a full disk, a folder another run holds - prints one line,
``detectres: error: ...``, to stderr and exits with status 1. Anything else is a bug and keeps its
traceback; ``DETECTRES_DEBUG=1`` shows the traceback of user errors too.
"""
from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any, Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from detectres.apps.schemas import validate_tool_config
from detectres.config import CONFIG_DIR, compose_config, task_overrides
from detectres.config.overrides import run_length_overrides
from detectres.config.targets import targets_in, trust_composed
from detectres.weights.restore import choice_overrides
from detectres.utils.file_io import disk_full_cause
from detectres.utils.signals import SignalGate, on_sigterm, report_interrupt

DEBUG_ENV = "DETECTRES_DEBUG"
USER_ERRORS = (ValueError, OSError, FloatingPointError, ConfigCompositionException, OverrideParseException)


def one_line(error: BaseException) -> str:
    """The error as one line: a full disk named as such, Hydra's multi-line messages joined."""
    full = disk_full_cause(error)
    if full is not None and full is not error:
        return f"no space left on device while writing {full.filename or 'a file'} ({error})"
    if isinstance(error, OSError) and error.strerror and str(error).startswith("[Errno"):
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    text = re.sub(r"\n\t+", ", ", text.replace(":\n\t", ": "))
    lines = [ln.strip().rstrip(".:") for ln in text.splitlines()
             if ln.strip() and not ln.startswith((" ", "\t", "Config search path"))]
    if isinstance(error, HydraException) and error.__cause__ is not None and lines:  # Hydra's reason
        lines[0] += f": {str(error.__cause__).splitlines()[0]}"
    return "; ".join(lines) or type(error).__name__


def details(error: BaseException) -> list[str]:
    """The indented lines of a multi-line message (every problem a data check found), shown above the error."""
    if isinstance(error, HydraException):
        return []
    return [ln for ln in str(error).splitlines()[1:] if ln.startswith((" ", "\t")) and ln.strip()]


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def fail(error: BaseException) -> None:
    """Report a user error in one line (after its details, if it lists any) and exit 1; re-raise it with
    ``DETECTRES_DEBUG=1``."""
    if debugging():
        raise error
    for line in details(error):
        print(line, file=sys.stderr)
    print(f"detectres: error: {one_line(error)}", file=sys.stderr, flush=True)
    sys.exit(1)


def check_writable(folder) -> None:
    """A folder the tool will create must have a writable parent (else a PermissionError, not a traceback)."""
    parent = os.path.abspath(str(folder))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write runtime.output_dir={folder}: {parent} is not writable")


def remove_if_empty(folder: str | None) -> None:
    """Hydra makes the run's folder before the tool starts; a run refused at start leaves no empty one.
    Rank 0 only (the others may be racing it), and never the working directory."""
    if not folder or os.environ.get("RANK", "0") != "0" or os.path.abspath(folder) == os.getcwd():
        return
    try:
        if os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
    except OSError:
        pass  # another run is using it after all


def run_app(config_name: str, app: Callable[[DictConfig, list[str]], Any], cfg: DictConfig) -> int:
    """Check ``cfg``, run ``app``; a user error ends in :func:`fail`. Returns the exit status (130 after
    Ctrl-C, 143 after SIGTERM, once every ``with`` has unwound: locks released, outputs closed)."""
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        trust_composed(targets_in(cfg))  # the user's own classes, from their YAML or command line
        validate_tool_config(config_name, cfg)
        result = app(cfg, task_overrides())
    except KeyboardInterrupt as e:
        return report_interrupt(e)
    except USER_ERRORS as e:
        remove_if_empty(OmegaConf.select(HydraConfig.get(), "runtime.output_dir", throw_on_missing=False))
        fail(e)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def run_tool(config_name: str, app: Callable[[DictConfig, list[str]], Any], gate: SignalGate | None = None) -> None:
    """The command-line entry of a tool: ``python tools/X.py key=value ...``. Ctrl-C and SIGTERM are held
    (``gate``, already holding them since the imports, or a new one) until the app starts: composing the
    config must not be cut in half."""
    gate = gate or SignalGate().hold()
    try:
        start_tool(config_name, app, gate)
    finally:
        gate.release()


def start_tool(config_name: str, app: Callable[[DictConfig, list[str]], Any], gate: SignalGate) -> None:
    args = sys.argv[1:]
    checkpoint = next((a.split("=", 1)[1] for a in args if a.startswith("checkpoint=")), None)
    if checkpoint and not any(a.startswith("-") for a in args):  # compose the checkpoint's own config files
        args = sys.argv[1:] = [*choice_overrides(checkpoint, args), *args]
    if config_name == "train" and not any(a.startswith("-") for a in args):
        args = sys.argv[1:] = run_length_overrides(args)
    if not any(a.startswith("-") for a in args):  # --help, --cfg job, -m: Hydra's own flags
        try:
            cfg = compose_config(config_name, args)
            if config_name == "train":  # Hydra makes the run's folder before the tool starts
                check_writable(cfg.runtime.output_dir)
        except (HydraException, *USER_ERRORS) as e:
            fail(e)

    @hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")
    def task(cfg: DictConfig) -> None:
        gate.release()  # the config is composed: Ctrl-C and SIGTERM act at once again
        status = run_app(config_name, app, cfg)
        if status:
            sys.exit(status)

    task()
